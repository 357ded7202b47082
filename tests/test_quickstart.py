"""The README's quick start on a clean instance: `pointsmart demo`, then log in as every role.

This runs the installed console script (the one `pip install .` puts next to the interpreter),
on the embedded SQLite default, over real HTTP.
"""

from __future__ import annotations

import http.cookiejar
import os
import queue
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 180  # loading the demo town takes ~15 s; a slow CI machine gets room
ROLE_HOMES = {
    "villager": "/me/",
    "cadre": "/cadre/",
    "committee": "/committee/",
    "clerk": "/clerk/shops/1/counter",  # each demo clerk serves one shop: straight to its counter
    "admin": "/admin/",
}
CSRF_INPUT = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')


@dataclass
class Account:
    role: str
    login: str
    password: str
    who: str


@dataclass
class Demo:
    url: str
    instance: Path
    accounts: list[Account]
    output: list[str]
    env: dict


def pointsmart_command() -> str:
    script = Path(sys.executable).parent / "pointsmart"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package first (pip install .)")
    return str(script)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(instance: Path) -> dict:
    """The environment of a new user: no database URL, no PointSmart settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DATABASE_URL" and not k.startswith("POINTSMART_")
    }
    env["POINTSMART_INSTANCE_PATH"] = str(instance)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_accounts(lines: list[str]) -> list[Account]:
    """Read the indented account lines printed after 'Demo town loaded'."""
    accounts = []
    started = False
    for line in lines:
        if line.startswith("Demo town loaded"):
            started = True
        elif started and line.startswith("  "):
            role, login, password, who = line.split(maxsplit=3)
            accounts.append(Account(role, login, password, who))
        elif started:
            break
    return accounts


def wait_for_port(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pointsmart demo exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run `pointsmart demo` on a fresh instance until it serves; stop it afterwards."""
    instance = tmp_path_factory.mktemp("quickstart-instance")
    port = free_port()
    env = clean_env(instance)
    process = subprocess.Popen(
        [pointsmart_command(), "demo", "--port", str(port)],
        cwd=instance,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        # Keep reading for the server's whole life, so its request log never fills the pipe.
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("pointsmart demo printed no URL in time:\n" + "\n".join(output))
            if line is None:
                pytest.fail("pointsmart demo stopped before serving:\n" + "\n".join(output))
            match = re.search(r"running on (http://127\.0\.0\.1:\d+/)", line)
            if match:
                url = match.group(1)
        assert url == f"http://127.0.0.1:{port}/"
        wait_for_port(port, process, deadline)
        yield Demo(url, instance, parse_accounts(output), output, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        process.stdout.close()


class Browser:
    """A cookie-keeping HTTP client, like one browser tab."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str):
        return self._open(urllib.request.Request(urllib.parse.urljoin(self.base, path)))

    def post(self, path: str, data: dict):
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(urllib.parse.urljoin(self.base, path), body))

    def _open(self, request):
        try:
            with self.opener.open(request, timeout=30) as response:
                return (
                    response.status,
                    urllib.parse.urlsplit(response.url).path,
                    response.read().decode(),
                )
        except urllib.error.HTTPError as error:
            with error:
                return error.code, urllib.parse.urlsplit(error.url).path, error.read().decode()

    def log_in(self, account: Account):
        """Fill in the login form of the account's kind, CSRF token included, and submit it."""
        if account.role == "villager":
            path, fields = "/login", {"phone": account.login, "pin": account.password}
        else:
            path, fields = "/login/staff", {"username": account.login, "password": account.password}
        status, _, page = self.get(path)
        assert status == 200
        token = CSRF_INPUT.search(page)
        assert token, f"no CSRF token in the form of {path}"
        return self.post(path, {"csrf_token": token.group(1), **fields})


def test_demo_prints_one_account_per_role(demo):
    roles = {account.role for account in demo.accounts}
    assert roles == set(ROLE_HOMES), demo.output
    saved = (demo.instance / "demo-accounts.txt").read_text()
    for account in demo.accounts:
        assert account.password in saved


def test_login_page_is_chinese(demo):
    status, path, page = Browser(demo.url).get("/login")
    assert (status, path) == (200, "/login")
    assert '<html lang="zh-CN">' in page
    assert "登录" in page  # "log in"
    assert 'name="phone"' in page and 'name="pin"' in page


def test_root_sends_a_new_visitor_to_login(demo):
    status, path, _ = Browser(demo.url).get("/")
    assert (status, path) == (200, "/login")


@pytest.mark.parametrize("role", list(ROLE_HOMES))
def test_each_demo_role_logs_in_to_its_own_home(demo, role):
    account = next(a for a in demo.accounts if a.role == role)
    browser = Browser(demo.url)
    status, path, page = browser.log_in(account)
    assert (status, path) == (200, ROLE_HOMES[role]), page[:2000]
    # The home page shows the demo town's data, not an empty shell.
    expected = {
        "villager": 'id="spendable"',
        "cadre": "一组",  # the groups of 青山村
        "committee": "青山村",
        "clerk": "爱心超市",
        "admin": "青山镇",
    }[role]
    assert expected in page
    # The session holds: the landing page sends this person home again.
    assert browser.get("/")[:2] == (200, ROLE_HOMES[role])


def test_wrong_password_is_refused(demo):
    account = next(a for a in demo.accounts if a.role == "admin")
    browser = Browser(demo.url)
    wrong = Account("admin", account.login, "wrong-" + account.password, "")
    status, path, _ = browser.log_in(wrong)
    assert (status, path) == (200, "/login/staff")
    assert browser.get("/admin/")[1] == "/login"


def test_second_demo_run_keeps_the_data(demo):
    database = demo.instance / "pointsmart.sqlite"
    with closing(sqlite3.connect(database)) as conn:
        before = conn.execute("SELECT count(*) FROM households").fetchone()[0]
    assert before > 100

    result = subprocess.run(
        [pointsmart_command(), "demo", "--no-serve"],
        cwd=demo.instance,
        env=demo.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already holds data" in result.stdout
    assert str(demo.instance / "demo-accounts.txt") in result.stdout
    assert not any(a.password in result.stdout for a in demo.accounts)
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("SELECT count(*) FROM households").fetchone()[0] == before
        assert conn.execute("SELECT count(*) FROM towns").fetchone()[0] == 1
