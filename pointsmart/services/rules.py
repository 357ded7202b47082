"""The scoring-rule catalogue (积分细则): versions, town templates, limit periods."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from .. import access
from ..extensions import db
from ..models import Category, LimitPeriod, Role, ScoringRule, Town, User, Village
from ..timeutil import LOCAL_TZ
from .errors import Forbidden, InvalidInput, NotFound

log = logging.getLogger(__name__)

MAX_RULE_POINTS = 10_000


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


def _validated(data: RuleData) -> RuleData:
    name = (data.name or "").strip()
    if not name or len(name) > 60:
        raise InvalidInput(_l("The rule name must be 1 to 60 characters."))
    if not isinstance(data.points, int) or isinstance(data.points, bool) or data.points == 0:
        raise InvalidInput(_l("Points must be a whole number other than zero."))
    if abs(data.points) > MAX_RULE_POINTS:
        raise InvalidInput(
            _l("A rule may give or take at most %(max)s points.", max=MAX_RULE_POINTS)
        )
    if (data.limit_period is LimitPeriod.NONE) != (data.limit_count is None):
        raise InvalidInput(_l("A limit needs both a number of times and a period."))
    if data.limit_count is not None and not 1 <= data.limit_count <= 100:
        raise InvalidInput(_l("The limit must be between 1 and 100 times per period."))
    if data.warning_first and (data.points > 0 or data.limit_period is LimitPeriod.NONE):
        raise InvalidInput(
            _l(
                "A first-time warning needs a deduction rule with a limit period to count offences in."
            )
        )
    if data.active_from and data.active_until and data.active_until < data.active_from:
        raise InvalidInput(_l("The rule cannot end before it starts."))
    data.name = name
    return data


def _check_editor(user: User, village: Village | None, town: Town | None) -> None:
    if village is not None and access.covers_village(user, village, Role.COMMITTEE):
        return
    if town is not None and any(g.role is Role.ADMIN and g.town_id == town.id for g in user.grants):
        return
    raise Forbidden()


def create(
    data: RuleData, editor: User, *, village: Village | None = None, town: Town | None = None
) -> ScoringRule:
    """Add a rule to a village's catalogue (committee) or a town template (administrator).

    Raises Forbidden, InvalidInput.
    """
    _check_editor(editor, village, town)
    data = _validated(data)
    rule = ScoringRule(
        village=village, town=town if village is None else None, created_by=editor, **vars(data)
    )
    db.session.add(rule)
    db.session.flush()
    log.info("user %s created rule %s %r", editor.id, rule.id, rule.name)
    return rule


def revise(rule: ScoringRule, data: RuleData, editor: User) -> ScoringRule:
    """Publish a new version of a rule; past awards keep the version they were given with.

    Raises Forbidden, InvalidInput.
    """
    _check_editor(editor, rule.village, rule.town)
    if not rule.is_current:
        raise InvalidInput(_l("This rule has been replaced; edit its newest version."))
    data = _validated(data)
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
    log.info("user %s revised rule %s as %s", editor.id, rule.id, new.id)
    return new


def withdraw(rule: ScoringRule, editor: User) -> None:
    """Take a rule out of the catalogue; its past awards stay as they are."""
    _check_editor(editor, rule.village, rule.town)
    rule.is_current = False
    db.session.flush()
    log.info("user %s withdrew rule %s", editor.id, rule.id)


def copy_templates(town: Town, village: Village, editor: User) -> list[ScoringRule]:
    """Copy the town's current templates into a village catalogue, skipping names it has.

    Raises Forbidden.
    """
    _check_editor(editor, village, None)
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
        data = RuleData(
            name=template.name,
            category=template.category,
            points=template.points,
            limit_count=template.limit_count,
            limit_period=template.limit_period,
            photo_required=template.photo_required,
            warning_first=template.warning_first,
            active_from=template.active_from,
            active_until=template.active_until,
        )
        copied.append(create(data, editor, village=village))
    return copied


def catalogue(*, village: Village | None = None, town: Town | None = None) -> list[ScoringRule]:
    """Return the current rules of a village (or the templates of a town), awards first."""
    owner = ScoringRule.village_id == village.id if village else ScoringRule.town_id == town.id
    return list(
        db.session.scalars(
            sa.select(ScoringRule)
            .where(owner, ScoringRule.is_current.is_(True))
            .order_by(ScoringRule.points < 0, ScoringRule.category, ScoringRule.name)
        )
    )


def get_village_rule(rule_id, village: Village) -> ScoringRule:
    """Return a rule of this village's catalogue, or raise NotFound (another village's too)."""
    rule = db.session.get(ScoringRule, rule_id) if isinstance(rule_id, int) else None
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
