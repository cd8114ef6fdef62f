"""`poemctl serve` in a real browser: Debian's Chromium, headless, driven by Playwright."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from poemctl.prosody import Prosody
from poemctl.web import annotate
from tests.test_train import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_annotate_marks_tones_and_rhyme_groups():
    out = annotate(["床前明月光", "疑是地上霜"], Prosody())
    assert "床前明月光，" in out and "疑是地上霜。" in out
    assert "○○○●○" in out and "下平聲七陽"[3:] in out


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cwd = tmp_path_factory.mktemp("serve")  # no runs here: the bundled model
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "poemctl"), "serve", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"poemctl serve exited: {proc.stdout.read()}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("poemctl serve did not answer within 2 minutes")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("no chromium: apt-get install chromium (scripts/setup.sh --test does it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _write(browser, url, first, seed="7"):
    page = browser.new_page()
    page.goto(url)
    page.locator("#first textarea, #first input").first.fill(first)
    page.locator("#seed textarea, #seed input").first.fill(seed)
    page.locator("#write").click()
    page.wait_for_selector("#poems .poem, #poems .error", timeout=60_000)
    return page


@pytest.mark.slow
def test_the_page_writes_a_poem_of_the_right_form(browser, page_url):
    page = _write(browser, page_url, "山")
    lines = page.locator("#poems .poem .line .text").all_inner_texts()
    assert len(lines) == 4 and all(re.fullmatch(r"\w{7}[，。]", line) for line in lines), lines
    assert lines[0][0] == "山"
    assert len(page.locator("#poems .tones").all_inner_texts()[0]) == 7
    assert "Traceback" not in page.content()


@pytest.mark.slow
def test_users_at_once_each_get_their_own_seeds_poems(browser, page_url, tmp_path):
    import poemctl

    pages = []
    for seed in ("11", "12", "13"):  # three users click before any answer comes back
        page = browser.new_page()
        page.goto(page_url)
        page.locator("#first textarea, #first input").first.fill("春")
        page.locator("#seed textarea, #seed input").first.fill(seed)
        pages.append(page)
    for page in pages:
        page.locator("#write").click()
    poet = poemctl.load(runs=tmp_path / "none")  # the page's model: the bundled one
    for page, seed in zip(pages, (11, 12, 13), strict=True):
        page.wait_for_selector("#poems .poem", timeout=60_000)
        lines = page.locator("#poems .poem .line .text").all_inner_texts()
        assert "\n".join(lines) == poet.write("春", seed=seed)[0]


@pytest.mark.slow
def test_bad_input_is_a_message_on_the_page(browser, page_url):
    page = _write(browser, page_url, "龘")
    assert "the start character '龘' is not in this checkpoint's vocabulary" in page.locator("#poems").inner_text()
    assert "Traceback" not in page.content()
