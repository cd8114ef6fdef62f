"""The raw corpus: finding, reading and downloading the 全唐诗 JSON files of chinese-poetry."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path

from poemctl.errors import PoemctlError
from poemctl.files import atomic_write_bytes

UPSTREAM = "https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/master"
FOLDER = "全唐诗"
PATTERN = re.compile(r"poet\.tang\.(\d+)\.json$")


def manifest() -> dict:
    """The expected files and their poem counts, shipped with poemctl."""
    return json.loads(resources.files("poemctl").joinpath("manifest.json").read_text(encoding="utf-8"))


def corpus_files(root: str | Path) -> list[Path]:
    """The poet.tang.N.json files under root (or root/全唐诗), in upstream order (by N)."""
    root = Path(root)
    folder = root / FOLDER if (root / FOLDER).is_dir() else root
    files = [p for p in folder.glob("poet.tang.*.json") if PATTERN.search(p.name)]
    if not files:
        raise PoemctlError(
            f"no corpus at {root} (expected {FOLDER}/poet.tang.*.json); run `poemctl data download` first"
        )
    return sorted(files, key=lambda p: int(PATTERN.search(p.name).group(1)))


def parse_poems(raw: bytes, name: str) -> list[str]:
    """The poems of one file, each its paragraphs joined; a file that is not the expected JSON is an error."""
    try:
        poems = json.loads(raw.decode("utf-8"))
        if not isinstance(poems, list):
            raise ValueError("not a list")
        return ["".join(p["paragraphs"]) for p in poems]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise PoemctlError(f"corrupt corpus file {name}: {str(e) or type(e).__name__}") from None


def read_poems(files: list[Path], max_poems: int = 0) -> list[str]:
    """All poems of files in order, or only the first max_poems (0: all)."""
    poems: list[str] = []
    for f in files:
        poems.extend(parse_poems(_read(f), f.name))
        if max_poems and len(poems) >= max_poems:
            return poems[:max_poems]
    return poems


def corpus_hash(files: list[Path]) -> str:
    """A hash of the files' names and contents: the corpus part of the cache key."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(_read(f))
    return h.hexdigest()[:16]


def _read(f: Path) -> bytes:
    try:
        return f.read_bytes()
    except OSError as e:
        raise PoemctlError(f"cannot read corpus file {f}: {e.strerror or e}") from None


def _fetch(source: str, name: str, deadline: float) -> bytes:
    """The bytes of one corpus file from a local folder or a base URL, by time.monotonic() deadline."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", source):
        url = f"{source.rstrip('/')}/{urllib.parse.quote(FOLDER)}/{name}"
        chunks = []
        try:
            # A socket timeout bounds one read only: a server that sends a byte every few seconds would never
            # time out. Reads of whatever has arrived (read1), the deadline checked between them.
            with urllib.request.urlopen(url, timeout=max(0.1, min(60.0, deadline - time.monotonic()))) as r:
                while chunk := r.read1(1 << 16):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise TimeoutError("the download's deadline passed")
        except TimeoutError as e:
            raise PoemctlError(f"cannot download {name} from {url} in time ({e}); give --timeout more") from None
        except OSError as e:
            raise PoemctlError(f"cannot download {name} from {url}: {e}") from None
        return b"".join(chunks)
    folder = Path(source) / FOLDER if (Path(source) / FOLDER).is_dir() else Path(source)
    try:
        return (folder / name).read_bytes()
    except OSError as e:
        raise PoemctlError(f"cannot read {name} from {folder}: {e.strerror or e}") from None


def download(source: str, dest: str | Path, progress=None, timeout: float = 1800.0) -> list[Path]:
    """Fetch every manifest file from source into dest/全唐诗, checking each parses, within timeout seconds
    for the whole download; returns the paths."""
    m = manifest()
    out = Path(dest) / FOLDER
    paths = []
    deadline = time.monotonic() + timeout
    for entry in m["files"]:
        raw = _fetch(source, entry["name"], deadline)
        parse_poems(raw, entry["name"])  # never store a file that is not the expected JSON
        path = out / entry["name"]
        atomic_write_bytes(path, raw)
        paths.append(path)
        if progress is not None:
            progress()
    return paths
