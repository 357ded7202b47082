"""What every benchmark shares: scratch databases, the app, machine facts, pgbench, results.

Benchmarks run against a PostgreSQL server (default postgresql://postgres@127.0.0.1, or
$POINTSMART_BENCH_SERVER, or --server). Each makes scratch databases named ``bench_…`` and
drops them when it ends, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
#: Profiles and other bulky output (git-ignored).
DATA_DIR = BENCH_DIR / "data"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1"
SERVER_ENV = "POINTSMART_BENCH_SERVER"


# --- command line -------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"PostgreSQL server URL, without a database (default ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--no-record",
        action="store_true",
        help="print the figures only; do not append them to bench/RESULTS.md",
    )
    return p


def command_line() -> str:
    """Return how this benchmark was started, as one could type it again."""
    module = sys.modules["__main__"].__spec__
    start = f"python -m {module.name}" if module else f"python {sys.argv[0]}"
    return " ".join([start, *map(shlex.quote, sys.argv[1:])])


# --- databases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A scratch database: its name and how SQLAlchemy and libpq tools reach it."""

    name: str
    libpq_url: str

    @property
    def sqlalchemy_url(self) -> str:
        url = make_url(self.libpq_url)
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _server_url(server: str, database: str) -> str:
    url = make_url(server)
    return url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def _admin(server: str) -> psycopg.Connection:
    return psycopg.connect(_server_url(server, "postgres"), autocommit=True)


@contextlib.contextmanager
def scratch_database(server: str, what: str, keep: bool = False) -> Iterator[Database]:
    """Create an empty database ``bench_<what>_<random>`` on the server; drop it afterwards
    (unless ``keep``)."""
    name = f"bench_{what}_{secrets.token_hex(3)}"
    with _admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield Database(name, _server_url(server, name))
    finally:
        if not keep:
            drop_database(server, name)


def drop_database(server: str, name: str) -> None:
    """Drop a database, closing its connections first."""
    with _admin(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_at(url: str) -> Database:
    """Return the Database a URL names (any driver prefix; libpq form for the tools)."""
    parsed = make_url(url)
    libpq = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return Database(parsed.database, libpq)


def server_of(db: Database) -> str:
    """Return the server URL (without a database) of a database."""
    return make_url(db.libpq_url).set(database=None).render_as_string(hide_password=False)


def create_database_if_missing(db: Database) -> None:
    """Create the database on its server unless it exists."""
    with _admin(server_of(db)) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))


def vacuum_analyze(db: Database) -> None:
    """Vacuum and analyse a freshly loaded database, as pgbench -i does its own."""
    with psycopg.connect(db.libpq_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# --- the app ------------------------------------------------------------------------------------


def app_config(url: str, **extra) -> dict:
    """Return a configuration for create_app on ``url``: production-like, quiet logs."""
    return {
        "SECRET_KEY": "bench-secret",
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def use_scratch_instance() -> Path:
    """Point the app's instance folder at a temporary folder (photos, keys) unless set."""
    if not os.environ.get("POINTSMART_INSTANCE_PATH"):
        os.environ["POINTSMART_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="pointsmart-bench-")
    return Path(os.environ["POINTSMART_INSTANCE_PATH"])


def make_app(url: str, **extra):
    """Create the application on the database at ``url``."""
    use_scratch_instance()
    from pointsmart import create_app

    return create_app(app_config(url, **extra))


def migrate(url: str, **extra):
    """Create the schema on an empty database through the app's migrations; return the app."""
    from flask_migrate import upgrade

    from pointsmart.extensions import db

    app = make_app(url, **extra)
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        db.engine.dispose()
    return app


# --- the machine --------------------------------------------------------------------------------


def _meminfo_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def postgres_facts(server: str) -> dict[str, str]:
    """Return the server's version and the settings that change what a commit costs."""
    with _admin(server) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')"
            ).fetchall()
        )
    return {"version": version, **settings}


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _git_commit() -> str:
    """Return the commit, and how many app files differ from it (read-only git commands)."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        changed = _git(
            "ls-files",
            "--modified",
            "--others",
            "--exclude-standard",
            "--",
            "pointsmart",
            "migrations",
        ).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} + {len(changed)} uncommitted app files" if changed else commit


def machine(server: str | None = None) -> dict[str, str]:
    """Return the facts a figure depends on: cores, memory, CPU, Python, PostgreSQL."""
    facts = {
        "cores": str(os.cpu_count()),
        "memory": f"{_meminfo_gib():.1f} GiB",
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "commit": _git_commit(),
    }
    if server is not None:
        pg = postgres_facts(server)
        facts["postgresql"] = (
            f"{pg['version']} (fsync {pg.get('fsync')}, synchronous_commit "
            f"{pg.get('synchronous_commit')}, shared_buffers {pg.get('shared_buffers')})"
        )
    return facts


# --- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0–100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Return mean, p50, p95, p99 and max of latencies given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    if not ms:
        return dict.fromkeys(("mean", "p50", "p95", "p99", "max"), float("nan"))
    return {
        "mean": statistics.fmean(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_NUMBER = re.compile(r"[\d,.]+( ?(%|ms|s|KB|MB))?")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a Markdown table; columns of numbers are right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        bool(cells) and all(_NUMBER.fullmatch(r[i]) for r in cells) for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def size(n_bytes: int) -> str:
    """Return a size in KB or MB."""
    return (
        f"{n_bytes / 1024:.0f} KB" if n_bytes < 1024 * 1024 else f"{n_bytes / 1024 / 1024:.1f} MB"
    )


def record(title: str, body: str, facts: dict[str, str], command: str) -> None:
    """Append a dated section with the machine's facts and the exact command to RESULTS.md."""
    stamp = dt.datetime.now(dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    header = ""
    if not RESULTS.exists():
        header = (
            "# Benchmark results\n\n"
            "Appended by the scripts in bench/ (see bench/README.md); newest last. "
            "Compare ratios, not absolute times, across machines.\n"
        )
    machine_line = ", ".join(f"{k} {v}" for k, v in facts.items())
    section = (
        f"\n## {title} — {stamp}\n\n"
        f"Machine: {machine_line}.\n\n"
        f"Command: `{command}`\n\n"
        f"{body.rstrip()}\n"
    )
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(header + section)


class ActivitySampler:
    """Sample what a database's client connections are doing while a load runs.

    Every ``interval`` seconds it classifies each connection to the database (but its own):
    ``waiting on a lock``, ``in PostgreSQL`` (running or waiting on I/O such as the commit's
    WAL flush), ``in the client, mid-transaction`` (idle in transaction: the application is
    working, or descheduled, while it holds its locks) and ``in the client, between
    transactions``. Use as a context manager; ``shares()`` then gives each state's share.
    """

    def __init__(self, db: Database, interval: float = 0.05) -> None:
        self.db = db
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = (
            "SELECT state, wait_event_type FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        with psycopg.connect(self.db.libpq_url, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                for state, wait in conn.execute(query, (self.db.name,)).fetchall():
                    if state == "active":
                        key = "waiting on a lock" if wait == "Lock" else "in PostgreSQL"
                    elif state == "idle in transaction":
                        key = "in the client, mid-transaction"
                    else:
                        key = "in the client, between transactions"
                    self.counts[key] += 1

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def shares(self) -> dict[str, float]:
        """Return each state's share of the samples, in percent."""
        total = sum(self.counts.values()) or 1
        return {k: 100 * v / total for k, v in self.counts.most_common()}


# --- pgbench, the machine's own ceiling ---------------------------------------------------------


def pgbench_path() -> str:
    """Return the pgbench executable: on PATH, or in the newest PostgreSQL's bin folder."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pgbench"), key=lambda p: int(p.parts[-3])
    )
    if candidates:
        return str(candidates[-1])
    raise SystemExit("pgbench not found: apt-get install -y postgresql (it ships pgbench)")


def pgbench_init(db: Database, scale: int = 10) -> None:
    """Load pgbench's tables at a scale factor (pgbench -i -s SCALE)."""
    subprocess.run(
        [pgbench_path(), "-i", "-q", "-s", str(scale), db.libpq_url],
        check=True,
        capture_output=True,
        text=True,
    )


@dataclass
class PgbenchRun:
    clients: int
    seconds: int
    tps: float
    transactions: int
    failed: int
    latency: dict[str, float]
    command: str


def pgbench_run(db: Database, clients: int, seconds: int) -> PgbenchRun:
    """Run the built-in TPC-B-like transaction; return tps and per-transaction latencies.

    Latency percentiles come from pgbench's own per-transaction log (-l).
    """
    with tempfile.TemporaryDirectory(prefix="pgbench-") as folder:
        prefix = os.path.join(folder, "tx")
        args = [
            pgbench_path(),
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(seconds),
            "-l",
            f"--log-prefix={prefix}",
            db.libpq_url,
        ]
        done = subprocess.run(args, check=True, capture_output=True, text=True)
        out = done.stdout
        latencies: list[float] = []
        for log in Path(folder).iterdir():
            with log.open() as fh:
                # client_id transaction_no time_us script_no epoch epoch_us
                latencies += [int(line.split()[2]) / 1e6 for line in fh if line.strip()]
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    transactions = int(re.search(r"actually processed: (\d+)", out).group(1))
    failed_match = re.search(r"number of failed transactions: (\d+)", out)
    shown = [a if a != db.libpq_url else db.name for a in args if not a.startswith("--log")]
    return PgbenchRun(
        clients=clients,
        seconds=seconds,
        tps=tps,
        transactions=transactions,
        failed=int(failed_match.group(1)) if failed_match else 0,
        latency=latency_summary(latencies),
        command=" ".join(["pgbench", *shown[1:]]),
    )


@dataclass
class ScriptRun:
    """A pgbench run of custom scripts: tps, latencies, transactions per script, and whether
    a client was aborted (a failed statement)."""

    clients: int
    seconds: int
    tps: float
    transactions: int
    per_script: list[int]
    latency: dict[str, float]
    aborted: str
    command: str


def pgbench_scripts(
    db: Database, clients: int, seconds: int, scripts: Sequence[tuple[str, int]]
) -> ScriptRun:
    """Run custom pgbench scripts (path, weight) with prepared statements, no vacuum."""
    with tempfile.TemporaryDirectory(prefix="pgbench-") as folder:
        prefix = os.path.join(folder, "tx")
        args = [pgbench_path(), "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients)]
        args += ["-T", str(seconds), "-l", f"--log-prefix={prefix}"]
        for path, weight in scripts:
            args += ["-f", f"{path}@{weight}"]
        done = subprocess.run([*args, db.libpq_url], capture_output=True, text=True)
        out = done.stdout
        latencies: list[float] = []
        per_script = [0] * len(scripts)
        for log in Path(folder).iterdir():
            with log.open() as fh:
                # client_id transaction_no time_us script_no epoch epoch_us
                for line in fh:
                    fields = line.split()
                    if len(fields) >= 4 and fields[2] != "failed":
                        latencies.append(int(fields[2]) / 1e6)
                        per_script[int(fields[3])] += 1
    tps_match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    processed = re.search(r"actually processed: (\d+)", out)
    aborted = "\n".join(
        line for line in done.stderr.splitlines() if "aborted" in line or "ERROR" in line
    )
    if done.returncode not in (0, 2) or not tps_match:
        aborted = aborted or done.stderr.strip()[-500:] or f"pgbench exited {done.returncode}"
    return ScriptRun(
        clients=clients,
        seconds=seconds,
        tps=float(tps_match.group(1)) if tps_match else 0.0,
        transactions=sum(per_script) if per_script else int(processed.group(1) if processed else 0),
        per_script=per_script,
        latency=latency_summary(latencies),
        aborted=aborted,
        command=" ".join(["pgbench", *[a for a in args[1:] if not a.startswith("--log")], db.name]),
    )


# --- the web stack: gunicorn and wrk ------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """Serve a WSGI app with gunicorn, sync workers (one per core by default; with ``threads``
    above 1, threaded workers), on loopback.

    ``env`` is added to this process's environment; ``ready`` is a path that must answer
    (any status below 500) before the server counts as up. The server's stderr (the app's log
    and gunicorn's) goes to ``log``. Use as a context manager; it stops the server it started.
    """

    def __init__(self, app: str, env: dict[str, str], log: Path, ready: str = "/",
                 workers: int | None = None, threads: int = 1) -> None:  # fmt: skip
        self.app = app
        self.env = env
        self.log = log
        self.ready = ready
        self.workers = workers or os.cpu_count() or 1
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "gunicorn"
        start = [str(exe)] if exe.exists() else [sys.executable, "-m", "gunicorn"]
        return [
            *start,
            "--workers", str(self.workers),
            # Threads need gunicorn's threaded worker; one thread is the plain sync worker.
            *(("--worker-class", "gthread", "--threads", str(self.threads))
              if self.threads > 1 else ("--worker-class", "sync")),
            "--bind", f"127.0.0.1:{self.port}",
            "--log-level", "warning",
            self.app,
        ]  # fmt: skip

    def __enter__(self) -> Gunicorn:
        import urllib.error
        import urllib.request

        self._logfile = self.log.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            cwd=ROOT,
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while True:
            if self._proc.poll() is not None:
                raise SystemExit(f"gunicorn exited at start; see {self.log}")
            try:
                urllib.request.urlopen(self.url + self.ready, timeout=5).close()
                return self
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"gunicorn did not answer within 90 s; see {self.log}")
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) its workers have used so far."""
        if self._proc is None:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                with contextlib.suppress(OSError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._logfile.close()


def wrk_path() -> str:
    """Return the wrk executable."""
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    return found


@dataclass
class WrkRun:
    """One wrk run: requests per second, latency in ms, and what the script's own tally says."""

    connections: int
    seconds: float
    requests: int
    rate: float
    latency: dict[str, float]
    #: The script's tally: ok, points, refused, other, and the first unexpected answer.
    tally: dict
    socket_errors: dict[str, int]
    command: str


#: Lua appended to every wrk script: each thread (one connection each) keeps globals ``ok``,
#: ``points``, ``refused``, ``other`` and ``first_other``; done() prints them with the latencies.
WRK_DONE = r"""
threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end
ok, points, refused, other, first_other = 0, 0, 0, 0, ""
function done(summary, latency, requests)
  local t_ok, t_points, t_refused, t_other, first = 0, 0, 0, 0, ""
  for _, t in ipairs(threads) do
    t_ok = t_ok + t:get("ok")
    t_points = t_points + t:get("points")
    t_refused = t_refused + t:get("refused")
    t_other = t_other + t:get("other")
    if first == "" then first = t:get("first_other") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "ok": %d, "points": %d, "refused": %d, ' ..
    '"other": %d, "first_other": %q, "mean": %f, "max": %f, "p50": %f, "p90": %f, "p95": %f, ' ..
    '"p99": %f, "p999": %f, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}\n',
    summary.requests, summary.duration, t_ok, t_points, t_refused, t_other, first,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(url: str, script: Path, connections: int, seconds: float, timeout: int = 10) -> WrkRun:
    """Run wrk with one thread per connection and a script that ends with WRK_DONE."""
    args = [wrk_path(), "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s"]
    args += ["--timeout", f"{timeout}s", "-s", str(script), url]
    done = subprocess.run(args, capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(
            f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}"
        )
    data = json.loads(line[len("BENCH ") :])
    duration = data["duration_us"] / 1e6
    return WrkRun(
        connections=connections,
        seconds=duration,
        requests=data["requests"],
        rate=data["requests"] / duration,
        latency={k: data[k] / 1000 for k in ("mean", "p50", "p90", "p95", "p99", "p999", "max")},
        tally={k: data[k] for k in ("ok", "points", "refused", "other", "first_other")},
        socket_errors={
            k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]
        },
        command=" ".join(["wrk", *args[1:-3], "-s", script.name, "URL"]),
    )


# --- timing service calls ----------------------------------------------------------------------


@dataclass
class Timing:
    what: str
    seconds: list[float]
    result: object
    statements: list[tuple[str, dict]]
    target_ms: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000


@contextlib.contextmanager
def captured(engine):
    """Collect the SQL statements and parameters sent while the block runs."""
    statements: list[tuple[str, dict]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def timed(what: str, fn: Callable[[], object], repeat: int, target_ms=None) -> Timing:
    """Call fn once untimed with its statements captured, then ``repeat`` times timed."""
    from pointsmart.extensions import db

    with captured(db.engine) as statements:
        result = fn()
    db.session.rollback()
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - began)
        db.session.rollback()
    timing = Timing(what, seconds, result, statements, target_ms)
    print(f"{what}: median {timing.median_ms:.1f} ms", flush=True)
    return timing
