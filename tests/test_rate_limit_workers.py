"""Login limits and logout across gunicorn workers, as production runs them.

gunicorn serves the test database with two workers and the login limits kept in Redis (as the
README's Configuration says for several workers). Failed logins over fresh connections reach both
workers, and the limit holds for their total, not per worker: a control run with memory:// storage
shows that the same requests would get past it. Logging out on one worker ends the session on the
other too, since sessions live in the database.

Redis must be reachable at POINTSMART_TEST_REDIS_URL (default redis://127.0.0.1:6379/13); each run
keys its counters under a prefix of its own and deletes them afterwards, so runs side by side
(and other users of that Redis database) do not disturb each other.
"""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from flask_babel import gettext

from pointsmart.extensions import db
from tests.conftest import PIN

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("POINTSMART_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
LIMIT = 6
PHONE = "13912345678"
CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
SERVER_TIMEOUT = 60


@pytest.fixture
def redis_prefix():
    """A key prefix of this run in the test Redis database; its keys are deleted afterwards."""
    import redis  # in the [test] extra: a missing package fails, only a missing server skips

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}); start redis-server")
    prefix = f"pointsmart-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(client.scan_iter(f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn -w 2 on the test database; its access log names the worker of each request."""

    def __init__(self, database_url: str, instance: Path, **settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = instance / "access.log"
        self.log = instance / "gunicorn.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "DATABASE_URL" and not k.startswith("POINTSMART_")
        }
        env.update(
            DATABASE_URL=database_url,
            POINTSMART_SECRET_KEY="workers-test-secret",
            POINTSMART_INSTANCE_PATH=str(instance),
            **{f"POINTSMART_{name}": value for name, value in settings.items()},
        )
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-w",
                    "2",
                    "-b",
                    f"127.0.0.1:{self.port}",
                    "--access-logfile",
                    str(self.access_log),
                    # pid, method, path, status: which worker answered what
                    "--access-logformat",
                    "%(p)s %(m)s %(U)s %(s)s",
                    "pointsmart.wsgi:app",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"gunicorn exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=10) as response:
                    if response.status == 200:
                        return
            except OSError:  # refused, reset or slow while the workers boot: ask again
                time.sleep(0.2)
        pytest.fail(f"gunicorn did not serve within {SERVER_TIMEOUT}s:\n{self.log.read_text()}")

    def workers_of(self, method: str, path: str) -> list[str]:
        """Return the pid of the worker that answered each such request, in order."""
        time.sleep(0.2)  # gunicorn writes the access log line after the response
        rows = [line.split() for line in self.access_log.read_text().splitlines()]
        return [row[0] for row in rows if len(row) == 4 and row[1] == method and row[2] == path]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve(app, migrated, tmp_path):
    """serve(**settings): start gunicorn with POINTSMART_<setting>s; stopped after the test."""
    servers = []

    def start(**settings: str) -> Server:
        db.session.commit()  # the server must see the test's data (and SQLite's lock be free)
        instance = tmp_path / f"instance-{len(servers)}"
        instance.mkdir()
        server = Server(migrated, instance, LOGIN_RATE_LIMIT=f"{LIMIT} per 15 minutes", **settings)
        servers.append(server)
        server.wait_until_serving()
        return server

    yield start
    for server in servers:
        server.stop()


class Browser:
    """A cookie jar over fresh connections (urllib opens one per request, no keep-alive)."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(self, path: str, data: dict | None = None) -> tuple[int, str, dict]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, data=body, timeout=30) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def csrf(self, path: str = "/login") -> str:
        status, page, _ = self.request(path)
        match = CSRF_INPUT.search(page)
        assert status == 200 and match, f"no CSRF token on {path} ({status})"
        return html.unescape(match.group(1))

    def log_in(self, phone: str, pin: str) -> int:
        token = self.csrf()
        status, _, _ = self.request("/login", {"csrf_token": token, "phone": phone, "pin": pin})
        return status

    @property
    def session_cookie(self) -> str:
        return next(c.value for c in self.jar if c.name == "session")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer to look at, not to follow


class Held:
    """A connection whose request never ends, keeping the worker that accepted it busy.

    gunicorn's sync workers serve one connection at a time, so while one worker is held the
    other serves every request: the test decides which worker answers, instead of hoping.
    """

    def __init__(self, server: Server):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.5)  # a free worker accepts it and waits for the rest of the headers

    def release(self) -> None:
        self.sock.sendall(b"Connection: close\r\n\r\n")
        while self.sock.recv(65536):
            pass
        self.sock.close()


def on_each_worker(server: Server, first, second):
    """Return (first(), second()), run on one worker and then on the other."""
    one = Held(server)  # worker A is held: B runs first()
    a = first()
    two = Held(server)  # B is the only free worker, so B is held now
    one.release()  # A is free again: A runs second()
    try:
        b = second()
    finally:
        two.release()
    return a, b


def failed_logins(server: Server, count: int) -> list[int]:
    """Make ``count`` wrong-PIN logins for PHONE, each over fresh connections."""
    return [Browser(server.url).log_in(PHONE, "000000") for _ in range(count)]


def assert_served_by_two_workers(pids: list[str], first: int) -> None:
    """The first ``first`` requests were served by one worker, the rest by the other."""
    assert len(set(pids[:first])) == 1 and len(set(pids[first:])) == 1, pids
    assert pids[0] != pids[-1], f"one worker served everything: {pids}"


@pytest.fixture
def villager(make):
    make.villager(make.household(), phone=PHONE, pin=PIN)
    db.session.commit()


def too_many(app) -> str:
    with app.test_request_context():
        return gettext("Too many attempts. Please wait a few minutes before trying again.")


def test_the_login_limit_holds_across_workers_with_redis(app, serve, redis_prefix, villager):
    server = serve(RATELIMIT_STORAGE_URI=REDIS_URL, RATELIMIT_KEY_PREFIX=redis_prefix)
    half = LIMIT // 2

    def right_pin():
        browser = Browser(server.url)
        return browser.request("/login", {"csrf_token": browser.csrf(), "phone": PHONE, "pin": PIN})

    first, (second, (status, page, headers)) = on_each_worker(
        server,
        lambda: failed_logins(server, half),
        lambda: (failed_logins(server, LIMIT - half), right_pin()),
    )
    # Wrong PINs: the form again, with its message. Then the limit of both workers together
    # is reached: even the right PIN waits, though this worker saw only half the attempts.
    assert first + second == [200] * LIMIT
    assert status == 429, status
    assert too_many(app) in html.unescape(page) and "Traceback" not in page
    assert "Retry-After" in headers
    assert_served_by_two_workers(server.workers_of("POST", "/login"), half)

    # And on the first worker too.
    assert Browser(server.url).log_in(PHONE, PIN) == 429


def test_memory_storage_would_let_each_worker_count_alone(serve, villager):
    # The control: with memory:// (the single-worker default) the same attempts leave each
    # worker under the limit, so the test above could not pass without the shared storage.
    server = serve(RATELIMIT_STORAGE_URI="memory://")
    half = LIMIT // 2
    first, (second, last) = on_each_worker(
        server,
        lambda: failed_logins(server, half),
        lambda: (failed_logins(server, LIMIT - half), Browser(server.url).log_in(PHONE, PIN)),
    )
    assert first + second == [200] * LIMIT
    assert last == 302  # not limited: the right PIN gets in
    assert_served_by_two_workers(server.workers_of("POST", "/login"), half)


def test_logout_on_one_worker_ends_the_session_on_the_other(serve, villager):
    server = serve()
    browser = Browser(server.url)

    def open_home(cookie: str) -> int:
        request = urllib.request.Request(
            server.url + "/me/", headers={"Cookie": f"session={cookie}"}
        )
        try:
            with urllib.request.build_opener(NoRedirect()).open(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def log_out() -> int:
        status, _, headers = browser.request("/logout", {"csrf_token": browser.csrf("/me/")})
        assert headers["Location"].endswith("/login")
        return status

    assert browser.log_in(PHONE, PIN) == 302
    copied = browser.session_cookie
    # A: the copied cookie works, then the owner logs out. B: the copy no longer works.
    (seen, logged_out), refused = on_each_worker(
        server, lambda: (open_home(copied), log_out()), lambda: open_home(copied)
    )
    assert (seen, logged_out, refused) == (200, 302, 302)  # 302: sent to log in
    # /me/ was opened twice on A (the copy, then the owner fetching the logout form), once on B.
    assert_served_by_two_workers(server.workers_of("GET", "/me/"), 2)

    # Logging in again starts a new session; the copied cookie stays dead.
    assert browser.log_in(PHONE, PIN) == 302
    assert browser.session_cookie != copied
    assert open_home(copied) == 302
    assert open_home(browser.session_cookie) == 200
