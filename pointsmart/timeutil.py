"""One place for "now": stored in UTC, shown in Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def local_today() -> date:
    """Return today's date in the villages' time zone."""
    return utcnow().astimezone(LOCAL_TZ).date()


def to_local(value: datetime) -> datetime:
    """Return an aware datetime converted to the villages' time zone."""
    return value.astimezone(LOCAL_TZ)
