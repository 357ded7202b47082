"""The scoring-rule catalogue (积分细则): versions, town templates, limit periods,
and the village settings that decide how awards are approved."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from .. import access
from ..extensions import db
from ..models import Category, LimitPeriod, Role, ScoringRule, Town, User, Village
from ..timeutil import LOCAL_TZ
from . import audit
from .errors import Forbidden, InvalidInput, NotFound

log = logging.getLogger(__name__)

MAX_RULE_POINTS = 10_000
MAX_NAME_LENGTH = 60
MAX_LIMIT_COUNT = 100
#: Highest value the approval thresholds accept; more is a typing mistake.
MAX_THRESHOLD = 10_000


@dataclass
class RuleData:
    """What a committee member fills in for a rule."""

    name: str
    category: Category
    points: int
    limit_count: int | None = None
    limit_period: LimitPeriod = LimitPeriod.NONE
    photo_required: bool = False
    warning_first: bool = False
    active_from: date | None = None
    active_until: date | None = None

    @classmethod
    def of(cls, rule: ScoringRule) -> RuleData:
        """Return the data of an existing rule version (to prefill a form or copy it)."""
        return cls(**{f.name: getattr(rule, f.name) for f in dataclasses.fields(cls)})


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_date(value) -> bool:
    return value is None or (isinstance(value, date) and not isinstance(value, datetime))


def _validated(data: RuleData) -> RuleData:
    """Return a checked, normalised copy of ``data``. Raises InvalidInput."""
    name = data.name.strip() if isinstance(data.name, str) else ""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(_l("The rule name must be 1 to 60 characters."))
    try:
        category = Category(data.category)
    except ValueError:
        raise InvalidInput(_l("Please choose one of the categories.")) from None
    if not _whole(data.points) or data.points == 0:
        raise InvalidInput(_l("Points must be a whole number other than zero."))
    if abs(data.points) > MAX_RULE_POINTS:
        raise InvalidInput(
            _l("A rule may give or take at most %(max)s points.", max=MAX_RULE_POINTS)
        )
    try:
        period = LimitPeriod(data.limit_period or LimitPeriod.NONE)
    except ValueError:
        raise InvalidInput(_l("Please choose one of the limit periods.")) from None
    if data.limit_count is not None and not _whole(data.limit_count):
        raise InvalidInput(_l("The limit must be a whole number of times."))
    if (period is LimitPeriod.NONE) != (data.limit_count is None):
        raise InvalidInput(_l("A limit needs both a number of times and a period."))
    if data.limit_count is not None and not 1 <= data.limit_count <= MAX_LIMIT_COUNT:
        raise InvalidInput(_l("The limit must be between 1 and 100 times per period."))
    if not isinstance(data.photo_required, bool) or not isinstance(data.warning_first, bool):
        raise InvalidInput(_l("Please answer the yes/no questions with yes or no."))
    if data.warning_first and (data.points > 0 or period is LimitPeriod.NONE):
        raise InvalidInput(
            _l(
                "A first-time warning needs a deduction rule with a limit period to count offences in."
            )
        )
    if not _is_date(data.active_from) or not _is_date(data.active_until):
        raise InvalidInput(_l("Dates must be calendar days."))
    if data.active_from and data.active_until and data.active_until < data.active_from:
        raise InvalidInput(_l("The rule cannot end before it starts."))
    return dataclasses.replace(data, name=name, category=category, limit_period=period)


def can_edit_templates(user: User, town: Town) -> bool:
    """Return whether the user administers this town (and so its rule templates)."""
    return any(g.role is Role.ADMIN and g.town_id == town.id for g in user.grants)


def _check_editor(user: User, village: Village | None, town: Town | None) -> None:
    """Village rules are the committee's; town templates the town administrators'."""
    if village is not None:
        allowed = access.covers_village(user, village, Role.COMMITTEE)
    else:
        allowed = town is not None and can_edit_templates(user, town)
    if not allowed:
        raise Forbidden()


def _lock(owner: Village | Town) -> None:
    # Serialises catalogue writers of one owner, so name checks and version numbers hold
    # with two editors at once (SQLite's BEGIN IMMEDIATE already serialises writers).
    model = type(owner)
    db.session.execute(sa.select(model.id).where(model.id == owner.id).with_for_update())


def _owner_condition(village: Village | None, town: Town | None):
    if village is not None:
        return ScoringRule.village_id == village.id
    return ScoringRule.town_id == town.id


def _check_name_free(
    name: str, village: Village | None, town: Town | None, family: str | None = None
) -> None:
    stmt = sa.select(ScoringRule.id).where(
        _owner_condition(village, town),
        ScoringRule.is_current.is_(True),
        ScoringRule.name == name,
    )
    if family is not None:
        stmt = stmt.where(ScoringRule.family != family)
    if db.session.scalar(stmt.limit(1)) is not None:
        raise InvalidInput(_l("The catalogue already has a rule called %(name)s.", name=name))


def create(
    data: RuleData, editor: User, *, village: Village | None = None, town: Town | None = None
) -> ScoringRule:
    """Add a rule to a village's catalogue (committee) or a town template (administrator).

    Give exactly one owner. Raises Forbidden, InvalidInput.
    """
    if (village is None) == (town is None):
        raise ValueError("a rule belongs to a village or to a town, not both")
    _check_editor(editor, village, town)
    data = _validated(data)
    _lock(village or town)
    _check_name_free(data.name, village, town)
    rule = ScoringRule(village=village, town=town, created_by=editor, **vars(data))
    db.session.add(rule)
    db.session.flush()
    audit.record("rule.create", editor, rule, summary=f"{rule.name} {rule.points:+d}")
    log.info("user %s created rule %s %r", editor.id, rule.id, rule.name)
    return rule


def _lock_current(rule: ScoringRule) -> None:
    """Lock the rule row and read it afresh: another editor may just have changed it."""
    db.session.execute(sa.select(ScoringRule.id).where(ScoringRule.id == rule.id).with_for_update())
    db.session.refresh(rule)


def newest_version(rule: ScoringRule) -> ScoringRule:
    """Return the newest version of the rule's family (current or withdrawn)."""
    return db.session.scalar(
        sa.select(ScoringRule)
        .where(ScoringRule.family == rule.family)
        .order_by(ScoringRule.version.desc())
        .limit(1)
    )


def _check_current(rule: ScoringRule) -> None:
    if rule.is_current:
        return
    if newest_version(rule).id != rule.id:
        raise InvalidInput(_l("This rule has been replaced; edit its newest version."))
    raise InvalidInput(_l("This rule has been withdrawn."))


def revise(rule: ScoringRule, data: RuleData, editor: User) -> ScoringRule:
    """Publish a new version of a rule; past awards keep the version they were given with.

    Returns the new version, or ``rule`` itself when nothing changed.
    Raises Forbidden, InvalidInput.
    """
    _check_editor(editor, rule.village, rule.town)
    data = _validated(data)
    _lock_current(rule)
    _check_current(rule)
    if data == RuleData.of(rule):
        return rule
    _check_name_free(data.name, rule.village, rule.town, family=rule.family)
    rule.is_current = False
    db.session.flush()
    new = ScoringRule(
        village=rule.village,
        town=rule.town,
        family=rule.family,
        version=rule.version + 1,
        created_by=editor,
        **vars(data),
    )
    db.session.add(new)
    db.session.flush()
    audit.record(
        "rule.revise",
        editor,
        new,
        summary=f"{new.name} v{new.version}",
        before=audit.snapshot(rule, "name", "points", "category", "limit_count", "limit_period"),
        after=audit.snapshot(new, "name", "points", "category", "limit_count", "limit_period"),
    )
    log.info("user %s revised rule %s as %s (v%s)", editor.id, rule.id, new.id, new.version)
    return new


def withdraw(rule: ScoringRule, editor: User) -> ScoringRule:
    """Take a rule out of the catalogue; its past awards stay as they are.

    Withdrawing a withdrawn rule again changes nothing (a double tap).
    Raises Forbidden, InvalidInput (an old version: withdraw the newest one).
    """
    _check_editor(editor, rule.village, rule.town)
    _lock_current(rule)
    if not rule.is_current:
        if newest_version(rule).id != rule.id:
            raise InvalidInput(_l("This rule has been replaced; withdraw its newest version."))
        return rule
    rule.is_current = False
    db.session.flush()
    audit.record("rule.withdraw", editor, rule, summary=rule.name)
    log.info("user %s withdrew rule %s", editor.id, rule.id)
    return rule


def copy_templates(town: Town, village: Village, editor: User) -> list[ScoringRule]:
    """Copy the town's current templates into a village catalogue, skipping names it has.

    Raises Forbidden (also for another town's templates).
    """
    _check_editor(editor, village, None)
    if town.id != village.town_id:
        raise Forbidden()
    _lock(village)
    have = set(
        db.session.scalars(
            sa.select(ScoringRule.name).where(
                ScoringRule.village_id == village.id, ScoringRule.is_current.is_(True)
            )
        )
    )
    copied = []
    for template in catalogue(town=town):
        if template.name in have:
            continue
        rule = ScoringRule(village=village, created_by=editor, **vars(RuleData.of(template)))
        db.session.add(rule)
        copied.append(rule)
    db.session.flush()
    audit.record("rule.copy_templates", editor, village, summary=f"{village.name}: {len(copied)}")
    log.info("user %s copied %s templates into village %s", editor.id, len(copied), village.id)
    return copied


def catalogue(*, village: Village | None = None, town: Town | None = None) -> list[ScoringRule]:
    """Return the current rules of a village (or the templates of a town), awards first."""
    return list(
        db.session.scalars(
            sa.select(ScoringRule)
            .where(_owner_condition(village, town), ScoringRule.is_current.is_(True))
            .order_by(ScoringRule.points < 0, ScoringRule.category, ScoringRule.name)
        )
    )


def withdrawn(*, village: Village | None = None, town: Town | None = None) -> list[ScoringRule]:
    """Return the last versions of the rules taken out of a catalogue, newest first."""
    newest = (
        sa.select(ScoringRule.family, sa.func.max(ScoringRule.version).label("version"))
        .where(_owner_condition(village, town))
        .group_by(ScoringRule.family)
        .subquery()
    )
    return list(
        db.session.scalars(
            sa.select(ScoringRule)
            .join(
                newest,
                sa.and_(
                    ScoringRule.family == newest.c.family,
                    ScoringRule.version == newest.c.version,
                ),
            )
            .where(ScoringRule.is_current.is_(False))
            .order_by(ScoringRule.created_at.desc(), ScoringRule.id.desc())
        )
    )


def versions(rule: ScoringRule) -> list[ScoringRule]:
    """Return every version of the rule's family, newest first."""
    return list(
        db.session.scalars(
            sa.select(ScoringRule)
            .where(ScoringRule.family == rule.family)
            .order_by(ScoringRule.version.desc())
        )
    )


def get_village_rule(rule_id, village: Village) -> ScoringRule:
    """Return a rule of this village's catalogue, or raise NotFound (another village's too)."""
    rule = db.session.get(ScoringRule, rule_id) if _whole(rule_id) else None
    if rule is None or rule.village_id != village.id:
        raise NotFound(_l("There is no such rule in this village's catalogue."))
    return rule


def period_bounds(period: LimitPeriod, day: date) -> tuple[datetime, datetime]:
    """Return the [start, end) instants, in UTC-aware form, of the period containing ``day``."""
    if period is LimitPeriod.DAY:
        start = day
        end = day + timedelta(days=1)
    elif period is LimitPeriod.WEEK:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period is LimitPeriod.MONTH:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    elif period is LimitPeriod.QUARTER:
        start = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
        end = (start + timedelta(days=95)).replace(day=1)
    elif period is LimitPeriod.YEAR:
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(period)
    return (
        datetime.combine(start, time.min, tzinfo=LOCAL_TZ),
        datetime.combine(end, time.min, tzinfo=LOCAL_TZ),
    )


# --- approval settings ------------------------------------------------------------------


def _threshold(value, message) -> int | None:
    if value is None:
        return None
    if not _whole(value) or not 0 <= value <= MAX_THRESHOLD:
        raise InvalidInput(message)
    return value


def set_approval_settings(
    village: Village, editor: User, *, auto_approve_max: int | None, two_approver_min: int | None
) -> Village:
    """Set which awards post without approval and which need two committee members.

    None means never. The village's committee or the town's administrators set them.
    Raises Forbidden, InvalidInput.
    """
    if not access.covers_village(editor, village, (Role.COMMITTEE, Role.ADMIN)):
        raise Forbidden()
    auto = _threshold(
        auto_approve_max,
        _l("Auto-approval must be empty or a whole number from 0 to %(max)s.", max=MAX_THRESHOLD),
    )
    two = _threshold(
        two_approver_min,
        _l(
            "The two-approver threshold must be empty or a whole number from 0 to %(max)s.",
            max=MAX_THRESHOLD,
        ),
    )
    if auto is not None and two is not None and auto > two:
        # Otherwise awards between the two would post unseen although they need two members.
        raise InvalidInput(
            _l(
                "Awards above %(two)s points need two approvers, so auto-approval cannot go above %(two)s.",
                two=two,
            )
        )
    before = audit.snapshot(village, "auto_approve_max", "two_approver_min")
    village.auto_approve_max = auto
    village.two_approver_min = two
    db.session.flush()
    audit.record(
        "settings.approval",
        editor,
        village,
        summary=village.name,
        before=before,
        after=audit.snapshot(village, "auto_approve_max", "two_approver_min"),
    )
    log.info(
        "user %s set approval settings of village %s: auto up to %s, two above %s",
        editor.id,
        village.id,
        auto,
        two,
    )
    return village
