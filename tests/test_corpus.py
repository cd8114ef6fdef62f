import functools
import http.server
import json
import shutil
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poemctl.config import DataConfig
from poemctl.corpus import corpus_files, download, manifest, parse_poems, read_poems
from poemctl.data import Preprocessor
from poemctl.errors import PoemctlError
from tests.conftest import CORPUS


def test_manifest_lists_upstreams_files_and_poems():
    m = manifest()
    names = [e["name"] for e in m["files"]]
    assert len(names) == 58 and names[0] == "poet.tang.0.json" and names[-1] == "poet.tang.57000.json"
    assert sum(e["poems"] for e in m["files"]) == m["total_poems"] == 57607


def test_files_come_in_upstream_order(tmp_path):
    folder = tmp_path / "全唐诗"
    folder.mkdir()
    for n in (10000, 0, 2000, 1000):  # by number, not by name: 10000 sorts before 2000 as text
        (folder / f"poet.tang.{n}.json").write_text("[]")
    (folder / "poet.song.0.json").write_text("[]")
    names = [f.name for f in corpus_files(tmp_path)]
    assert names == ["poet.tang.0.json", "poet.tang.1000.json", "poet.tang.2000.json", "poet.tang.10000.json"]


def test_read_poems_joins_paragraphs_and_limits():
    poems = read_poems(corpus_files(CORPUS), max_poems=3)
    assert len(poems) == 3
    assert poems[0].startswith("秦川雄帝宅，函谷壯皇居。綺殿")


def test_missing_corpus_says_how_to_get_it(tmp_path):
    with pytest.raises(PoemctlError, match="poemctl data download"):
        corpus_files(tmp_path)


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1}', b'[{"title": "x"}]', b"\xff\xfe"])
def test_corrupt_file_is_named(raw):
    with pytest.raises(PoemctlError, match="poet.tang.7.json"):
        parse_poems(raw, "poet.tang.7.json")


def _small_source(tmp_path, n=3):
    """A folder laid out like upstream, holding the first n manifest files (copied from the test corpus)."""
    src = tmp_path / "src" / "全唐诗"
    src.mkdir(parents=True)
    for entry in manifest()["files"][:n]:
        shutil.copyfile(CORPUS / "全唐诗" / entry["name"], src / entry["name"])
    return src.parent


@pytest.fixture
def few_files(monkeypatch):
    """Pretend the manifest holds only its first 3 files, so downloads stay small."""
    m = manifest()
    m["files"] = m["files"][:3]
    monkeypatch.setattr("poemctl.corpus.manifest", lambda: m)


def test_download_from_folder(tmp_path, few_files):
    paths = download(str(_small_source(tmp_path)), tmp_path / "dest")
    assert [p.name for p in paths] == ["poet.tang.0.json", "poet.tang.1000.json", "poet.tang.2000.json"]
    assert len(read_poems(corpus_files(tmp_path / "dest"))) == 500


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over a folder laid out like upstream."""
    root = _small_source(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_from_url(tmp_path, few_files, server):
    _, url = server
    paths = download(url, tmp_path / "dest")
    assert len(paths) == 3
    assert json.loads(paths[0].read_text())[0]["author"] == "太宗皇帝"


def test_corrupt_download_leaves_no_half_file(tmp_path, few_files, server):
    root, url = server
    (root / "全唐诗" / "poet.tang.1000.json").write_bytes(b'[{"paragraphs": ["cut off')
    with pytest.raises(PoemctlError, match="poet.tang.1000.json"):
        download(url, tmp_path / "dest")
    left = sorted(p.name for p in (tmp_path / "dest" / "全唐诗").iterdir())
    assert left == ["poet.tang.0.json"]  # the good file before it, nothing of the bad one, no temp file


def test_missing_remote_file_is_named(tmp_path, few_files, server):
    root, url = server
    (root / "全唐诗" / "poet.tang.2000.json").unlink()
    with pytest.raises(PoemctlError, match="poet.tang.2000.json"):
        download(url, tmp_path / "dest")


class _Drip(http.server.BaseHTTPRequestHandler):
    """A server that promises a big file and sends one byte every 0.2 s: no single read ever times out."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        for _ in range(200):
            try:
                self.wfile.write(b"[")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def log_message(self, *args):
        pass


def test_a_trickling_server_is_cut_off_at_the_deadline(tmp_path, few_files):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(PoemctlError, match=r"cannot download poet.tang.0.json from .* in time .*--timeout"):
            download(f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path / "dest", timeout=1.5)
    finally:
        httpd.shutdown()
    assert time.monotonic() - start < 5


def test_an_unreadable_corpus_file_is_named(tmp_path):
    folder = tmp_path / "全唐诗"
    (folder / "poet.tang.0.json").mkdir(parents=True)  # a folder where a file should be
    with pytest.raises(PoemctlError, match=r"cannot read corpus file .*poet.tang.0.json"):
        read_poems(corpus_files(tmp_path))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["paragraphs", "title", "x"]), inner),
    max_leaves=15,
)


@pytest.fixture(scope="module")
def preprocessors():
    return [
        Preprocessor(DataConfig()),
        Preprocessor(DataConfig(control_tokens=True, keep_commas=True, rhyme_marks=True)),
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40), st.just(b"[" * 100000)))
def test_any_corpus_file_parses_or_is_one_line_naming_it(preprocessors, raw):
    try:
        poems = parse_poems(raw, "poet.tang.7.json")
    except PoemctlError as e:
        assert "poet.tang.7.json" in str(e) and "\n" not in str(e)
    else:
        assert all(isinstance(p, str) for p in poems)
        for pre in preprocessors:  # and what parses, preprocesses
            for p in poems:
                assert isinstance(pre(p), str)
