"""WSGI entry point: `gunicorn pointsmart.wsgi:app`."""

from __future__ import annotations

import sys

from . import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:  # a one-line explanation instead of a traceback per worker
    sys.exit(f"PointSmart cannot start: {exc}")
