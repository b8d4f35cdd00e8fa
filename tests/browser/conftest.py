"""Headless Chromium for the browser checks (run by ``make test-browser``).

Chromium comes from the system's packages (``apt-get install chromium``), never from a
driver's own download; Playwright drives it through ``executable_path``. Set
``COURSE_CHROMIUM`` to use another binary. Screenshots and logs go to
``build/browser/`` (``COURSE_BROWSER_ARTIFACTS`` to move them).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Chromium as the machine's own probe starts it: no sandbox (root in a container), no GPU,
# and none of the background connections that a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def chromium_path() -> str:
    chosen = os.environ.get("COURSE_CHROMIUM")
    if chosen:
        if not Path(chosen).is_file():
            pytest.fail(f"COURSE_CHROMIUM={chosen} is not a file")
        return chosen
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium on PATH: 'make test-browser' installs Debian's chromium "
                "(apt-get install chromium), or set COURSE_CHROMIUM=/path/to/chromium")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("COURSE_BROWSER_ARTIFACTS", ROOT / "build" / "browser"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]' (make test-browser does)")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the tests report what matters
        pass


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory) -> Path:
    """The built site: ``COURSE_SITE_DIR`` (what ``make site`` wrote) or a fresh build."""
    chosen = os.environ.get("COURSE_SITE_DIR")
    if chosen:
        path = Path(chosen)
        if not path.is_absolute():
            path = ROOT / path
        if not (path / "index.html").is_file():
            pytest.fail(f"COURSE_SITE_DIR={chosen} holds no index.html; run 'make site' first")
        return path
    from course_lib.tooling.site import build_site

    return build_site(ROOT, output=tmp_path_factory.mktemp("site") / "site").path


@pytest.fixture(scope="session")
def site_url(site_dir):
    """The site served over HTTP on a free localhost port, as a reader's browser would load it."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
