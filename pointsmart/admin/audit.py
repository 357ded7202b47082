"""The audit log for town administrators: filter, page through and export; never edit.

An administrator sees the entries of their town, and the entries without a town made by
people who hold a role in it (account changes, for instance). There are only GET routes
here: nobody changes or deletes an entry through the app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask import abort, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..auth import role_required
from ..committee import parse_id
from ..extensions import db
from ..labels import AUDIT_ACTIONS, audit_action_label
from ..models import (
    AuditEntry,
    Household,
    Role,
    RoleGrant,
    Shop,
    Town,
    Village,
    VillagerGroup,
)
from ..spreadsheets import Table, csv_response, xlsx_response
from ..timeutil import LOCAL_TZ, local_today, to_local
from . import bp

PAGE_SIZE = 50
#: The most entries one download holds; the file says so when there were more.
EXPORT_CAP = 100_000
#: Longest value shown in a before/after difference on the page (the downloads keep all).
VALUE_CHARS = 80


# --- whose entries -------------------------------------------------------------------------------


def _admin_towns() -> list[Town]:
    town_ids = {g.town_id for g in current_user.grants if g.role is Role.ADMIN and g.town_id}
    return list(
        db.session.scalars(
            sa.select(Town).where(Town.id.in_(town_ids)).order_by(Town.name, Town.id)
        )
    )


def town_condition(town_id: int):
    """Return the SQL condition selecting the audit entries a town's administrators see."""
    villages = sa.select(Village.id).where(Village.town_id == town_id)
    groups = sa.select(VillagerGroup.id).where(VillagerGroup.village_id.in_(villages))
    people = sa.select(RoleGrant.user_id).where(
        sa.or_(
            RoleGrant.town_id == town_id,
            RoleGrant.village_id.in_(villages),
            RoleGrant.group_id.in_(groups),
            RoleGrant.shop_id.in_(sa.select(Shop.id).where(Shop.town_id == town_id)),
            RoleGrant.household_id.in_(
                sa.select(Household.id).where(Household.group_id.in_(groups))
            ),
        )
    )
    return sa.or_(
        AuditEntry.town_id == town_id,
        sa.and_(
            AuditEntry.town_id.is_(None),
            sa.or_(AuditEntry.village_id.in_(villages), AuditEntry.actor_id.in_(people)),
        ),
    )


# --- the filters ---------------------------------------------------------------------------------


@dataclass
class Filters:
    town: Town
    villages: list[Village]
    date_from: date | None = None
    date_to: date | None = None
    actor: str = ""
    action: str = ""
    village: Village | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.date_from or self.date_to or self.actor or self.action or self.village)

    def args(self) -> dict[str, str]:
        """Return the query arguments that repeat these filters (for paging and downloads)."""
        args = {
            "town": str(self.town.id),
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "actor": self.actor,
            "action": self.action,
            "village": str(self.village.id) if self.village else "",
        }
        return {k: v for k, v in args.items() if v}


def _date(name: str, what: str, errors: list[str]) -> date | None:
    text = (request.args.get(name) or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors.append(_("%(what)s must be a date like 2026-11-30.", what=what))
        return None
    if day.year < 2000:
        errors.append(_("%(what)s must be in the year 2000 or later.", what=what))
        return None
    return day


def read_filters() -> Filters:
    """Return the filters of the query; 404 for a town or village outside the user's."""
    towns = _admin_towns()
    if not towns:
        abort(404)
    town = towns[0]
    if request.args.get("town"):
        town = next((t for t in towns if t.id == parse_id(request.args["town"])), None)
        if town is None:
            abort(404)
    villages = list(town.villages)
    filters = Filters(town=town, villages=villages)
    errors = filters.errors
    filters.date_from = _date("from", _("The first day"), errors)
    filters.date_to = _date("to", _("The last day"), errors)
    if filters.date_from and filters.date_to and filters.date_to < filters.date_from:
        errors.append(_("The last day comes before the first."))
    filters.actor = (request.args.get("actor") or "").strip()[:60]
    action = (request.args.get("action") or "").strip()
    if action and action not in AUDIT_ACTIONS:
        errors.append(_("Choose an action from the list."))
    else:
        filters.action = action
    if request.args.get("village"):
        village_id = parse_id(request.args["village"])
        filters.village = next((v for v in villages if v.id == village_id), None)
        if filters.village is None:
            abort(404)
    return filters


def _query(filters: Filters) -> sa.Select:
    stmt = sa.select(AuditEntry).where(town_condition(filters.town.id))
    if filters.date_from:
        start = datetime.combine(filters.date_from, time.min, tzinfo=LOCAL_TZ)
        stmt = stmt.where(AuditEntry.at >= start)
    if filters.date_to:
        end = datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=LOCAL_TZ)
        stmt = stmt.where(AuditEntry.at < end)
    if filters.actor:
        stmt = stmt.where(AuditEntry.actor_name.icontains(filters.actor, autoescape=True))
    if filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.village:
        stmt = stmt.where(AuditEntry.village_id == filters.village.id)
    return stmt


def _count(stmt: sa.Select) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))


def _newest_first(stmt: sa.Select) -> sa.Select:
    return stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())


# --- before and after ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    key: str
    before: str | None  #: None: the key was not there before
    after: str | None  #: None: the key is gone after


def _text(value, limit: int | None = VALUE_CHARS) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def changes(before: dict | None, after: dict | None) -> list[Change]:
    """Return what differs between an entry's before and after, key by key."""
    before, after = before or {}, after or {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [Change("", _text(before) if before else None, _text(after) if after else None)]
    found = []
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        if key in before and key in after and old == new:
            continue
        found.append(
            Change(
                key,
                _text(old) if key in before else None,
                _text(new) if key in after else None,
            )
        )
    return found


# --- the views -----------------------------------------------------------------------------------


def _village_names(filters: Filters) -> dict[int, str]:
    return {v.id: v.name for v in filters.villages}


@bp.get("/audit", endpoint="audit")
@role_required(Role.ADMIN)
def audit_page():
    """List the town's audit entries, newest first, 50 a page, with filters."""
    filters = read_filters()
    context = {
        "filters": filters,
        "towns": _admin_towns(),
        "actions": [(code, audit_action_label(code)) for code in AUDIT_ACTIONS],
        "village_names": _village_names(filters),
        "export_cap": EXPORT_CAP,
        "changes": changes,
        "action_label": audit_action_label,
        "today": local_today(),
    }
    if filters.errors:
        return render_template("admin/audit/log.html", **context, entries=[], total=0), 400
    stmt = _query(filters)
    total = _count(stmt)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    entries = db.session.scalars(
        _newest_first(stmt).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    args = filters.args()
    return render_template(
        "admin/audit/log.html",
        **context,
        entries=entries,
        total=total,
        page=page,
        pages=pages,
        page_url=lambda n: url_for("admin.audit", **args, **({"page": n} if n > 1 else {})),
        xlsx_url=url_for("admin.audit_xlsx", **args),
        csv_url=url_for("admin.audit_csv", **args),
    )


def _export(filters: Filters) -> Table:
    """Return the filtered entries, newest first, at most EXPORT_CAP of them, as a table."""
    stmt = _query(filters)
    total = _count(stmt)
    names = _village_names(filters)
    rows = []
    columns = _newest_first(stmt).with_only_columns(
        AuditEntry.at,
        AuditEntry.actor_name,
        AuditEntry.action,
        AuditEntry.target_type,
        AuditEntry.target_id,
        AuditEntry.village_id,
        AuditEntry.summary,
        AuditEntry.before,
        AuditEntry.after,
        AuditEntry.ip,
    )
    for (
        at,
        actor,
        action,
        target_type,
        target_id,
        village_id,
        summary,
        before,
        after,
        ip,
    ) in db.session.execute(columns.limit(EXPORT_CAP)).yield_per(2000):
        rows.append(
            [
                # Excel has no time zones: the local time, to the second.
                to_local(at).replace(tzinfo=None, microsecond=0),
                actor,
                audit_action_label(action),
                action,
                target_type or "",
                target_id,
                names.get(village_id, ""),
                summary,
                _text(before, None) if before is not None else "",
                _text(after, None) if after is not None else "",
                ip or "",
            ]
        )
    note = None
    if total > EXPORT_CAP:
        cap, found = format(EXPORT_CAP, ","), format(total, ",")
        note = _(
            "Only the newest %(cap)s of %(total)s entries are in this file: narrow the filters "
            "to get the others.",
            cap=cap,
            total=found,
        )
    return Table(
        _("Audit log"),
        [
            _("Time"),
            _("Who"),
            _("Action"),
            _("Action code"),
            _("Object"),
            _("Object no."),
            _("Village"),
            _("Summary"),
            _("Before"),
            _("After"),
            _("Address"),
        ],
        rows,
        {0: "yyyy-mm-dd hh:mm:ss"},
        note,
    )


def _filename(filters: Filters, suffix: str) -> str:
    return f"audit-town-{filters.town.id}-{local_today().isoformat()}.{suffix}"


def _export_or_error():
    filters = read_filters()
    if filters.errors:
        return None, filters
    return _export(filters), filters


@bp.get("/audit.xlsx", endpoint="audit_xlsx")
@role_required(Role.ADMIN)
def audit_xlsx():
    """Download the filtered entries as an Excel workbook (at most EXPORT_CAP of them)."""
    table, filters = _export_or_error()
    if table is None:
        return audit_page()
    return xlsx_response([table], _filename(filters, "xlsx"), write_only=True)


@bp.get("/audit.csv", endpoint="audit_csv")
@role_required(Role.ADMIN)
def audit_csv():
    """Download the filtered entries as CSV (UTF-8 with a BOM; at most EXPORT_CAP of them)."""
    table, filters = _export_or_error()
    if table is None:
        return audit_page()
    return csv_response([table], _filename(filters, "csv"))
