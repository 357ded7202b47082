"""The scoring-rule catalogue: checks on every field, versions, withdrawal, town templates, scope."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from datetime import date, datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import (
    Category,
    LimitPeriod,
    Role,
    ScoringRule,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import ledger, rules
from pointsmart.services.errors import Forbidden, InvalidInput, NotFound
from pointsmart.services.rules import RuleData
from pointsmart.timeutil import LOCAL_TZ


@pytest.fixture
def w(make):
    """A town with two villages, another town with one; committee, cadre and admins; committed."""
    town = make.town()
    village = make.village(town)
    neighbour = make.village(town)
    far_town = make.town()
    far_village = make.village(far_town)
    w = SimpleNamespace(
        town=town,
        village=village,
        neighbour=neighbour,
        far_town=far_town,
        far_village=far_village,
        household=make.household(make.group(village)),
        committee=make.staff(Role.COMMITTEE, village),
        committee2=make.staff(Role.COMMITTEE, village),
        cadre=make.staff(Role.CADRE, village),
        neighbour_committee=make.staff(Role.COMMITTEE, neighbour),
        admin=make.staff(Role.ADMIN, town),
        far_admin=make.staff(Role.ADMIN, far_town),
    )
    db.session.commit()
    return w


def sorting(**changes) -> RuleData:
    data = RuleData("垃圾分类合格", Category.WASTE_SORTING, 5, 1, LimitPeriod.DAY)
    return dataclasses.replace(data, **changes)


def littering(**changes) -> RuleData:
    data = RuleData("乱倒垃圾", Category.SANITATION, -10, 10, LimitPeriod.MONTH, warning_first=True)
    return dataclasses.replace(data, **changes)


def count_rules() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(ScoringRule))


def snapshot():
    return db.session.execute(
        sa.select(
            ScoringRule.id, ScoringRule.name, ScoringRule.points, ScoringRule.is_current
        ).order_by(ScoringRule.id)
    ).all()


@contextmanager
def refused(error, message: str | None = None):
    """Expect ``error`` (with ``message`` in English, if given); then nothing may have changed."""
    db.session.commit()
    before = snapshot()
    with pytest.raises(error) as info:
        yield info
    db.session.rollback()
    assert snapshot() == before
    if message is not None:
        from flask_babel import force_locale

        with force_locale("en"):
            assert str(info.value.message) == message


# --- creating -------------------------------------------------------------------------------


def test_a_committee_member_adds_a_rule_with_every_field(w):
    data = RuleData(
        "  植树造林  ",
        Category.TREE_PLANTING,
        15,
        2,
        LimitPeriod.MONTH,
        photo_required=True,
        active_from=date(2026, 3, 1),
        active_until=date(2026, 4, 30),
    )
    rule = rules.create(data, w.committee, village=w.village)
    db.session.commit()

    stored = db.session.get(ScoringRule, rule.id)
    assert (stored.name, stored.category, stored.points) == ("植树造林", Category.TREE_PLANTING, 15)
    assert (stored.limit_count, stored.limit_period) == (2, LimitPeriod.MONTH)
    assert stored.photo_required and not stored.warning_first
    assert (stored.active_from, stored.active_until) == (date(2026, 3, 1), date(2026, 4, 30))
    assert (stored.village_id, stored.town_id) == (w.village.id, None)
    assert (stored.version, stored.is_current, stored.created_by_id) == (1, True, w.committee.id)
    assert data.name == "  植树造林  ", "the caller's data is not altered"


def test_a_graduated_deduction_and_category_given_by_value(w):
    rule = rules.create(littering(category="sanitation"), w.committee, village=w.village)
    assert rule.category is Category.SANITATION
    assert rule.is_deduction and rule.warning_first


BAD_FIELDS = [
    ({"name": ""}, "The rule name must be 1 to 60 characters."),
    ({"name": "   "}, "The rule name must be 1 to 60 characters."),
    ({"name": "名" * 61}, "The rule name must be 1 to 60 characters."),
    ({"name": None}, "The rule name must be 1 to 60 characters."),
    ({"category": "gardening"}, "Please choose one of the categories."),
    ({"points": 0}, "Points must be a whole number other than zero."),
    ({"points": True}, "Points must be a whole number other than zero."),
    ({"points": 2.5}, "Points must be a whole number other than zero."),
    ({"points": "5"}, "Points must be a whole number other than zero."),
    ({"points": 10_001}, "A rule may give or take at most 10000 points."),
    ({"points": -10_001}, "A rule may give or take at most 10000 points."),
    ({"limit_period": LimitPeriod.NONE}, "A limit needs both a number of times and a period."),
    ({"limit_count": None}, "A limit needs both a number of times and a period."),
    ({"limit_period": "fortnight"}, "Please choose one of the limit periods."),
    ({"limit_count": 0}, "The limit must be between 1 and 100 times per period."),
    ({"limit_count": 101}, "The limit must be between 1 and 100 times per period."),
    ({"limit_count": True}, "The limit must be a whole number of times."),
    ({"limit_count": "1"}, "The limit must be a whole number of times."),
    ({"photo_required": "yes"}, "Please answer the yes/no questions with yes or no."),
    ({"warning_first": 1}, "Please answer the yes/no questions with yes or no."),
    (
        {"warning_first": True},
        "A first-time warning needs a deduction rule with a limit period to count offences in.",
    ),
    ({"active_from": datetime(2026, 1, 1, 8, 0)}, "Dates must be calendar days."),
    ({"active_until": "2026-01-01"}, "Dates must be calendar days."),
    (
        {"active_from": date(2026, 5, 2), "active_until": date(2026, 5, 1)},
        "The rule cannot end before it starts.",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD_FIELDS, ids=lambda v: str(v)[:40])
def test_every_field_is_checked_and_a_bad_rule_changes_nothing(w, changes, message):
    rules.create(sorting(name="已有的细则"), w.committee, village=w.village)
    with refused(InvalidInput, message):
        rules.create(sorting(**changes), w.committee, village=w.village)


def test_a_warning_first_deduction_needs_a_limit_period(w):
    with refused(
        InvalidInput,
        "A first-time warning needs a deduction rule with a limit period to count offences in.",
    ):
        rules.create(
            littering(limit_count=None, limit_period=LimitPeriod.NONE),
            w.committee,
            village=w.village,
        )


def test_two_current_rules_of_a_catalogue_cannot_share_a_name(w):
    rules.create(sorting(), w.committee, village=w.village)
    with refused(InvalidInput, "The catalogue already has a rule called 垃圾分类合格."):
        rules.create(sorting(name=" 垃圾分类合格 ", points=8), w.committee, village=w.village)
    # Another village's catalogue, and the town's templates, are separate.
    rules.create(sorting(), w.neighbour_committee, village=w.neighbour)
    rules.create(sorting(), w.admin, town=w.town)


@pytest.mark.parametrize("who", ["neighbour_committee", "cadre", "admin", "far_admin"])
def test_only_the_villages_committee_adds_village_rules(w, who):
    with refused(Forbidden):
        rules.create(sorting(), getattr(w, who), village=w.village)


@pytest.mark.parametrize("who", ["far_admin", "committee"])
def test_only_the_towns_administrators_add_templates(w, who):
    with refused(Forbidden):
        rules.create(sorting(), getattr(w, who), town=w.town)


def test_a_rule_has_exactly_one_owner(w):
    with pytest.raises(ValueError):
        rules.create(sorting(), w.admin, village=w.far_village, town=w.town)
    with pytest.raises(ValueError):
        rules.create(sorting(), w.admin)


# --- versions ---------------------------------------------------------------------------------


def record_under(w, rule, key):
    return ledger.record(
        kind=TransferKind.DEDUCTION if rule.is_deduction else TransferKind.AWARD,
        household=w.household,
        points=abs(rule.points),
        reason=rule.name,
        category=rule.category,
        recorded_by=w.cadre,
        key=key,
        rule=rule,
    )


def test_editing_publishes_a_new_version_and_past_awards_keep_theirs(w):
    v1 = rules.create(sorting(), w.committee, village=w.village)
    posted = ledger.post(record_under(w, v1, "before-1"), w.committee)
    pending = record_under(w, v1, "before-2")
    db.session.commit()

    v2 = rules.revise(v1, sorting(points=8, photo_required=True), w.committee2)
    db.session.commit()

    assert (v2.family, v2.version, v2.points, v2.photo_required) == (v1.family, 2, 8, True)
    assert v2.is_current and not db.session.get(ScoringRule, v1.id).is_current
    assert v2.created_by_id == w.committee2.id
    assert [r.id for r in rules.catalogue(village=w.village)] == [v2.id]
    assert [r.version for r in rules.versions(v1)] == [2, 1]
    db.session.expire_all()
    for transfer in (posted, pending):
        again = db.session.get(Transfer, transfer.id)
        assert (again.rule_id, again.amount) == (v1.id, 5)
    assert ledger.balance_of(w.household) == ledger.Balance(5, 5)
    # Approving the pending one later still posts the points of its version.
    ledger.post(db.session.get(Transfer, pending.id), w.committee)
    assert ledger.balance_of(w.household) == ledger.Balance(10, 10)
    assert record_under(w, v2, "after").amount == 8


def test_an_unchanged_form_publishes_no_version(w):
    v1 = rules.create(sorting(), w.committee, village=w.village)
    db.session.commit()
    assert rules.revise(v1, sorting(name=" 垃圾分类合格"), w.committee).id == v1.id
    assert count_rules() == 1 and v1.is_current


def test_an_old_or_withdrawn_version_cannot_be_edited(w):
    v1 = rules.create(sorting(), w.committee, village=w.village)
    v2 = rules.revise(v1, sorting(points=6), w.committee)
    with refused(InvalidInput, "This rule has been replaced; edit its newest version."):
        rules.revise(v1, sorting(points=7), w.committee)
    rules.withdraw(v2, w.committee)
    with refused(InvalidInput, "This rule has been withdrawn."):
        rules.revise(v2, sorting(points=7), w.committee)


def test_a_bad_edit_changes_nothing(w):
    v1 = rules.create(sorting(), w.committee, village=w.village)
    rules.create(littering(), w.committee, village=w.village)
    with refused(InvalidInput, "Points must be a whole number other than zero."):
        rules.revise(v1, sorting(points=0), w.committee)
    with refused(InvalidInput, "The catalogue already has a rule called 乱倒垃圾."):
        rules.revise(v1, sorting(name="乱倒垃圾"), w.committee)


@pytest.mark.parametrize("who", ["neighbour_committee", "cadre", "admin"])
def test_only_the_villages_committee_edits_its_rules(w, who):
    v1 = rules.create(sorting(), w.committee, village=w.village)
    with refused(Forbidden):
        rules.revise(v1, sorting(points=9), getattr(w, who))
    with refused(Forbidden):
        rules.withdraw(v1, getattr(w, who))


# --- withdrawing --------------------------------------------------------------------------------


def test_a_withdrawn_rule_leaves_the_catalogue_and_its_awards_stay(w):
    rule = rules.create(sorting(), w.committee, village=w.village)
    transfer = ledger.post(record_under(w, rule, "given"), w.committee)
    db.session.commit()

    assert rules.withdraw(rule, w.committee2).id == rule.id
    db.session.commit()

    assert rules.catalogue(village=w.village) == []
    assert [r.id for r in rules.withdrawn(village=w.village)] == [rule.id]
    assert not rule.is_active_on(date.today())
    again = db.session.get(Transfer, transfer.id)
    assert (again.status, again.rule_id, again.amount) == (TransferStatus.POSTED, rule.id, 5)
    assert ledger.balance_of(w.household) == ledger.Balance(5, 5)
    # A double tap changes nothing; an old version is pointed to the newest.
    assert rules.withdraw(rule, w.committee).id == rule.id
    assert count_rules() == 1


def test_withdrawing_an_old_version_is_refused(w):
    v1 = rules.create(sorting(), w.committee, village=w.village)
    rules.revise(v1, sorting(points=6), w.committee)
    with refused(InvalidInput, "This rule has been replaced; withdraw its newest version."):
        rules.withdraw(v1, w.committee)


def test_the_name_of_a_withdrawn_rule_can_be_used_again(w):
    old = rules.create(sorting(), w.committee, village=w.village)
    rules.withdraw(old, w.committee)
    new = rules.create(sorting(points=3), w.committee, village=w.village)
    assert new.family != old.family
    assert [r.id for r in rules.catalogue(village=w.village)] == [new.id]


# --- town templates -------------------------------------------------------------------------------


def test_the_town_administrator_keeps_templates(w):
    template = rules.create(sorting(), w.admin, town=w.town)
    v2 = rules.revise(template, sorting(points=6), w.admin)
    assert (v2.town_id, v2.village_id, v2.version) == (w.town.id, None, 2)
    rules.withdraw(v2, w.admin)
    assert rules.catalogue(town=w.town) == []


@pytest.mark.parametrize("who", ["far_admin", "committee"])
def test_another_town_or_a_committee_cannot_touch_templates(w, who):
    template = rules.create(sorting(), w.admin, town=w.town)
    with refused(Forbidden):
        rules.revise(template, sorting(points=6), getattr(w, who))
    with refused(Forbidden):
        rules.withdraw(template, getattr(w, who))


def test_copying_templates_skips_names_the_village_has(w):
    rules.create(sorting(), w.admin, town=w.town)
    rules.create(littering(), w.admin, town=w.town)
    old = rules.create(RuleData("植树", Category.TREE_PLANTING, 10), w.admin, town=w.town)
    rules.revise(
        old, RuleData("植树造林", Category.TREE_PLANTING, 15, photo_required=True), w.admin
    )
    gone = rules.create(RuleData("旧细则", Category.OTHER, 1), w.admin, town=w.town)
    rules.withdraw(gone, w.admin)
    own = rules.create(sorting(points=3), w.committee, village=w.village)
    db.session.commit()

    copied = rules.copy_templates(w.town, w.village, w.committee)
    db.session.commit()

    assert sorted(r.name for r in copied) == ["乱倒垃圾", "植树造林"]
    catalogue = {r.name: r for r in rules.catalogue(village=w.village)}
    assert set(catalogue) == {"垃圾分类合格", "乱倒垃圾", "植树造林"}
    assert catalogue["垃圾分类合格"].id == own.id and own.points == 3
    tree = catalogue["植树造林"]
    assert (tree.points, tree.photo_required, tree.version) == (15, True, 1)
    assert (tree.village_id, tree.town_id, tree.created_by_id) == (
        w.village.id,
        None,
        w.committee.id,
    )
    litter = catalogue["乱倒垃圾"]
    assert (litter.points, litter.limit_count, litter.limit_period) == (-10, 10, LimitPeriod.MONTH)
    assert litter.warning_first
    # A copy is the village's own: the template's family is not shared.
    assert litter.family not in {t.family for t in rules.catalogue(town=w.town)}
    # Copying again adds nothing.
    assert rules.copy_templates(w.town, w.village, w.committee) == []


def test_copying_is_for_the_villages_committee_and_its_own_town(w):
    rules.create(sorting(), w.admin, town=w.town)
    rules.create(sorting(), w.far_admin, town=w.far_town)
    db.session.commit()
    for who in (w.neighbour_committee, w.cadre, w.admin):
        with refused(Forbidden):
            rules.copy_templates(w.town, w.village, who)
    with refused(Forbidden):
        rules.copy_templates(w.far_town, w.village, w.committee)
    assert rules.catalogue(village=w.village) == []


# --- reading ------------------------------------------------------------------------------------


def test_the_catalogue_lists_awards_first_then_deductions(w):
    rules.create(littering(), w.committee, village=w.village)
    rules.create(sorting(), w.committee, village=w.village)
    rules.create(RuleData("焚烧秸秆", Category.OTHER, -20), w.committee, village=w.village)
    rules.create(RuleData("志愿服务", Category.VOLUNTEERING, 8), w.committee, village=w.village)
    points = [r.points for r in rules.catalogue(village=w.village)]
    assert points[:2] in ([5, 8], [8, 5]) and sorted(points[2:]) == [-20, -10]


def test_a_rule_of_another_village_is_not_found(w):
    ours = rules.create(sorting(), w.committee, village=w.village)
    theirs = rules.create(sorting(), w.neighbour_committee, village=w.neighbour)
    template = rules.create(sorting(), w.admin, town=w.town)
    assert rules.get_village_rule(ours.id, w.village).id == ours.id
    for rule_id in (theirs.id, template.id, ours.id + 1000, str(ours.id), None, True):
        with pytest.raises(NotFound):
            rules.get_village_rule(rule_id, w.village)


@pytest.mark.parametrize(
    ("period", "day", "start", "end"),
    [
        (LimitPeriod.DAY, date(2026, 2, 28), date(2026, 2, 28), date(2026, 3, 1)),
        (LimitPeriod.WEEK, date(2026, 5, 14), date(2026, 5, 11), date(2026, 5, 18)),
        (LimitPeriod.MONTH, date(2026, 12, 31), date(2026, 12, 1), date(2027, 1, 1)),
        (LimitPeriod.QUARTER, date(2026, 11, 5), date(2026, 10, 1), date(2027, 1, 1)),
        (LimitPeriod.QUARTER, date(2026, 1, 1), date(2026, 1, 1), date(2026, 4, 1)),
        (LimitPeriod.YEAR, date(2026, 7, 1), date(2026, 1, 1), date(2027, 1, 1)),
    ],
)
def test_period_bounds_are_local_days(period, day, start, end):
    assert rules.period_bounds(period, day) == (
        datetime.combine(start, datetime.min.time(), tzinfo=LOCAL_TZ),
        datetime.combine(end, datetime.min.time(), tzinfo=LOCAL_TZ),
    )
