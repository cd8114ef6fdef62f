"""Take docs/web.png: `poemctl serve` with the bundled model, a poem written in headless Chromium (a CJK
font must be installed, e.g. Debian's fonts-wqy-zenhei).

python scripts/web_screenshot.py [docs/web.png]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/web.png").resolve()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as empty:  # no runs there: the bundled model
        server = subprocess.Popen(["poemctl", "serve", "--port", str(port)], cwd=empty)
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1100, "height": 720})
                page.goto(url)
                page.locator("#first textarea, #first input").first.fill("月")
                page.locator("#seed textarea, #seed input").first.fill("3")
                page.locator("#write").click()
                page.wait_for_selector("#poems .poem", timeout=60_000)
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(out))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(out)


if __name__ == "__main__":
    main()
