"""Inspection rounds: opened for a covered group, submitted once, all or nothing."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from sqlalchemy.orm.attributes import set_committed_value

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    Category,
    InspectionRound,
    LimitPeriod,
    Mark,
    Role,
    RoundMark,
    RoundStatus,
    RuleWarning,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
)
from pointsmart.services import awards, ledger, places, rounds, rules
from pointsmart.services.errors import Forbidden, InvalidInput
from pointsmart.services.rounds import Choice, RowRefused
from tests.conftest import app_config, empty_tables
from tests.test_concurrency import race

THREADS = 6
PASS, FAIL, ABSENT, RULE = Mark.PASS, Mark.FAIL, Mark.ABSENT, Mark.RULE


@pytest.fixture
def app(migrated):
    """The usual test app, with a pool that holds every racing thread's connection at once."""
    options = {"pool_size": THREADS + 5, "max_overflow": 0, "pool_timeout": 60}
    app = create_app(app_config(migrated, SQLALCHEMY_ENGINE_OPTIONS=options))
    with app.app_context():
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


@pytest.fixture(autouse=True)
def books_stay_clean(app):
    yield
    db.session.rollback()
    assert ledger.check() == ([], [])


_names = itertools.count(1)


def rule(w, points, *, village=None, committee=None, **extra):
    data = rules.RuleData(f"巡查细则{next(_names)}", Category.WASTE_SORTING, points, **extra)
    made = rules.create(data, committee or w.committee, village=village or w.village)
    db.session.commit()
    return made


@pytest.fixture
def w(make):
    """A village with a group of three households (and an inactive one), a second group,
    the group's cadre, a cadre of the other group, a committee member; a far village."""
    village = make.village()
    group = make.group(village, "一组")
    other_group = make.group(village, "二组")
    households = [places.create_household(group, str(n), f"户{n}") for n in (1, 2, 3)]
    gone = places.create_household(group, "9", "已迁出")
    gone.is_active = False
    elsewhere = make.village(village.town)
    world = SimpleNamespace(
        village=village,
        group=group,
        other_group=other_group,
        households=households,
        gone=gone,
        cadre=make.staff(Role.CADRE, group),
        village_cadre=make.staff(Role.CADRE, village),
        other_cadre=make.staff(Role.CADRE, other_group),
        committee=make.staff(Role.COMMITTEE, village),
        elsewhere=elsewhere,
        far_cadre=make.staff(Role.CADRE, elsewhere),
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
    )
    db.session.commit()
    world.good = rule(world, 5, limit_count=1, limit_period=LimitPeriod.WEEK)
    world.bad = rule(world, -3)
    world.extra = rule(world, 8)
    return world


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot():
    return (
        dict(db.session.execute(sa.select(Transfer.id, Transfer.status)).all()),
        count(RuleWarning),
        count(RoundMark),
        dict(db.session.execute(sa.select(InspectionRound.id, InspectionRound.status)).all()),
        dict(db.session.execute(sa.select(Account.id, Account.balance)).all()),
    )


@contextmanager
def refused(error, says: str | None = None):
    """Expect ``error`` (with an English message containing ``says``); nothing may change."""
    db.session.commit()
    before = snapshot()
    with pytest.raises(error) as info:
        yield info
    if says is not None:
        with force_locale("en"):
            assert says in str(info.value.message), str(info.value.message)
    db.session.rollback()
    assert snapshot() == before


def open_round(w, by=None, **extra):
    extra.setdefault("pass_rule", w.good)
    extra.setdefault("fail_rule", w.bad)
    round_ = rounds.open_round(w.group, by or w.cadre, extra.pop("title", "垃圾分类检查"), **extra)
    db.session.commit()
    return round_


def choose(w, *marks) -> dict[int, Choice]:
    """One choice per household of the group, in house-number order."""
    return {
        h.id: m if isinstance(m, Choice) else Choice(m)
        for h, m in zip(w.households, marks, strict=True)
    }


# --- opening ----------------------------------------------------------------------------------


def test_a_cadre_opens_a_round_for_their_group(w):
    round_ = open_round(w)

    assert round_.status is RoundStatus.OPEN
    assert (round_.group_id, round_.opened_by_id) == (w.group.id, w.cadre.id)
    assert (round_.pass_rule_id, round_.fail_rule_id) == (w.good.id, w.bad.id)
    assert [h.id for h in rounds.households_of(round_)] == [h.id for h in w.households]


def test_a_double_tapped_open_gives_the_same_round(w):
    assert open_round(w).id == open_round(w).id
    assert count(InspectionRound) == 1


@pytest.mark.parametrize("who", ["other_cadre", "far_cadre", "far_committee"])
def test_a_group_the_user_does_not_cover_is_refused(w, who):
    with refused(Forbidden, "You do not cover 一组"):
        rounds.open_round(w.group, getattr(w, who), "检查")


def test_a_village_cadre_and_a_committee_member_cover_every_group(w):
    assert rounds.open_round(w.group, w.village_cadre, "检查").id
    assert rounds.open_round(w.group, w.committee, "检查").id
    db.session.commit()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"title": " "}, "title must be 1 to 60"),
        ({"title": "长" * 61}, "title must be 1 to 60"),
        ({"pass_rule": "bad"}, "pass must be an award"),
        ({"fail_rule": "good"}, "fail must be a deduction"),
        ({"pass_rule": "far"}, "another village's catalogue"),
        ({"pass_rule": "photo"}, "needs a photo"),
        ({"pass_rule": "withdrawn"}, "not in force today"),
    ],
)
def test_bad_round_settings_are_refused(w, extra, says):
    named = {
        "good": w.good,
        "bad": w.bad,
        "far": rule(w, 5, village=w.elsewhere, committee=w.far_committee),
        "photo": rule(w, 5, photo_required=True),
        "withdrawn": rule(w, 5),
    }
    rules.withdraw(named["withdrawn"], w.committee)
    db.session.commit()
    extra = {k: named.get(v, v) if k != "title" else v for k, v in extra.items()}

    with refused(InvalidInput, says):
        open_round(w, **extra)


# --- submitting -------------------------------------------------------------------------------


def test_submitting_records_every_row_at_once(w):
    round_ = open_round(w)
    first, second, third = w.households

    round_, now = rounds.submit(round_, w.cadre, choose(w, PASS, FAIL, Choice(RULE, w.extra)))
    db.session.commit()

    assert now is True and round_.status is RoundStatus.SUBMITTED
    assert round_.submitted_by_id == w.cadre.id and round_.submitted_at is not None
    by_household = {t.household_id: t for t in db.session.scalars(sa.select(Transfer))}
    assert by_household[first.id].rule_id == w.good.id and by_household[first.id].amount == 5
    assert by_household[second.id].kind is TransferKind.DEDUCTION
    assert by_household[third.id].rule_id == w.extra.id
    for household, transfer in by_household.items():
        assert transfer.idempotency_key == f"round-{round_.id}-{household}"
        assert (transfer.source_type, transfer.source_id) == ("round", round_.id)
        assert transfer.recorded_by_id == w.cadre.id
        assert transfer.status is TransferStatus.PENDING
    assert [r.outcome for r in rounds.results(round_)] == ["awarded", "deducted", "awarded"]


def test_absent_records_nothing(w):
    round_ = open_round(w)

    round_, _now = rounds.submit(round_, w.cadre, choose(w, ABSENT, PASS, ABSENT))
    db.session.commit()

    assert count(Transfer) == 1 and count(RuleWarning) == 0
    results = rounds.results(round_)
    assert [r.outcome for r in results] == ["absent", "awarded", "absent"]
    assert results[0].transfer is None and results[0].mark is ABSENT
    assert ledger.balance_of(w.households[0]) == ledger.Balance(0, 0)


def test_an_inactive_household_is_not_in_the_round(w):
    round_ = open_round(w)

    with refused(InvalidInput, "households of this group changed"):
        rounds.submit(round_, w.cadre, {**choose(w, PASS, PASS, PASS), w.gone.id: Choice(PASS)})


def test_a_first_offence_in_a_round_is_a_warning(w):
    graduated = rule(w, -10, warning_first=True, limit_count=1, limit_period=LimitPeriod.MONTH)
    round_ = open_round(w, fail_rule=graduated)

    round_, _now = rounds.submit(round_, w.cadre, choose(w, FAIL, PASS, ABSENT))
    db.session.commit()

    assert [r.outcome for r in rounds.results(round_)] == ["warning", "awarded", "absent"]
    assert count(RuleWarning) == 1 and count(Transfer) == 1


def test_auto_approved_awards_post_in_a_round(w):
    w.village.auto_approve_max = 5
    round_ = open_round(w)

    rounds.submit(round_, w.cadre, choose(w, PASS, FAIL, ABSENT))
    db.session.commit()

    statuses = [r.transfer and r.transfer.status for r in rounds.results(round_)]
    assert statuses == [TransferStatus.POSTED, TransferStatus.PENDING, None]
    assert ledger.balance_of(w.households[0]).spendable == 5


def test_one_refused_row_lands_nothing(w):
    # The second household already had this week's 合格 award.
    awards.record_by_rule(household=w.households[1], rule=w.good, recorded_by=w.cadre, key="x")
    round_ = open_round(w)

    with refused(RowRefused, "户2 (2): Limit reached") as info:
        rounds.submit(round_, w.cadre, choose(w, PASS, PASS, FAIL))
    assert info.value.household.id == w.households[1].id
    with force_locale("en"):
        assert "Nothing in this round was recorded" in str(info.value.message)
    db.session.expire_all()
    assert db.session.get(InspectionRound, round_.id).status is RoundStatus.OPEN

    # Marked otherwise, the same round then goes through.
    round_, now = rounds.submit(round_, w.cadre, choose(w, PASS, ABSENT, FAIL))
    db.session.commit()
    assert now is True and count(Transfer) == 3


@pytest.mark.parametrize(
    ("marks", "says"),
    [
        ({0: None}, "户1 (1): Please choose pass, fail, not at home or a rule."),
        ({1: Choice(RULE)}, "户2 (2): Please choose a rule."),
    ],
)
def test_a_missing_choice_is_refused_by_household(w, marks, says):
    round_ = open_round(w)
    choices = choose(w, PASS, PASS, PASS)
    for index, choice in marks.items():
        household = w.households[index].id
        if choice is None:
            del choices[household]
        else:
            choices[household] = choice

    with refused(RowRefused, says):
        rounds.submit(round_, w.cadre, choices)


def test_pass_in_a_round_without_a_pass_rule_is_refused(w):
    round_ = open_round(w, pass_rule=None)

    with refused(RowRefused, "户1 (1): This round has no rule for pass"):
        rounds.submit(round_, w.cadre, choose(w, PASS, FAIL, FAIL))


def test_resubmitting_does_not_double(w):
    round_ = open_round(w)
    rounds.submit(round_, w.cadre, choose(w, PASS, FAIL, ABSENT))
    db.session.commit()
    before = snapshot()

    again, now = rounds.submit(round_, w.cadre, choose(w, PASS, PASS, PASS))
    db.session.commit()

    assert now is False and again.id == round_.id
    assert snapshot() == before


def test_a_stale_round_object_does_not_double_either(w):
    """A page loaded while the round was open: the guarded UPDATE, not Python, decides."""
    round_ = open_round(w)
    rounds.submit(round_, w.cadre, choose(w, PASS, FAIL, ABSENT))
    db.session.commit()
    before = snapshot()
    round_.group  # noqa: B018  (load the row again, then make its status stale)
    set_committed_value(round_, "status", RoundStatus.OPEN)

    _round, now = rounds.submit(round_, w.cadre, choose(w, PASS, PASS, PASS))
    db.session.commit()

    assert now is False
    assert snapshot() == before


@pytest.mark.parametrize("who", ["other_cadre", "far_cadre"])
def test_a_cadre_of_another_group_cannot_submit(w, who):
    round_ = open_round(w)

    with refused(Forbidden, "You do not cover 一组"):
        rounds.submit(round_, getattr(w, who), choose(w, PASS, PASS, PASS))


def test_another_cadre_of_the_group_may_submit(w):
    round_ = open_round(w)

    round_, now = rounds.submit(round_, w.village_cadre, choose(w, PASS, PASS, PASS))
    db.session.commit()

    assert now and round_.submitted_by_id == w.village_cadre.id


# --- the page's fields ------------------------------------------------------------------------


def form_for(w, *values: tuple[str, str]) -> dict[str, str]:
    form = {}
    for household, (mark, rule_id) in zip(w.households, values, strict=True):
        form[f"mark-{household.id}"] = mark
        form[f"rule-{household.id}"] = rule_id
    return form


def test_parse_choices_reads_marks_and_rules(w):
    round_ = open_round(w)
    form = form_for(w, ("pass", ""), ("", str(w.extra.id)), ("rule", str(w.bad.id)))

    choices = rounds.parse_choices(round_, form)

    first, second, third = w.households
    assert choices[first.id] == Choice(PASS)
    assert choices[second.id] == Choice(RULE, w.extra)
    assert choices[third.id] == Choice(RULE, w.bad)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (("rule", "999999"), "户3 (3): There is no such rule"),
        (("rule", "abc"), "户3 (3): There is no such rule"),
        (("rule", "far"), "户3 (3): There is no such rule"),
        (("maybe", ""), "户3 (3): Please choose"),
        (("pass", "extra"), "户3 (3): Choose either pass, fail or not at home, or a rule"),
    ],
)
def test_parse_choices_names_the_household_of_a_bad_field(w, value, says):
    far = rule(w, 5, village=w.elsewhere, committee=w.far_committee)
    round_ = open_round(w)
    mark, rule_id = value
    rule_id = {"far": str(far.id), "extra": str(w.extra.id)}.get(rule_id, rule_id)

    with refused(RowRefused, says):
        rounds.parse_choices(round_, form_for(w, ("pass", ""), ("absent", ""), (mark, rule_id)))


# --- lists ------------------------------------------------------------------------------------


def test_rounds_for_lists_open_and_recent_rounds_of_covered_groups(w, make):
    ours = open_round(w)
    done = open_round(w, title="上周检查")
    rounds.submit(done, w.cadre, choose(w, ABSENT, ABSENT, ABSENT))
    theirs = rounds.open_round(w.other_group, w.other_cadre, "二组检查")
    db.session.commit()

    assert rounds.rounds_for(w.cadre) == ([ours], [done])
    assert rounds.rounds_for(w.other_cadre) == ([theirs], [])
    open_, recent = rounds.rounds_for(w.committee)
    assert set(open_) == {ours, theirs} and recent == [done]
    assert rounds.rounds_for(w.far_cadre) == ([], [])
    assert [g.id for g in rounds.groups_for(w.cadre)] == [w.group.id]


# --- the race ---------------------------------------------------------------------------------


@pytest.mark.concurrency
def test_threads_submitting_one_round_at_once_record_one_set(app, w):
    round_ = open_round(w)
    ids = {
        "round": round_.id,
        "households": [h.id for h in w.households],
        "cadres": [w.cadre.id, w.village_cadre.id, w.committee.id],
    }
    db.session.commit()  # from here on the main thread stays off the database

    def load(i):
        round_ = db.session.get(InspectionRound, ids["round"])
        round_.group.village  # noqa: B018  (load now, before the race)
        round_.pass_rule, round_.fail_rule  # noqa: B018
        user = db.session.get(User, ids["cadres"][i % len(ids["cadres"])])
        user.grants  # noqa: B018
        return round_, user

    def act(i, round_, user):
        choices = {hid: Choice(PASS if i % 2 else FAIL) for hid in ids["households"]}
        submitted, now = rounds.submit(round_, user, choices)
        return SimpleNamespace(id=(submitted.id, now))

    outcomes = race(app, THREADS, load, act)

    assert all(o.error is None for o in outcomes)
    assert sorted(now for _id, now in (o.transfer_id for o in outcomes)) == [False] * (
        THREADS - 1
    ) + [True]
    assert count(Transfer) == 3 and count(RoundMark) == 3
    kinds = {t.kind for t in db.session.scalars(sa.select(Transfer))}
    assert len(kinds) == 1  # every row from the one submission that won
