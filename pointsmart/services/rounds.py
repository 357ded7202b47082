"""Inspection rounds (巡查): a cadre marks every household of a group on one page, submits once.

Each household is marked 合格 (pass), 不合格 (fail), absent, or with a rule of its own. The
submission lands whole or not at all: one refused row (a limit reached, a rule withdrawn)
raises and the caller rolls everything back. The round turns submitted through a guarded
UPDATE (open → submitted) that comes before any record is written, so a second submission
of the same round (a double tap, the back button, two cadres) finds the round taken and
records nothing; each record's idempotency key round-<round>-<household> backs that up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from .. import access
from ..extensions import db
from ..models import (
    Household,
    InspectionRound,
    Mark,
    RoundMark,
    RoundStatus,
    RuleWarning,
    ScoringRule,
    Transfer,
    User,
    Village,
    VillagerGroup,
)
from ..timeutil import local_today, utcnow
from . import audit, awards
from .errors import DomainError, Forbidden, InvalidInput

log = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 60
RECENT_DAYS = 30

_CHOOSE = _l("Please choose pass, fail, not at home or a rule.")


class RowRefused(InvalidInput):
    """One household's mark was refused, so nothing of the round was recorded."""

    def __init__(self, household: Household, reason):
        self.household = household
        self.reason = reason
        super().__init__(
            _l(
                "%(household)s: %(reason)s Nothing in this round was recorded.",
                household=describe(household),
                reason=reason,
            )
        )


def describe(household: Household) -> str:
    """Return how a household is named in messages: 'name (house number)'."""
    return f"{household.name} ({household.house_number})"


@dataclass(frozen=True)
class Choice:
    """What the cadre chose for one household of the round."""

    mark: Mark
    rule: ScoringRule | None = None


# --- scope ------------------------------------------------------------------------------


def covers(user: User, group: VillagerGroup) -> bool:
    """Return whether the user may open and submit rounds for this group."""
    return access.covers_group(user, group, access.RECORDERS)


def groups_for(user: User) -> list[VillagerGroup]:
    """Return the groups the user's recorder grants cover, by village and name."""
    conditions = []
    for grant in user.grants:
        if grant.role not in access.RECORDERS:
            continue
        if grant.group_id is not None:
            conditions.append(VillagerGroup.id == grant.group_id)
        elif grant.village_id is not None:
            conditions.append(VillagerGroup.village_id == grant.village_id)
        elif grant.town_id is not None:
            conditions.append(
                VillagerGroup.village_id.in_(
                    sa.select(Village.id).where(Village.town_id == grant.town_id)
                )
            )
    if not conditions:
        return []
    return list(
        db.session.scalars(
            sa.select(VillagerGroup)
            .join(Village, VillagerGroup.village_id == Village.id)
            .where(sa.or_(*conditions))
            .order_by(Village.name, VillagerGroup.name)
        )
    )


def rounds_for(user: User) -> tuple[list[InspectionRound], list[InspectionRound]]:
    """Return (open rounds, rounds submitted in the last 30 days) of the user's groups."""
    group_ids = [group.id for group in groups_for(user)]
    if not group_ids:
        return [], []
    mine = sa.select(InspectionRound).where(InspectionRound.group_id.in_(group_ids))
    open_ = db.session.scalars(
        mine.where(InspectionRound.status == RoundStatus.OPEN).order_by(
            InspectionRound.created_at.desc()
        )
    ).all()
    recent = db.session.scalars(
        mine.where(
            InspectionRound.status == RoundStatus.SUBMITTED,
            InspectionRound.submitted_at >= utcnow() - timedelta(days=RECENT_DAYS),
        )
        .order_by(InspectionRound.submitted_at.desc())
        .limit(50)
    ).all()
    return list(open_), list(recent)


# --- rules a round can use --------------------------------------------------------------


def usable_rules(village: Village) -> list[ScoringRule]:
    """Return the village's rules in force today that need no photo (a round carries none)."""
    today = local_today()
    return [
        rule
        for rule in db.session.scalars(
            sa.select(ScoringRule)
            .where(ScoringRule.village_id == village.id, ScoringRule.is_current.is_(True))
            .order_by(ScoringRule.points < 0, ScoringRule.category, ScoringRule.name)
        )
        if rule.is_active_on(today) and not rule.photo_required
    ]


def _check_round_rule(rule: ScoringRule, village: Village) -> None:
    awards.check_rule(rule, village, photo_count=1)
    if rule.photo_required:
        raise InvalidInput(
            _l(
                "%(rule)s needs a photo as evidence; record it from the household's page instead.",
                rule=rule.name,
            )
        )


# --- opening ----------------------------------------------------------------------------


def open_round(
    group: VillagerGroup,
    opened_by: User,
    title: str,
    *,
    pass_rule: ScoringRule | None = None,
    fail_rule: ScoringRule | None = None,
) -> InspectionRound:
    """Open a round for a group the user covers; return it.

    The same user opening the same round again while it is still open (a double tap)
    gets the open one back. Raises Forbidden, InvalidInput.
    """
    if not covers(opened_by, group):
        raise Forbidden(
            _l("You do not cover %(group)s; only its own cadres can inspect it.", group=group.name)
        )
    title = (title or "").strip()
    if not title or len(title) > MAX_TITLE_LENGTH:
        raise InvalidInput(_l("The title must be 1 to %(max)s characters.", max=MAX_TITLE_LENGTH))
    village = group.village
    if pass_rule is not None:
        _check_round_rule(pass_rule, village)
        if pass_rule.is_deduction:
            raise InvalidInput(_l("The rule for pass must be an award, not a deduction."))
    if fail_rule is not None:
        _check_round_rule(fail_rule, village)
        if not fail_rule.is_deduction:
            raise InvalidInput(_l("The rule for fail must be a deduction, not an award."))
    # Serialize openings of this group, so a double tap finds its twin below.
    db.session.execute(
        sa.select(VillagerGroup.id).where(VillagerGroup.id == group.id).with_for_update()
    )
    twin = db.session.scalar(
        sa.select(InspectionRound).where(
            InspectionRound.group_id == group.id,
            InspectionRound.opened_by_id == opened_by.id,
            InspectionRound.status == RoundStatus.OPEN,
            InspectionRound.title == title,
            InspectionRound.pass_rule_id == (pass_rule.id if pass_rule else None),
            InspectionRound.fail_rule_id == (fail_rule.id if fail_rule else None),
        )
    )
    if twin is not None:
        return twin
    round_ = InspectionRound(
        group=group,
        title=title,
        pass_rule=pass_rule,
        fail_rule=fail_rule,
        opened_by=opened_by,
        status=RoundStatus.OPEN,
    )
    db.session.add(round_)
    db.session.flush()
    audit.record("inspection.open", opened_by, round_, summary=f"{group.name}: {round_.title}")
    log.info("user %s opened inspection round %s for group %s", opened_by.id, round_.id, group.id)
    return round_


def households_of(round_: InspectionRound) -> list[Household]:
    """Return the active households of the round's group, in house-number order."""
    return list(
        db.session.scalars(
            sa.select(Household)
            .where(Household.group_id == round_.group_id, Household.is_active.is_(True))
            .order_by(Household.house_number, Household.id)
        )
    )


# --- reading the page's choices ---------------------------------------------------------


def field_name(household: Household) -> str:
    """Return the form field that carries a household's mark."""
    return f"mark-{household.id}"


def rule_field_name(household: Household) -> str:
    """Return the form field that carries a household's rule when marked with a rule."""
    return f"rule-{household.id}"


def parse_choices(round_: InspectionRound, form: Mapping[str, str]) -> dict[int, Choice]:
    """Read one choice per household from the round page's fields; return them by household id.

    ``mark-<id>`` is pass, fail, absent or rule; a rule picked in ``rule-<id>`` with no mark
    means "rule", with another mark it is ambiguous and refused. Raises RowRefused naming
    the household whose choice is missing or wrong.
    """
    village = round_.group.village
    choices: dict[int, Choice] = {}
    for household in households_of(round_):
        raw_mark = (form.get(field_name(household)) or "").strip()
        raw_rule = (form.get(rule_field_name(household)) or "").strip()
        if not raw_mark and raw_rule:
            raw_mark = Mark.RULE.value
        try:
            mark = Mark(raw_mark)
        except ValueError:
            raise RowRefused(household, _CHOOSE) from None
        if mark is not Mark.RULE and raw_rule:
            raise RowRefused(
                household, _l("Choose either pass, fail or not at home, or a rule, not both.")
            )
        if mark is Mark.RULE:
            rule = _village_rule(raw_rule, village)
            if rule is None:
                raise RowRefused(
                    household, _l("There is no such rule in this village's catalogue.")
                )
            choices[household.id] = Choice(mark, rule)
        else:
            choices[household.id] = Choice(mark)
    return choices


def _village_rule(raw: str, village: Village) -> ScoringRule | None:
    if not raw.isdigit() or len(raw) > 12:
        return None
    rule = db.session.get(ScoringRule, int(raw))
    return rule if rule is not None and rule.village_id == village.id else None


# --- submitting -------------------------------------------------------------------------


def submit(
    round_: InspectionRound, submitted_by: User, choices: Mapping[int, Choice]
) -> tuple[InspectionRound, bool]:
    """Record every household's mark at once; return (round, submitted now).

    A round that is already submitted comes back unchanged with False: nothing is recorded
    twice. Raises Forbidden, InvalidInput or RowRefused (naming the household); when it
    raises, the caller must roll back, and then nothing of the round has landed.
    """
    if not covers(submitted_by, round_.group):
        raise Forbidden(
            _l(
                "You do not cover %(group)s; only its own cadres can inspect it.",
                group=round_.group.name,
            )
        )
    if round_.status is RoundStatus.SUBMITTED:
        return round_, False
    rows = households_of(round_)
    known = {household.id for household in rows}
    if set(choices) - known:
        raise InvalidInput(
            _l("The households of this group changed; reload the page and mark them again.")
        )
    plan: list[tuple[Household, Choice, ScoringRule | None]] = []
    for household in rows:
        choice = choices.get(household.id)
        if choice is None:
            raise RowRefused(household, _CHOOSE)
        plan.append((household, choice, _rule_for(round_, household, choice)))
    # The guard: only one submission moves the round from open to submitted. A concurrent
    # one waits for this row and then finds nothing to update.
    moved = db.session.execute(
        sa.update(InspectionRound)
        .where(InspectionRound.id == round_.id, InspectionRound.status == RoundStatus.OPEN)
        .values(
            status=RoundStatus.SUBMITTED, submitted_by_id=submitted_by.id, submitted_at=utcnow()
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(round_)
    if moved != 1:
        log.info("user %s re-submitted round %s: nothing recorded", submitted_by.id, round_.id)
        return round_, False
    for household, choice, rule in plan:
        mark = RoundMark(round_id=round_.id, household_id=household.id, mark=choice.mark, rule=rule)
        if rule is not None:
            try:
                result = awards.record_by_rule(
                    household=household,
                    rule=rule,
                    recorded_by=submitted_by,
                    key=f"round-{round_.id}-{household.id}",
                    source=("round", round_.id),
                )
            except DomainError as error:
                raise RowRefused(household, error.message) from error
            if isinstance(result, RuleWarning):
                mark.warning_id = result.id
            else:
                mark.transfer = result
        db.session.add(mark)
    db.session.flush()
    db.session.refresh(round_)
    audit.record("inspection.submit", submitted_by, round_, summary=f"{round_.title}: {len(plan)}")
    log.info("user %s submitted round %s: %s households", submitted_by.id, round_.id, len(plan))
    return round_, True


def _rule_for(round_: InspectionRound, household: Household, choice: Choice):
    if choice.mark is Mark.ABSENT:
        return None
    if choice.mark is Mark.PASS:
        if round_.pass_rule is None:
            raise RowRefused(household, _l("This round has no rule for pass; choose a rule."))
        return round_.pass_rule
    if choice.mark is Mark.FAIL:
        if round_.fail_rule is None:
            raise RowRefused(household, _l("This round has no rule for fail; choose a rule."))
        return round_.fail_rule
    if choice.rule is None:
        raise RowRefused(household, _l("Please choose a rule."))
    return choice.rule


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowResult:
    """One household's line in a submitted round."""

    household: Household
    mark: Mark
    rule: ScoringRule | None
    transfer: Transfer | None
    warning: RuleWarning | None

    @property
    def outcome(self) -> str:
        """awarded, deducted, warning or absent."""
        if self.warning is not None:
            return "warning"
        if self.transfer is None:
            return "absent"
        return "deducted" if self.transfer.signed_points < 0 else "awarded"


def results(round_: InspectionRound) -> list[RowResult]:
    """Return each household's mark and what it recorded, in house-number order."""
    marks = db.session.scalars(
        sa.select(RoundMark)
        .join(Household, RoundMark.household_id == Household.id)
        .where(RoundMark.round_id == round_.id)
        .order_by(Household.house_number, Household.id)
    ).all()
    warning_ids = [m.warning_id for m in marks if m.warning_id is not None]
    warnings = {
        w.id: w
        for w in db.session.scalars(sa.select(RuleWarning).where(RuleWarning.id.in_(warning_ids)))
    }
    return [
        RowResult(m.household, m.mark, m.rule, m.transfer, warnings.get(m.warning_id))
        for m in marks
    ]
