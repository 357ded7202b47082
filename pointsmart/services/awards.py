"""Recording awards and deductions by rule: limits, first-time warnings, auto-approval."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

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
)
from ..timeutil import local_today
from . import ledger, rules
from .errors import InvalidInput

log = logging.getLogger(__name__)

MAX_PHOTOS = 4


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

    The rule's limit is counted under a lock on the household row, so two cadres
    recording a once-a-day rule at the same moment produce one award.
    Raises Forbidden, InvalidInput, IdempotencyConflict (and what ledger.record raises).
    """
    warning = db.session.scalar(sa.select(RuleWarning).where(RuleWarning.idempotency_key == key))
    if warning is not None:
        return warning
    kind = TransferKind.DEDUCTION if rule.is_deduction else TransferKind.AWARD
    arguments = dict(
        kind=kind,
        household=household,
        points=abs(rule.points),
        reason=rule.name,
        category=rule.category,
        recorded_by=recorded_by,
        key=key,
        member=member,
        note=(note or "").strip()[:500] or None,
        source=source,
        rule=rule,
    )
    if ledger.find(key) is not None:
        return ledger.record(**arguments)  # a retry: the same transfer, or a conflict
    village = household.group.village
    if rule.village_id != village.id:
        raise InvalidInput(_l("This rule belongs to another village's catalogue."))
    if not rule.is_active_on(local_today()):
        raise InvalidInput(_l("This rule is not in force today."))
    if len(photos) > MAX_PHOTOS:
        raise InvalidInput(_l("At most %(n)s photos per record.", n=MAX_PHOTOS))
    if rule.photo_required and not photos:
        raise InvalidInput(_l("This rule needs a photo as evidence."))
    if rule.limit_period is not LimitPeriod.NONE:
        lock_household(household)
        # Look again under the lock: a twin request with this key may have just finished.
        warning = db.session.scalar(
            sa.select(RuleWarning).where(RuleWarning.idempotency_key == key)
        )
        if warning is not None:
            return warning
        if ledger.find(key) is not None:
            return ledger.record(**arguments)
        used = _count_in_period(Transfer, household, rule)
        if rule.warning_first and used == 0 and _count_in_period(RuleWarning, household, rule) == 0:
            return _warn(household, rule, recorded_by, key, member, note, source)
        if used >= rule.limit_count:
            raise InvalidInput(
                _l(
                    "Limit reached: %(rule)s may be recorded %(n)s time(s) per period for a household.",
                    rule=rule.name,
                    n=rule.limit_count,
                )
            )
    transfer = ledger.record(**arguments)
    for photo in photos:
        photo.attach(transfer=transfer)
    auto_max = village.auto_approve_max
    if kind is TransferKind.AWARD and auto_max is not None and transfer.amount <= auto_max:
        ledger.auto_post(transfer)
    return transfer


def lock_household(household: Household) -> None:
    """Serialize writers that count a household's records (a no-op lock on SQLite)."""
    db.session.execute(
        sa.select(Household.id).where(Household.id == household.id).with_for_update()
    )


def _count_in_period(model, household: Household, rule: ScoringRule) -> int:
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
        stmt = stmt.where(Transfer.status != TransferStatus.VOIDED)
    return db.session.scalar(stmt)


def _warn(household, rule, recorded_by, key, member, note, source) -> RuleWarning:
    warning = RuleWarning(
        idempotency_key=key,
        household=household,
        member=member,
        rule=rule,
        recorded_by=recorded_by,
        note=(note or "").strip()[:500] or None,
        source_type=source[0] if source else None,
        source_id=source[1] if source else None,
    )
    db.session.add(warning)
    db.session.flush()
    log.info("user %s warned household %s under rule %s", recorded_by.id, household.id, rule.id)
    return warning
