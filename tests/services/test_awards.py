"""Recording by rule: limits, photos, rules in force, first-time warnings, auto-approval, retries."""

from __future__ import annotations

import io
import itertools
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from PIL import Image

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    Category,
    Household,
    LimitPeriod,
    Photo,
    Role,
    RuleWarning,
    ScoringRule,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
)
from pointsmart.services import awards, ledger, photos, places, rules
from pointsmart.services.errors import Forbidden, IdempotencyConflict, InvalidInput
from pointsmart.timeutil import local_today
from tests.conftest import app_config, empty_tables
from tests.test_concurrency import race

THREADS = 8


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


@pytest.fixture
def w(make):
    """A village with two households, staff and a far village; committed."""
    village = make.village()
    group = make.group(village)
    household = make.household(group)
    places.add_member(household, "王小明")
    elsewhere = make.village(village.town)
    world = SimpleNamespace(
        village=village,
        group=group,
        household=household,
        neighbour=make.household(group),
        cadre=make.staff(Role.CADRE, village),
        cadre2=make.staff(Role.CADRE, village),
        committee=make.staff(Role.COMMITTEE, village),
        elsewhere=elsewhere,
        far_household=make.household(make.group(elsewhere)),
        far_cadre=make.staff(Role.CADRE, elsewhere),
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
    )
    db.session.commit()
    return world


_names = itertools.count(1)
_keys = itertools.count(1)


def key() -> str:
    return f"aw-{next(_keys)}"


def rule(w, points=5, *, village=None, committee=None, **extra) -> ScoringRule:
    data = rules.RuleData(f"细则{next(_names)}", Category.WASTE_SORTING, points, **extra)
    made = rules.create(data, committee or w.committee, village=village or w.village)
    db.session.commit()
    return made


def once_a(period: LimitPeriod, **extra):
    return dict(limit_count=1, limit_period=period, **extra)


def record(w, the_rule, *, household=None, by=None, **extra):
    return awards.record_by_rule(
        household=household or w.household,
        rule=the_rule,
        recorded_by=by or w.cadre,
        key=extra.pop("key", None) or key(),
        **extra,
    )


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 30)).save(out, "JPEG")
    return out.getvalue()


def photo(w, village=None) -> Photo:
    return photos.store(jpeg(), uploader=w.cadre, village=village or w.village)


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot():
    """What a refused call must leave as it was: transfers, warnings, balances, photo owners."""
    return (
        dict(db.session.execute(sa.select(Transfer.id, Transfer.status)).all()),
        count(RuleWarning),
        dict(db.session.execute(sa.select(Account.id, Account.balance)).all()),
        dict(db.session.execute(sa.select(Photo.id, Photo.transfer_id)).all()),
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
            assert says in str(info.value.message)
    db.session.rollback()
    assert snapshot() == before


def backdate(transfer_or_warning, when) -> None:
    model = type(transfer_or_warning)
    db.session.execute(
        sa.update(model).where(model.id == transfer_or_warning.id).values(created_at=when)
    )
    db.session.commit()


# --- plain recording --------------------------------------------------------------------------


def test_award_is_recorded_pending_with_its_rule_version_and_points(w):
    the_rule = rule(w, 8)
    member = w.household.members[-1]

    transfer = record(w, the_rule, member=member, note="  门前干净  ")
    db.session.commit()

    assert transfer.status is TransferStatus.PENDING
    assert transfer.kind is TransferKind.AWARD
    assert (transfer.amount, transfer.rule_id, transfer.reason) == (8, the_rule.id, the_rule.name)
    assert transfer.category is Category.WASTE_SORTING
    assert transfer.member_id == member.id and transfer.note == "门前干净"
    assert ledger.balance_of(w.household).spendable == 0  # pending moves nothing


def test_deduction_rule_records_a_pending_deduction(w):
    transfer = record(w, rule(w, -10))
    db.session.commit()

    assert transfer.kind is TransferKind.DEDUCTION and transfer.amount == 10
    assert transfer.status is TransferStatus.PENDING


# --- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("period", [LimitPeriod.DAY, LimitPeriod.WEEK, LimitPeriod.MONTH])
def test_limit_per_period_is_enforced(w, period):
    the_rule = rule(w, limit_count=2, limit_period=period)
    record(w, the_rule)
    record(w, the_rule)

    with refused(InvalidInput, "Limit reached") as info:
        record(w, the_rule)
    with force_locale("en"):
        assert f"2 time(s) per {period.value}" in str(info.value.message)
    # Another household of the village is not limited by this one's records.
    assert record(w, the_rule, household=w.neighbour).status is TransferStatus.PENDING


@pytest.mark.parametrize("period", [LimitPeriod.DAY, LimitPeriod.WEEK, LimitPeriod.MONTH])
def test_a_record_of_the_previous_period_does_not_count(w, period):
    the_rule = rule(w, **once_a(period))
    start, _end = rules.period_bounds(period, local_today())
    backdate(record(w, the_rule), start - timedelta(seconds=1))

    assert record(w, the_rule).status is TransferStatus.PENDING
    db.session.commit()


@pytest.mark.parametrize("period", [LimitPeriod.DAY, LimitPeriod.WEEK, LimitPeriod.MONTH])
def test_a_record_at_the_start_of_the_period_counts(w, period):
    the_rule = rule(w, **once_a(period))
    start, _end = rules.period_bounds(period, local_today())
    backdate(record(w, the_rule), start)

    with refused(InvalidInput, "Limit reached"):
        record(w, the_rule)


def test_limit_counts_across_rule_versions(w):
    first = rule(w, 5, **once_a(LimitPeriod.DAY))
    record(w, first)
    db.session.commit()
    data = rules.RuleData(first.name, first.category, 6, **once_a(LimitPeriod.DAY))
    second = rules.revise(first, data, w.committee)
    db.session.commit()
    assert second.id != first.id and second.family == first.family

    with refused(InvalidInput, "Limit reached"):
        record(w, second)


def test_a_rejected_award_frees_its_place(w):
    the_rule = rule(w, **once_a(LimitPeriod.DAY))
    first = record(w, the_rule)
    db.session.commit()
    ledger.void(first, w.committee, "拍错了")
    db.session.commit()

    again = record(w, the_rule)
    db.session.commit()
    assert again.status is TransferStatus.PENDING
    with refused(InvalidInput, "Limit reached"):
        record(w, the_rule)


def test_a_posted_award_keeps_its_place(w):
    the_rule = rule(w, **once_a(LimitPeriod.DAY))
    ledger.post(record(w, the_rule), w.committee)

    with refused(InvalidInput, "Limit reached"):
        record(w, the_rule)


# --- photos -----------------------------------------------------------------------------------


def test_photo_required_refuses_a_record_without_one(w):
    the_rule = rule(w, photo_required=True)

    with refused(InvalidInput, "needs a photo"):
        record(w, the_rule)


def test_photo_required_takes_the_photo_as_evidence(w):
    the_rule = rule(w, photo_required=True)
    evidence = photo(w)

    transfer = record(w, the_rule, photos=[evidence])
    db.session.commit()

    assert evidence.transfer_id == transfer.id


def test_five_photos_are_refused(w):
    the_rule = rule(w)
    five = [photo(w) for _ in range(5)]

    with refused(InvalidInput, "At most 4 photos"):
        record(w, the_rule, photos=five)


def test_a_photo_of_another_village_is_refused(w):
    the_rule = rule(w)
    far_photo = photos.store(jpeg(), uploader=w.far_cadre, village=w.elsewhere)

    with refused(InvalidInput, "another village"):
        record(w, the_rule, photos=[far_photo])


# --- which rules may be used ------------------------------------------------------------------


def test_a_rule_of_another_village_is_refused(w):
    far_rule = rule(w, village=w.elsewhere, committee=w.far_committee)

    with refused(InvalidInput, "another village's catalogue"):
        record(w, far_rule)


@pytest.mark.parametrize(
    "dates",
    [
        {"active_from": timedelta(days=1)},  # starts tomorrow
        {"active_until": timedelta(days=-1)},  # ended yesterday
        {"active_from": timedelta(days=-10), "active_until": timedelta(days=-1)},
    ],
)
def test_a_rule_outside_its_dates_is_refused(w, dates):
    today = local_today()
    the_rule = rule(w, **{name: today + delta for name, delta in dates.items()})

    with refused(InvalidInput, "not in force today"):
        record(w, the_rule)


def test_a_rule_in_its_last_day_may_be_used(w):
    the_rule = rule(w, active_from=local_today(), active_until=local_today())

    assert record(w, the_rule).status is TransferStatus.PENDING
    db.session.commit()


def test_a_withdrawn_rule_is_refused(w):
    the_rule = rule(w)
    rules.withdraw(the_rule, w.committee)
    db.session.commit()

    with refused(InvalidInput, "not in force today"):
        record(w, the_rule)


def test_an_old_version_of_a_rule_is_refused(w):
    old = rule(w, 5)
    rules.revise(old, rules.RuleData(old.name, old.category, 7), w.committee)
    db.session.commit()

    with refused(InvalidInput, "not in force today"):
        record(w, old)


# --- who and for whom -------------------------------------------------------------------------


def test_a_member_of_another_household_is_refused(w):
    stranger = w.neighbour.members[0]

    with refused(InvalidInput, "not a member of this household"):
        record(w, rule(w), member=stranger)


def test_a_member_of_another_household_is_refused_for_a_warning_too(w):
    the_rule = rule(w, -10, warning_first=True, **once_a(LimitPeriod.MONTH))

    with refused(InvalidInput, "not a member of this household"):
        record(w, the_rule, member=w.neighbour.members[0])


def test_a_cadre_of_another_village_is_refused(w):
    with refused(Forbidden):
        record(w, rule(w), by=w.far_cadre)


def test_a_cadre_of_another_group_is_refused_for_a_warning_too(w, make):
    other_group_cadre = make.staff(Role.CADRE, make.group(w.village))
    the_rule = rule(w, -10, warning_first=True, **once_a(LimitPeriod.MONTH))

    with refused(Forbidden):
        record(w, the_rule, by=other_group_cadre)


def test_an_inactive_household_is_refused(w):
    the_rule = rule(w, -10, warning_first=True, **once_a(LimitPeriod.MONTH))
    w.household.is_active = False

    with refused(InvalidInput, "no longer active"):
        record(w, the_rule)


# --- first offence: a warning -----------------------------------------------------------------


def test_first_offence_is_a_warning_and_the_second_a_deduction(w):
    the_rule = rule(w, -10, warning_first=True, **once_a(LimitPeriod.MONTH))
    transfers_before = count(Transfer)

    first = record(w, the_rule, note="第一次")
    db.session.commit()
    assert isinstance(first, RuleWarning)
    assert (first.household_id, first.rule_id, first.note) == (
        w.household.id,
        the_rule.id,
        "第一次",
    )
    assert count(Transfer) == transfers_before
    assert ledger.balance_of(w.household) == ledger.Balance(0, 0)

    second = record(w, the_rule)
    db.session.commit()
    assert isinstance(second, Transfer)
    assert second.kind is TransferKind.DEDUCTION and second.amount == 10

    with refused(InvalidInput, "Limit reached"):
        record(w, the_rule)


def test_a_warning_of_the_previous_period_does_not_count(w):
    the_rule = rule(w, -10, warning_first=True, **once_a(LimitPeriod.DAY))
    start, _end = rules.period_bounds(LimitPeriod.DAY, local_today())
    backdate(record(w, the_rule), start - timedelta(seconds=1))

    assert isinstance(record(w, the_rule), RuleWarning)
    db.session.commit()


def test_a_warning_counts_for_every_version_of_the_rule(w):
    first = rule(w, -10, warning_first=True, **once_a(LimitPeriod.MONTH))
    assert isinstance(record(w, first), RuleWarning)
    db.session.commit()
    data = rules.RuleData(
        first.name, first.category, -20, warning_first=True, **once_a(LimitPeriod.MONTH)
    )
    second = rules.revise(first, data, w.committee)
    db.session.commit()

    deduction = record(w, second)
    assert isinstance(deduction, Transfer) and deduction.amount == 20
    db.session.commit()


# --- auto-approval ----------------------------------------------------------------------------


def test_awards_up_to_the_threshold_post_at_once(w):
    w.village.auto_approve_max = 5
    db.session.commit()

    small = record(w, rule(w, 5))
    large = record(w, rule(w, 6))
    deduction = record(w, rule(w, -3))
    db.session.commit()

    assert small.status is TransferStatus.POSTED and small.approved_by_id is None
    assert large.status is TransferStatus.PENDING
    assert deduction.status is TransferStatus.PENDING  # deductions always go to the committee
    assert ledger.balance_of(w.household) == ledger.Balance(5, 5)


def test_without_a_threshold_every_award_waits(w):
    assert record(w, rule(w, 1)).status is TransferStatus.PENDING
    db.session.commit()


# --- retries ----------------------------------------------------------------------------------


def test_a_retry_returns_the_same_transfer(w):
    the_rule = rule(w, **once_a(LimitPeriod.DAY))
    first = record(w, the_rule, key="tap", note="一次")
    db.session.commit()
    before = snapshot()

    again, created = awards.record_once(
        household=w.household, rule=the_rule, recorded_by=w.cadre, key="tap", note="一次"
    )
    db.session.commit()

    assert again.id == first.id and created is False
    assert snapshot() == before  # not refused by the limit, not doubled


def test_a_retry_of_an_auto_approved_award_posts_nothing_more(w):
    w.village.auto_approve_max = 10
    the_rule = rule(w, 5)
    record(w, the_rule, key="tap")
    db.session.commit()

    record(w, the_rule, key="tap")
    db.session.commit()

    assert ledger.balance_of(w.household) == ledger.Balance(5, 5)


def test_a_retry_returns_the_same_warning(w):
    the_rule = rule(w, -10, warning_first=True, **once_a(LimitPeriod.MONTH))
    first = record(w, the_rule, key="warn-tap")
    db.session.commit()

    again, created = awards.record_once(
        household=w.household, rule=the_rule, recorded_by=w.cadre, key="warn-tap"
    )
    db.session.commit()

    assert isinstance(again, RuleWarning) and again.id == first.id and created is False
    assert count(RuleWarning) == 1 and count(Transfer) == 0


def test_a_retry_after_the_rule_was_withdrawn_still_returns_the_record(w):
    the_rule = rule(w)
    first = record(w, the_rule, key="late-tap")
    rules.withdraw(the_rule, w.committee)
    db.session.commit()

    assert record(w, the_rule, key="late-tap").id == first.id


@pytest.mark.parametrize("warning_first", [False, True])
def test_the_same_key_with_other_content_is_refused(w, warning_first):
    extra = {"warning_first": True, **once_a(LimitPeriod.MONTH)} if warning_first else {}
    the_rule = rule(w, -10, **extra)
    record(w, the_rule, key="reused")
    db.session.commit()

    with refused(IdempotencyConflict):
        record(w, the_rule, key="reused", household=w.neighbour)
    with refused(IdempotencyConflict):
        record(w, the_rule, key="reused", note="另一条")


def test_an_empty_key_is_refused(w):
    with refused(InvalidInput, "idempotency key"):
        record(w, rule(w), key=" ")


# --- races ------------------------------------------------------------------------------------


def load_for(ids):
    def load(i):
        household = db.session.get(Household, ids["household"])
        household.group.village  # noqa: B018  (load now, before the race)
        the_rule = db.session.get(ScoringRule, ids["rule"])
        user = db.session.get(User, ids["cadres"][i % len(ids["cadres"])])
        user.grants  # noqa: B018
        return household, the_rule, user

    return load


def committed_ids(w, the_rule, cadres=2) -> dict:
    """Commit and return ids; after this the main thread must not touch the database
    (on SQLite its next read would take the write lock the threads wait for)."""
    ids = {
        "household": w.household.id,
        "rule": the_rule.id,
        "cadres": [w.cadre.id, w.cadre2.id][:cadres],
    }
    db.session.commit()
    return ids


@pytest.mark.concurrency
@pytest.mark.parametrize("threads", [2, THREADS])
def test_cadres_recording_a_once_a_day_rule_at_once_make_one_award(app, w, threads):
    the_rule = rule(w, 5, **once_a(LimitPeriod.DAY))
    ids = committed_ids(w, the_rule)

    def act(i, household, the_rule, cadre):
        return record(w, the_rule, household=household, by=cadre, key=f"race-{i}")

    outcomes = race(app, threads, load_for(ids), act)

    assert sum(o.error is None for o in outcomes) == 1
    assert all("Limit reached" in o.message_en for o in outcomes if o.error is not None)
    assert count(Transfer) == 1


@pytest.mark.concurrency
def test_two_first_offences_at_once_make_one_warning_and_one_deduction(app, w):
    the_rule = rule(w, -10, warning_first=True, limit_count=5, limit_period=LimitPeriod.DAY)
    ids = committed_ids(w, the_rule)

    def act(i, household, the_rule, cadre):
        return record(w, the_rule, household=household, by=cadre, key=f"offence-{i}")

    outcomes = race(app, 2, load_for(ids), act)

    assert all(o.error is None for o in outcomes)
    assert count(RuleWarning) == 1
    assert count(Transfer) == 1


@pytest.mark.concurrency
@pytest.mark.parametrize("warning_first", [False, True])
def test_one_key_sent_by_many_threads_records_once(app, w, warning_first):
    extra = {"warning_first": True, **once_a(LimitPeriod.MONTH)} if warning_first else {}
    the_rule = rule(w, -10, **extra)
    ids = committed_ids(w, the_rule, cadres=1)

    def act(i, household, the_rule, cadre):
        return record(w, the_rule, household=household, by=cadre, key="double-tap")

    outcomes = race(app, THREADS, load_for(ids), act)

    assert all(o.error is None for o in outcomes)
    assert len({o.transfer_id for o in outcomes}) == 1
    assert count(RuleWarning) + count(Transfer) == 1
