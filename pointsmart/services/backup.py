"""Consistent backups: SQLite's online backup API, or pg_dump for PostgreSQL."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from pathlib import Path

from flask import current_app

from ..extensions import db
from ..timeutil import utcnow

log = logging.getLogger(__name__)


class BackupError(RuntimeError):
    """The backup could not be written; the message says why."""


def default_path(suffix: str) -> Path:
    """Return instance/backups/pointsmart-<UTC time>.<suffix>."""
    folder = Path(current_app.instance_path) / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"pointsmart-{utcnow():%Y%m%d-%H%M%S}.{suffix}"


def write(output: str | os.PathLike | None = None) -> Path:
    """Back the database up to ``output`` (or the default path); return the file's path.

    Raises BackupError.
    """
    url = db.engine.url
    backend = url.get_backend_name()
    try:
        path = Path(output) if output else default_path("sqlite" if backend == "sqlite" else "dump")
        path.parent.mkdir(parents=True, exist_ok=True)
        if backend == "sqlite":
            _sqlite(url.database, path)
        else:
            _postgresql(url, path)
    except OSError as exc:
        raise BackupError(f"Cannot write the backup there: {exc}") from None
    log.info("backup of %s written to %s", url.render_as_string(hide_password=True), path)
    return path


def _sqlite(database: str, path: Path) -> None:
    if not database or database == ":memory:":
        raise BackupError("An in-memory database cannot be backed up.")
    # The online backup API copies a consistent snapshot page by page while others write.
    try:
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(path)
            try:
                source.backup(target)
                ok = target.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup failed: {exc}") from None
    if ok != "ok":
        raise BackupError(f"The backup copy failed its integrity check: {ok}")


def _postgresql(url, path: Path) -> None:
    # libpq's own URL (no "+psycopg"), without the password: that goes in the environment,
    # where other users cannot read it from the process list.
    target = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    try:
        result = subprocess.run(
            ["pg_dump", "--format=custom", "--no-owner", f"--file={path}", target],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
    except FileNotFoundError:
        raise BackupError(
            "pg_dump was not found; install PostgreSQL's client tools (Debian: postgresql-client)."
        ) from None
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
