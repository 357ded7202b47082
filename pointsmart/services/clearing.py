"""Yearly clearing of spendable points (积分清零), optional per village.

On the village's date every household's unspent spendable points move to the village's sink by
logged clearing transfers; honour points are untouched. Villagers are told a month ahead, so
the first clearing after a date is set comes at least NOTICE_DAYS later, never by surprise. A
run is recorded before anything moves, so running it twice clears once.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

from .. import access
from ..extensions import db
from ..models import (
    Account,
    AccountKind,
    ClearingRun,
    Household,
    Role,
    User,
    Village,
    VillagerGroup,
)
from ..timeutil import local_today
from . import audit, ledger
from .errors import Forbidden, InvalidInput

log = logging.getLogger(__name__)

#: Villagers see the date and the amount this many days ahead.
NOTICE_DAYS = 30


def _check_date(month, day) -> tuple[int, int] | tuple[None, None]:
    if month in (None, "") and day in (None, ""):
        return None, None
    try:
        month, day = int(month), int(day)
    except (TypeError, ValueError):
        raise InvalidInput(_l("Give the clearing date as a month and a day.")) from None
    # 29 February would skip three years out of four: not a yearly date.
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2025, month)[1]:
        raise InvalidInput(_l("There is no such day in every year; choose another date."))
    return month, day


def can_set(user: User, village: Village) -> bool:
    """Return whether the user may set the village's clearing: its committee, or the town admin."""
    return access.covers_village(user, village, (Role.COMMITTEE, Role.ADMIN))


def set_date(village: Village, actor: User, month, day, today: date | None = None) -> Village:
    """Set (or remove, with empty month and day) the village's yearly clearing date.

    Raises Forbidden, InvalidInput.
    """
    if not can_set(actor, village):
        raise Forbidden()
    month, day = _check_date(month, day)
    audit.record(
        "clearing.set_date",
        actor,
        village,
        summary=village.name,
        before={"month": village.clearing_month, "day": village.clearing_day},
        after={"month": month, "day": day},
    )
    before = (village.clearing_month, village.clearing_day)
    village.clearing_month, village.clearing_day = month, day
    if (month, day) != before:
        village.clearing_set_on = (today or local_today()) if month else None
    db.session.flush()
    log.info(
        "user %s set the clearing date of village %s to %s-%s", actor.id, village.id, month, day
    )
    return village


def _on(year: int, village: Village) -> date:
    return date(year, village.clearing_month, village.clearing_day)


def next_date(village: Village, today: date | None = None) -> date | None:
    """Return the next clearing date that will run: on or after today and after the notice."""
    if village.clearing_month is None:
        return None
    today = today or local_today()
    earliest = max(today, (village.clearing_set_on or today) + timedelta(days=NOTICE_DAYS))
    for year in (earliest.year, earliest.year + 1):
        when = _on(year, village)
        if when >= earliest:
            return when
    return None  # unreachable: one of two consecutive years always qualifies


def due_date(village: Village, today: date | None = None) -> date | None:
    """Return this year's clearing date if it has come, was announced in time, and has not run."""
    if village.clearing_month is None:
        return None
    today = today or local_today()
    when = _on(today.year, village)
    if when > today or when < (village.clearing_set_on or when) + timedelta(days=NOTICE_DAYS):
        return None
    ran = db.session.scalar(
        sa.select(ClearingRun.id).where(
            ClearingRun.village_id == village.id, ClearingRun.clearing_date == when
        )
    )
    return None if ran else when


@dataclass(frozen=True)
class Notice:
    date: date
    points: int


def notice(household: Household, today: date | None = None) -> Notice | None:
    """Return what the household's villagers are told: the date and what would be cleared now."""
    today = today or local_today()
    when = next_date(household.group.village, today)
    if when is None or (when - today).days > NOTICE_DAYS:
        return None
    return Notice(when, max(ledger.balance_of(household).spendable, 0))


def run(
    village: Village, when: date, actor: User | None = None, today: date | None = None
) -> tuple[ClearingRun, bool]:
    """Clear the village's spendable points for the clearing date ``when``; return (run, created).

    A run for that date already recorded is returned as it is. Raises Forbidden, InvalidInput.
    """
    if actor is not None and not can_set(actor, village):
        raise Forbidden()
    if when > (today or local_today()):
        raise InvalidInput(_l("A clearing cannot run before its date."))
    existing = _run_of(village, when)
    if existing is not None:
        return existing, False
    record = ClearingRun(village_id=village.id, clearing_date=when, run_by=actor)
    try:
        with db.session.begin_nested():
            db.session.add(record)
            db.session.flush()
    except IntegrityError:  # the scheduled command and a person at the same moment
        return _run_of(village, when), False
    households = db.session.scalars(
        sa.select(Household)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Account, Account.household_id == Household.id)
        .where(
            VillagerGroup.village_id == village.id,
            Account.kind == AccountKind.HOUSEHOLD_SPENDABLE,
            Account.balance > 0,
        )
        .order_by(Household.id)
    ).all()
    reason = str(_l("Yearly clearing of unspent points (%(date)s)", date=when.isoformat()))
    for household in households:
        transfer = ledger.clear(
            household,
            key=f"clearing:{village.id}:{when}:{household.id}",
            reason=reason,
            actor=actor,
        )
        if transfer is not None:
            record.households += 1
            record.points += transfer.amount
    db.session.flush()
    audit.record(
        "clearing.run",
        actor,
        village,
        summary=f"{village.name} {when}: {record.points} / {record.households}",
    )
    log.info(
        "clearing of village %s for %s: %s points of %s households",
        village.id,
        when,
        record.points,
        record.households,
    )
    return record, True


def _run_of(village: Village, when: date) -> ClearingRun | None:
    return db.session.scalar(
        sa.select(ClearingRun).where(
            ClearingRun.village_id == village.id, ClearingRun.clearing_date == when
        )
    )


def run_due(today: date | None = None) -> list[ClearingRun]:
    """Run every village's clearing whose date has come; return the runs made now."""
    today = today or local_today()
    made = []
    villages = db.session.scalars(
        sa.select(Village).where(Village.clearing_month.is_not(None)).order_by(Village.id)
    ).all()
    for village in villages:
        when = due_date(village, today)
        if when is not None:
            record, created = run(village, when, today=today)
            if created:
                made.append(record)
    return made
