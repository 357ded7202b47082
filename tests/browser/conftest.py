"""Real-browser fixtures: gunicorn serving the test database, and Debian's Chromium via Playwright.

The server runs as its own process on the database of the `migrated` fixture, so a page shows what
a test committed through the `make` factory. On SQLite, commit test data before the browser acts
and do not touch the ORM again until it is done: the test's open transaction would hold the write
lock the server needs to log someone in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
PHONE = {"width": 360, "height": 640}
DESKTOP = {"width": 1280, "height": 800}
SERVER_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"gunicorn did not serve {url}/login within {SERVER_TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def live_server(migrated, tmp_path_factory):
    """Serve the app with gunicorn (as the README does) on the test database; yield its URL."""
    instance = tmp_path_factory.mktemp("live-instance")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DATABASE_URL" and not k.startswith("POINTSMART_")
    }
    env.update(
        DATABASE_URL=migrated,
        POINTSMART_SECRET_KEY="browser-test-secret",
        POINTSMART_INSTANCE_PATH=str(instance),
        # Every browser logs in from 127.0.0.1; the limit itself is tested in test_auth.
        POINTSMART_LOGIN_RATE_LIMIT="1000 per minute",
    )
    log = instance / "gunicorn.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "pointsmart.wsgi:app",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium, headless; the browser tests are skipped only where it is missing."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must run the browser tests")
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}); apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(chromium, live_server):
    """Open a page in a fresh browser (own cookies): open_page(phone=True) for a phone."""
    contexts = []

    def open_(phone: bool = False):
        context = chromium.new_context(
            base_url=live_server,
            viewport=PHONE if phone else DESKTOP,
            device_scale_factor=2 if phone else 1,
            is_mobile=phone,
            has_touch=phone,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot():
    """screenshot(page, name): save a README screenshot, only when POINTSMART_SCREENSHOTS=1."""

    def take(page, name: str) -> None:
        # Normal runs leave docs/screenshots/ alone, so the tree stays clean.
        if os.environ.get("POINTSMART_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / name))  # what the screen shows

    return take
