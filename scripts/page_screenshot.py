"""Screenshot of the live graph page for the README (docs/page.png).

    .venv/bin/python scripts/page_screenshot.py [docs/page.png]

Serves examples/quickstart.py on a free port, sends a short load, sends one "Try it"
request from the page, and saves the page as the browser (the system's Chromium, through
Playwright) shows it; with Pillow installed (the extras bring it), in 128 colours (~50 KB).
"""

from __future__ import annotations

import shutil
import sys
import threading

import httpx
from playwright.sync_api import sync_playwright

from graphserve.serving import serve

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TEXTS = ["hello graphs", "1 2 3", "a longer sentence of words", "42", "serve it"]


def load(url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url) as client:
        i = 0
        while not stop.is_set():
            client.post("/", json={"text": TEXTS[i % len(TEXTS)]})
            i += 1


def main(path: str = "docs/page.png") -> None:
    server = serve("examples.quickstart:app", port=0, blocking=False)
    stop = threading.Event()
    loaders = [threading.Thread(target=load, args=(server.url, stop), daemon=True) for _ in range(2)]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(server.page_url)
            page.wait_for_selector("svg#graph-svg")
            for loader in loaders:
                loader.start()
            page.wait_for_function("Number(document.getElementById('node:Scorer.__call__').dataset.calls) > 300")
            page.fill('[data-field="text"]', "hello graphs")
            page.click("#send")
            page.wait_for_selector("#waterfall .wf-row")
            page.wait_for_timeout(1200)  # one more tick of the live figures under load
            page.screenshot(path=path)
            browser.close()
    finally:
        stop.set()
        for loader in loaders:
            if loader.is_alive():
                loader.join(5)
        server.shutdown()
    shrink(path)
    print(f"saved {path}")


def shrink(path: str) -> None:
    try:
        from PIL import Image
    except ImportError:  # keep the full-colour screenshot
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
