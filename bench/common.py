"""What every benchmark shares: scratch databases, the app, machine facts, pgbench, results.

Benchmarks run against a PostgreSQL server (default postgresql://postgres@127.0.0.1, or
$POINTSMART_BENCH_SERVER, or --server). Each makes scratch databases named ``bench_…`` and
drops them when it ends, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
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
def scratch_database(server: str, what: str) -> Iterator[Database]:
    """Create an empty database ``bench_<what>_<random>`` on the server; drop it afterwards."""
    name = f"bench_{what}_{secrets.token_hex(3)}"
    with _admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield Database(name, _server_url(server, name))
    finally:
        with _admin(server) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


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
