"""Recording awards and deductions by rule: limits, first-time warnings, auto-approval."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from .. import access
from ..extensions import db
from ..models import (
    Household,
    LimitPeriod,
    Member,
    Photo,
    RuleWarning,
    ScoringRule,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
    Village,
)
from ..timeutil import local_today
from . import ledger, rules
from .errors import Forbidden, IdempotencyConflict, InvalidInput

log = logging.getLogger(__name__)

MAX_PHOTOS = 4
MAX_NOTE_LENGTH = 500


def find(key: str) -> Transfer | RuleWarning | None:
    """Return what was recorded under an idempotency key: a transfer, a warning or None."""
    warning = db.session.scalar(sa.select(RuleWarning).where(RuleWarning.idempotency_key == key))
    return warning if warning is not None else ledger.find(key)


def check_rule(rule: ScoringRule, village: Village, photo_count: int) -> None:
    """Refuse a rule that cannot be used in this village today with this many photos.

    Raises InvalidInput. Callers may run it before storing uploads; record_by_rule runs it again.
    """
    if rule.village_id != village.id:
        raise InvalidInput(_l("This rule belongs to another village's catalogue."))
    if not rule.is_active_on(local_today()):
        raise InvalidInput(_l("This rule is not in force today."))
    if photo_count > MAX_PHOTOS:
        raise InvalidInput(_l("At most %(n)s photos per record.", n=MAX_PHOTOS))
    if rule.photo_required and photo_count == 0:
        raise InvalidInput(_l("This rule needs a photo as evidence."))


def record_by_rule(
    *,
    household: Household,
    rule: ScoringRule,
    recorded_by: User,
    key: str,
    member: Member | None = None,
    note: str | None = None,
    photos: Sequence[Photo] = (),
    source: tuple[str, int] | None = None,
) -> Transfer | RuleWarning:
    """Record an award or deduction under a rule; return the pending transfer or a warning.

    See record_once; this form is for callers that do not care whether the key was new.
    """
    result, _created = record_once(
        household=household,
        rule=rule,
        recorded_by=recorded_by,
        key=key,
        member=member,
        note=note,
        photos=photos,
        source=source,
    )
    return result


def record_once(
    *,
    household: Household,
    rule: ScoringRule,
    recorded_by: User,
    key: str,
    member: Member | None = None,
    note: str | None = None,
    photos: Sequence[Photo] = (),
    source: tuple[str, int] | None = None,
) -> tuple[Transfer | RuleWarning, bool]:
    """Record an award or deduction under a rule; return (transfer or warning, created).

    ``created`` is False when the key was already used with the same content (a retry or a
    double tap): the earlier result comes back and ``photos`` were not attached to anything.
    Every record takes a lock on the household row and counts the rule's limit under it,
    so two cadres recording a once-a-day rule at the same moment produce one award.
    Raises Forbidden, InvalidInput, IdempotencyConflict (and what ledger.record raises).
    """
    key = ledger._check_key(key)
    note = (note or "").strip()[:MAX_NOTE_LENGTH] or None
    if not access.covers_household(recorded_by, household, access.RECORDERS):
        raise Forbidden()
    if member is not None and member.household_id != household.id:
        raise InvalidInput(_l("That person is not a member of this household."))
    content = dict(member=member, note=note, source=source)
    existing = find(key)
    if existing is not None:
        return _replay(existing, household, rule, recorded_by, key, content), False
    village = household.group.village
    check_rule(rule, village, len(photos))
    if any(photo.village_id != village.id for photo in photos):
        raise InvalidInput(_l("A photo belongs to another village."))
    if not household.is_active:
        raise InvalidInput(_l("This household is no longer active."))
    lock_household(household)
    # Look again under the lock: a twin request with this key may have just finished.
    existing = find(key)
    if existing is not None:
        return _replay(existing, household, rule, recorded_by, key, content), False
    if rule.limit_period is not LimitPeriod.NONE:
        used = _count_in_period(Transfer, household, rule)
        if rule.warning_first and used == 0 and _count_in_period(RuleWarning, household, rule) == 0:
            return _warn(household, rule, recorded_by, key, **content), True
        if used >= rule.limit_count:
            raise InvalidInput(
                _l(
                    "Limit reached: %(rule)s may be recorded %(n)s time(s) per %(period)s "
                    "for a household.",
                    rule=rule.name,
                    n=rule.limit_count,
                    period=_PERIOD[rule.limit_period],  # lazy: rendered in the reader's language
                )
            )
    transfer = _record(household, rule, recorded_by, key, **content)
    for photo in photos:
        # A claim's or report's photos stay its evidence; the history finds them by source.
        if source and getattr(photo, f"{source[0]}_id", None) == source[1]:
            continue
        photo.attach(transfer=transfer)
    db.session.flush()
    return auto_approve(transfer), True


def _record(household, rule, recorded_by, key, *, member, note, source) -> Transfer:
    return ledger.record(
        kind=TransferKind.DEDUCTION if rule.is_deduction else TransferKind.AWARD,
        household=household,
        points=abs(rule.points),
        reason=rule.name,
        category=rule.category,
        recorded_by=recorded_by,
        key=key,
        member=member,
        note=note,
        source=source,
        rule=rule,
    )


def _replay(existing, household, rule, recorded_by, key, content) -> Transfer | RuleWarning:
    """Return the earlier result of this key if it was the same request; else refuse."""
    if isinstance(existing, Transfer):
        # ledger.record compares the content's fingerprint and returns the same transfer.
        return _record(household, rule, recorded_by, key, **content)
    source = content["source"]
    same = (
        existing.household_id == household.id
        and existing.rule_id == rule.id
        and existing.member_id == (content["member"].id if content["member"] else None)
        and existing.note == content["note"]
        and (existing.source_type, existing.source_id) == (source or (None, None))
    )
    if not same:
        raise IdempotencyConflict()
    log.info("replayed warning %s for key %s", existing.id, key)
    return existing


def auto_approve(transfer: Transfer) -> Transfer:
    """Post a just-recorded award at once if the village auto-approves awards of its size.

    For every award recorded outside the rule path too (courtyard ratings), so the village's
    setting applies the same way everywhere. Deductions and larger awards stay pending.
    """
    auto_max = transfer.village.auto_approve_max
    if (
        transfer.kind is TransferKind.AWARD
        and transfer.status is TransferStatus.PENDING
        and auto_max is not None
        and transfer.amount <= auto_max
    ):
        ledger.auto_post(transfer)
    return transfer


def lock_household(household: Household) -> None:
    """Serialize writers that count a household's records.

    A row lock on PostgreSQL; on SQLite every write transaction already holds the
    database's write lock from its first statement (BEGIN IMMEDIATE).
    """
    db.session.execute(
        sa.select(Household.id).where(Household.id == household.id).with_for_update()
    )


_PERIOD = {
    LimitPeriod.DAY: _l("day"),
    LimitPeriod.WEEK: _l("week"),
    LimitPeriod.MONTH: _l("month"),
    LimitPeriod.QUARTER: _l("quarter"),
    LimitPeriod.YEAR: _l("year"),
}


def period_label(period: LimitPeriod) -> str:
    """Return 'day', 'week', ... in the user's language."""
    return str(_PERIOD.get(period, ""))


def _count_in_period(model, household: Household, rule: ScoringRule) -> int:
    """Count this household's records under any version of the rule in the current period."""
    start, end = rules.period_bounds(rule.limit_period, local_today())
    stmt = (
        sa.select(sa.func.count())
        .select_from(model)
        .join(ScoringRule, model.rule_id == ScoringRule.id)
        .where(
            model.household_id == household.id,
            ScoringRule.family == rule.family,
            model.created_at >= start,
            model.created_at < end,
        )
    )
    if model is Transfer:
        # A rejected record frees its place; a posted one that was later reversed does not.
        stmt = stmt.where(Transfer.status != TransferStatus.VOIDED)
    return db.session.scalar(stmt)


def _warn(household, rule, recorded_by, key, *, member, note, source) -> RuleWarning:
    warning = RuleWarning(
        idempotency_key=key,
        household=household,
        member=member,
        rule=rule,
        recorded_by=recorded_by,
        note=note,
        source_type=source[0] if source else None,
        source_id=source[1] if source else None,
    )
    db.session.add(warning)
    db.session.flush()
    log.info("user %s warned household %s under rule %s", recorded_by.id, household.id, rule.id)
    return warning
