"""Recording staff actions in the audit log (append-only; see models.audit).

Every service that changes state on a person's behalf calls ``record`` in the same transaction
as the change, so an action and its audit entry are committed or rolled back together.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from decimal import Decimal

from flask import has_request_context, request

from ..extensions import db
from ..models import AuditEntry, Town, User, Village


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def snapshot(obj, *fields: str) -> dict:
    """Return the named attributes of an object as plain JSON values."""
    return {name: _plain(getattr(obj, name)) for name in fields}


def _places(target) -> tuple[int | None, int | None]:
    """Return (town id, village id) that a target belongs to, as far as it tells."""
    if isinstance(target, Village):
        return target.town_id, target.id
    if isinstance(target, Town):
        return target.id, None
    for path in ("village", "group.village", "household.group.village", "shop", "item.shop"):
        obj = target
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is None:
            continue
        if path.endswith("shop"):
            return obj.town_id, obj.village_id
        return obj.town_id, obj.id
    return getattr(target, "town_id", None), getattr(target, "village_id", None)


def record(
    action: str,
    actor: User | None,
    target=None,
    *,
    summary: str = "",
    before: dict | None = None,
    after: dict | None = None,
    town_id: int | None = None,
    village_id: int | None = None,
) -> AuditEntry:
    """Add an audit entry for an action by ``actor`` (None: the system) on ``target``."""
    if target is not None and town_id is None and village_id is None:
        town_id, village_id = _places(target)
    entry = AuditEntry(
        actor_id=actor.id if actor is not None else None,
        actor_name=(actor.display_name if actor is not None else "system")[:60],
        action=action,
        target_type=type(target).__name__.lower() if target is not None else None,
        target_id=getattr(target, "id", None),
        town_id=town_id,
        village_id=village_id,
        summary=summary[:300],
        before=_plain(before) if before is not None else None,
        after=_plain(after) if after is not None else None,
        ip=request.remote_addr if has_request_context() else None,
    )
    db.session.add(entry)
    return entry
