"""Villagers' claims ("I cleaned the lane today") and reports (举报 / 随手拍), verified by cadres.

A claim or report is submitted by a villager for their own household, then verified or
rejected once by a cadre (or committee member) whose scope covers that household. Verifying
records the award (and for a report, optionally a deduction for the offending household)
through awards.record_by_rule, so rule limits, photo requirements, first-offence warnings,
approval and auto-approval apply exactly as for awards recorded in the field.

Anonymous reports: the reporter is never shown to other villagers (no page shows a reporter
to anyone outside the reporter's household). Staff who may verify the report (cadres and
committee members covering the reporter's household) see who reported, since they must
reward that household; the committee also sees the reward in its approval queue. The
verification page marks an anonymous report so the cadre keeps the name to themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from .. import access
from ..extensions import db
from ..models import (
    Claim,
    Household,
    Member,
    Photo,
    Report,
    Role,
    RuleWarning,
    ScoringRule,
    SubmissionStatus,
    Transfer,
    User,
    VillagerGroup,
)
from ..timeutil import local_today, utcnow
from . import audit, awards, ledger
from . import photos as photo_service
from .errors import AlreadyResolved, Forbidden, IdempotencyConflict, InvalidInput

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 500
MAX_LOCATION = 100
MAX_REASON = 200
MAX_KEY = 100  # the key gets a ":reward" / ":deduction" suffix for a report's two records
QUEUE_LIMIT = 200

#: Who may verify: the roles that record awards in the field.
VERIFIERS = access.RECORDERS


# --- checks ---------------------------------------------------------------------------


def _text(value, limit: int, missing) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput(missing)
    if len(value) > limit:
        raise InvalidInput(_l("Please keep it to %(n)s characters or fewer.", n=limit))
    return value


def _key(key) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
        raise InvalidInput(_l("The request has no valid idempotency key."))
    return key


def _villager_of(user: User) -> tuple[Household, Member | None]:
    """Return the household (and member) a villager account belongs to. Raises Forbidden."""
    grant = next((g for g in user.grants if g.role is Role.VILLAGER and g.household_id), None)
    if grant is None:
        raise Forbidden(_l("Only villagers can submit claims and reports."))
    household = grant.household
    if not household.is_active:
        raise InvalidInput(_l("This household is no longer active."))
    member = user.member if user.member and user.member.household_id == household.id else None
    return household, member


def _check_rule(rule: ScoringRule, household: Household, *, award: bool) -> None:
    if rule.village_id != household.group.village_id:
        raise InvalidInput(_l("This rule belongs to another village's catalogue."))
    if not rule.is_active_on(local_today()):
        raise InvalidInput(_l("This rule is not in force today."))
    if award and rule.is_deduction:
        raise InvalidInput(_l("Choose a rule that awards points."))
    if not award and not rule.is_deduction:
        raise InvalidInput(_l("Choose a rule that deducts points."))


def can_verify(user: User, record: Claim | Report) -> bool:
    """Return whether the user may verify or reject this claim or report (scope only)."""
    household = record.household if isinstance(record, Claim) else record.reporter_household
    return access.covers_household(user, household, VERIFIERS)


def _check_verifier(user: User, record: Claim | Report) -> None:
    if not can_verify(user, record):
        raise Forbidden()


# --- submitting -----------------------------------------------------------------------


def _insert(record, model) -> tuple[object, bool]:
    """Insert a claim or report unless its key exists; return (record, created)."""
    existing = db.session.scalar(
        sa.select(model).where(model.idempotency_key == record.idempotency_key)
    )
    if existing is not None:
        return existing, False
    try:
        with db.session.begin_nested():  # losing a same-key race leaves the session usable
            db.session.add(record)
            db.session.flush()
    except IntegrityError:
        existing = db.session.scalar(
            sa.select(model).where(model.idempotency_key == record.idempotency_key)
        )
        if existing is None:
            raise
        return existing, False
    return record, True


def _same_or_conflict(existing, user: User, **content):
    if existing.submitted_by_id != user.id or any(
        getattr(existing, name) != value for name, value in content.items()
    ):
        raise IdempotencyConflict()
    return existing


def submit_claim(
    user: User,
    description: str,
    photos: Iterable = (),
    *,
    key: str,
    rule: ScoringRule | None = None,
) -> Claim:
    """Submit a villager's claim for their own household, with up to four photos.

    A retry with the same key returns the same claim. Raises Forbidden, InvalidInput,
    IdempotencyConflict.
    """
    household, member = _villager_of(user)
    description = _text(description, MAX_DESCRIPTION, _l("Please describe what you did."))
    key = _key(key)
    existing = db.session.scalar(sa.select(Claim).where(Claim.idempotency_key == key))
    if existing is not None:
        return _same_or_conflict(existing, user, description=description)
    if rule is not None:
        _check_rule(rule, household, award=True)
    prepared = photo_service.prepare_many(photos)  # every photo checked before any is written
    claim, created = _insert(
        Claim(
            idempotency_key=key,
            household_id=household.id,
            member_id=member.id if member else None,
            submitted_by_id=user.id,
            rule_id=rule.id if rule else None,
            description=description,
            status=SubmissionStatus.SUBMITTED,
        ),
        Claim,
    )
    if not created:
        return _same_or_conflict(claim, user, description=description)
    village = household.group.village
    for item in prepared:
        photo_service.save(item, uploader=user, village=village).attach(claim=claim)
    db.session.flush()
    log.info("user %s submitted claim %s for household %s", user.id, claim.id, household.id)
    return claim


def submit_report(
    user: User,
    what: str,
    where: str,
    photos: Iterable = (),
    *,
    anonymous: bool = False,
    key: str,
) -> Report:
    """Submit a villager's report of a violation in their village, with up to four photos.

    ``anonymous`` hides the reporter from other villagers (never from the committee).
    A retry with the same key returns the same report. Raises Forbidden, InvalidInput,
    IdempotencyConflict.
    """
    household, _member = _villager_of(user)
    what = _text(what, MAX_DESCRIPTION, _l("Please describe what you saw."))
    where = _text(where, MAX_LOCATION, _l("Please say where it was."))
    key = _key(key)
    content = dict(what=what, location=where, anonymous=bool(anonymous))
    existing = db.session.scalar(sa.select(Report).where(Report.idempotency_key == key))
    if existing is not None:
        return _same_or_conflict(existing, user, **content)
    prepared = photo_service.prepare_many(photos)
    village = household.group.village
    report, created = _insert(
        Report(
            idempotency_key=key,
            village_id=village.id,
            reporter_household_id=household.id,
            submitted_by_id=user.id,
            status=SubmissionStatus.SUBMITTED,
            **content,
        ),
        Report,
    )
    if not created:
        return _same_or_conflict(report, user, **content)
    for item in prepared:
        photo_service.save(item, uploader=user, village=village).attach(report=report)
    db.session.flush()
    log.info("user %s submitted report %s in village %s", user.id, report.id, village.id)
    return report


# --- verifying ------------------------------------------------------------------------


def _resolve(model, record, actor: User, new: SubmissionStatus, **values) -> bool:
    """Move a submitted record to ``new``; False if someone else moved it first.

    The status guard is in the UPDATE's WHERE, so of two verifiers at the same moment one
    wins and the other finds no row (PostgreSQL re-checks the row after the first commits;
    SQLite serializes the writers).
    """
    moved = db.session.execute(
        sa.update(model)
        .where(model.id == record.id, model.status == SubmissionStatus.SUBMITTED)
        .values(status=new, verified_by_id=actor.id, verified_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(record)
    return moved == 1


def _made_under(key: str, source: tuple[str, int]) -> bool:
    """Return whether this key already recorded something for this source (a double tap)."""
    transfer = ledger.find(key)
    if transfer is not None:
        return (transfer.source_type, transfer.source_id) == source
    warning = db.session.scalar(sa.select(RuleWarning).where(RuleWarning.idempotency_key == key))
    return warning is not None and (warning.source_type, warning.source_id) == source


def _already(record, actor: User, wanted: SubmissionStatus, same: bool):
    """A double tap by the same person gets the same record back; anything else is refused."""
    if record.status is wanted and record.verified_by_id == actor.id and same:
        return record
    if isinstance(record, Claim):
        raise AlreadyResolved(_l("This claim has already been verified or rejected."))
    raise AlreadyResolved(_l("This report has already been verified or rejected."))


def verify_claim(claim: Claim, cadre: User, rule: ScoringRule, *, key: str) -> Claim:
    """Confirm a claim and record its award under ``rule``; the award then goes to approval.

    At most once: a second verification (or one after a rejection) is refused.
    Raises Forbidden, InvalidInput, AlreadyResolved (and what awards.record_by_rule raises).
    """
    key = _key(key)
    _check_verifier(cadre, claim)
    source = ("claim", claim.id)
    if not claim.status.can_become(SubmissionStatus.VERIFIED):
        return _already(claim, cadre, SubmissionStatus.VERIFIED, _made_under(key, source))
    _check_rule(rule, claim.household, award=True)
    if not _resolve(Claim, claim, cadre, SubmissionStatus.VERIFIED):
        return _already(claim, cadre, SubmissionStatus.VERIFIED, _made_under(key, source))
    result = awards.record_by_rule(
        household=claim.household,
        rule=rule,
        recorded_by=cadre,
        key=key,
        member=claim.member,
        note=claim.description,
        photos=list(claim.photos),
        source=source,
    )
    if isinstance(result, Transfer):
        claim.transfer_id = result.id
    db.session.flush()
    audit.record("claim.verify", cadre, claim, summary=f"{claim.household.name}: {rule.name}")
    log.info("user %s verified claim %s under rule %s", cadre.id, claim.id, rule.id)
    return claim


def _reason(reason) -> str:
    return _text(reason, MAX_REASON, _l("Please give a reason for rejection."))


def reject_claim(claim: Claim, cadre: User, reason: str) -> Claim:
    """Reject a submitted claim with a reason the villager will see. At most once.

    Raises Forbidden, InvalidInput, AlreadyResolved.
    """
    reason = _reason(reason)
    _check_verifier(cadre, claim)
    wanted = SubmissionStatus.REJECTED
    if not claim.status.can_become(wanted) or not _resolve(
        Claim, claim, cadre, wanted, reject_reason=reason
    ):
        return _already(claim, cadre, wanted, claim.reject_reason == reason)
    audit.record("claim.reject", cadre, claim, summary=f"{claim.household.name}: {reason}")
    log.info("user %s rejected claim %s: %s", cadre.id, claim.id, reason)
    return claim


def verify_report(
    report: Report,
    cadre: User,
    reward_rule: ScoringRule,
    *,
    key: str,
    offender: Household | None = None,
    deduction_rule: ScoringRule | None = None,
) -> Report:
    """Confirm a report: reward the reporter's household and optionally deduct from the offender.

    Both are recorded through awards.record_by_rule (a first offence under a graduated rule
    gives a warning instead of a deduction) and go to approval. At most once.
    Raises Forbidden, InvalidInput, AlreadyResolved (and what awards.record_by_rule raises).
    """
    key = _key(key)
    _check_verifier(cadre, report)
    source = ("report", report.id)
    reward_key, deduction_key = f"{key}:reward", f"{key}:deduction"
    if not report.status.can_become(SubmissionStatus.VERIFIED):
        return _already(report, cadre, SubmissionStatus.VERIFIED, _made_under(reward_key, source))
    reporter = report.reporter_household
    _check_rule(reward_rule, reporter, award=True)
    if (offender is None) != (deduction_rule is None):
        raise InvalidInput(
            _l("To deduct points, choose both the responsible household and a deduction rule.")
        )
    if offender is not None:
        if offender.group.village_id != report.village_id or not offender.is_active:
            raise InvalidInput(
                _l("The responsible household must be an active household of this village.")
            )
        if offender.id == reporter.id:
            raise InvalidInput(_l("The reporter's own household cannot be the one responsible."))
        if not access.covers_household(cadre, offender, VERIFIERS):
            raise Forbidden(_l("The responsible household is outside your area."))
        _check_rule(deduction_rule, offender, award=False)
    if not _resolve(
        Report,
        report,
        cadre,
        SubmissionStatus.VERIFIED,
        offender_household_id=offender.id if offender else None,
    ):
        return _already(report, cadre, SubmissionStatus.VERIFIED, _made_under(reward_key, source))
    photos = list(report.photos)
    member = report.submitted_by.member
    reward = awards.record_by_rule(
        household=reporter,
        rule=reward_rule,
        recorded_by=cadre,
        key=reward_key,
        member=member if member and member.household_id == reporter.id else None,
        note=report.what,
        photos=photos,
        source=source,
    )
    if isinstance(reward, Transfer):
        report.reward_transfer_id = reward.id
    if offender is not None:
        deduction = awards.record_by_rule(
            household=offender,
            rule=deduction_rule,
            recorded_by=cadre,
            key=deduction_key,
            note=f"{report.what} ({report.location})"[:500],
            photos=photos,
            source=source,
        )
        if isinstance(deduction, Transfer):
            report.deduction_transfer_id = deduction.id
    db.session.flush()
    audit.record("report.verify", cadre, report, summary=f"{report.what} ({report.location})")
    log.info(
        "user %s verified report %s (reward rule %s, offender %s)",
        cadre.id,
        report.id,
        reward_rule.id,
        offender.id if offender else None,
    )
    return report


def reject_report(report: Report, cadre: User, reason: str) -> Report:
    """Reject a submitted report with a reason the reporter will see. At most once.

    Raises Forbidden, InvalidInput, AlreadyResolved.
    """
    reason = _reason(reason)
    _check_verifier(cadre, report)
    wanted = SubmissionStatus.REJECTED
    if not report.status.can_become(wanted) or not _resolve(
        Report, report, cadre, wanted, reject_reason=reason
    ):
        return _already(report, cadre, wanted, report.reject_reason == reason)
    audit.record("report.reject", cadre, report, summary=f"{report.what}: {reason}")
    log.info("user %s rejected report %s: %s", cadre.id, report.id, reason)
    return report


# --- reading --------------------------------------------------------------------------


def pending_claims(user: User) -> list[Claim]:
    """Return the submitted claims the user may verify, oldest first, photos loaded."""
    return list(
        db.session.scalars(
            sa.select(Claim)
            .join(Household, Claim.household_id == Household.id)
            .join(VillagerGroup, Household.group_id == VillagerGroup.id)
            .where(
                access.household_filter(user, VERIFIERS),
                Claim.status == SubmissionStatus.SUBMITTED,
            )
            .options(selectinload(Claim.photos), selectinload(Claim.household))
            .order_by(Claim.created_at, Claim.id)
            .limit(QUEUE_LIMIT)
        )
    )


def pending_reports(user: User) -> list[Report]:
    """Return the submitted reports the user may verify, oldest first, photos loaded."""
    return list(
        db.session.scalars(
            sa.select(Report)
            .join(Household, Report.reporter_household_id == Household.id)
            .join(VillagerGroup, Household.group_id == VillagerGroup.id)
            .where(
                access.household_filter(user, VERIFIERS),
                Report.status == SubmissionStatus.SUBMITTED,
            )
            .options(selectinload(Report.photos), selectinload(Report.reporter_household))
            .order_by(Report.created_at, Report.id)
            .limit(QUEUE_LIMIT)
        )
    )


def of_household(household: Household) -> tuple[list[Claim], list[Report]]:
    """Return a household's own claims and reports, newest first, with their awards loaded."""
    claims = db.session.scalars(
        sa.select(Claim)
        .where(Claim.household_id == household.id)
        .options(selectinload(Claim.photos), selectinload(Claim.transfer))
        .order_by(Claim.created_at.desc(), Claim.id.desc())
        .limit(100)
    ).all()
    reports = db.session.scalars(
        sa.select(Report)
        .where(Report.reporter_household_id == household.id)
        .options(selectinload(Report.photos), selectinload(Report.reward_transfer))
        .order_by(Report.created_at.desc(), Report.id.desc())
        .limit(100)
    ).all()
    return list(claims), list(reports)


@dataclass(frozen=True)
class EarlierCopy:
    """Where a photo with the same content was seen before: for the duplicate flag."""

    created_at: datetime
    kind: str  #: "claim", "report", "transfer", "rating" or "" when not attached
    number: int | None


def duplicates(photos: Sequence[Photo]) -> dict[int, list[EarlierCopy]]:
    """Return, for each photo with an earlier copy in its village, where that copy was used."""
    result = {}
    for photo_id, copies in photo_service.earlier_copies_of(photos).items():
        if not copies:
            continue
        result[photo_id] = [_where(copy) for copy in copies]
    return result


def _where(photo: Photo) -> EarlierCopy:
    for kind in ("claim", "report", "transfer", "rating"):
        number = getattr(photo, f"{kind}_id")
        if number is not None:
            return EarlierCopy(photo.created_at, kind, number)
    return EarlierCopy(photo.created_at, "", None)
