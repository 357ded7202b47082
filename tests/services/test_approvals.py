"""Approval of awards and deductions: village settings, two approvers, separation of duties, races.

The race tests run real threads, each in its own session and transaction, on whichever database
the suite runs against (SQLite by default, PostgreSQL with POINTSMART_TEST_DATABASE_URL).
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    Approval,
    Category,
    Household,
    Role,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
    Village,
)
from pointsmart.services import awards, ledger, rules
from pointsmart.services.errors import (
    AlreadyResolved,
    DomainError,
    Forbidden,
    InvalidInput,
    SelfApproval,
)
from pointsmart.services.rules import RuleData
from tests.conftest import app_config, empty_tables

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
    """A village with a household, a cadre, four committee members; another village; committed."""
    village = make.village()
    elsewhere = make.village(village.town)
    w = SimpleNamespace(
        village=village,
        household=make.household(make.group(village)),
        cadre=make.staff(Role.CADRE, village),
        a=make.staff(Role.COMMITTEE, village),
        b=make.staff(Role.COMMITTEE, village),
        c=make.staff(Role.COMMITTEE, village),
        d=make.staff(Role.COMMITTEE, village),
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
    )
    db.session.commit()
    return w


_keys = itertools.count(1)


def record(w, points=10, *, kind=TransferKind.AWARD, by=None) -> Transfer:
    transfer = ledger.record(
        kind=kind,
        household=w.household,
        points=points,
        reason="义务保洁",
        recorded_by=by or w.cadre,
        key=f"approval-{next(_keys)}",
    )
    db.session.commit()
    return transfer


def by_rule(w, points, *, name=None) -> Transfer:
    rule = rules.create(
        RuleData(name or f"细则{points}", Category.SANITATION, points), w.a, village=w.village
    )
    transfer = awards.record_by_rule(
        household=w.household, rule=rule, recorded_by=w.cadre, key=f"rule-{next(_keys)}"
    )
    db.session.commit()
    return transfer


def balance(w) -> ledger.Balance:
    db.session.expire_all()
    return ledger.balance_of(db.session.get(Household, w.household.id))


def approvals(transfer) -> list[int]:
    return list(
        db.session.scalars(
            sa.select(Approval.user_id)
            .where(Approval.transfer_id == transfer.id)
            .order_by(Approval.id)
        )
    )


def snapshot():
    return (
        db.session.execute(sa.select(Transfer.id, Transfer.status).order_by(Transfer.id)).all(),
        db.session.execute(sa.select(Approval.transfer_id, Approval.user_id)).all(),
        db.session.execute(sa.select(Account.id, Account.balance).order_by(Account.id)).all(),
        db.session.execute(
            sa.select(Village.id, Village.auto_approve_max, Village.two_approver_min)
        ).all(),
    )


@contextmanager
def refused(error, message: str | None = None):
    """Expect ``error`` (its English message, if given); after the rollback nothing changed."""
    db.session.commit()
    before = snapshot()
    with pytest.raises(error) as info:
        yield info
    db.session.rollback()
    assert snapshot() == before
    if message is not None:
        with force_locale("en"):
            assert str(info.value.message) == message


def settings(w, auto=None, two=None) -> None:
    rules.set_approval_settings(w.village, w.a, auto_approve_max=auto, two_approver_min=two)
    db.session.commit()


# --- the village's settings -------------------------------------------------------------------


def test_settings_are_saved_and_cleared(w):
    settings(w, auto=5, two=30)
    assert (w.village.auto_approve_max, w.village.two_approver_min) == (5, 30)
    settings(w, auto=0, two=0)
    assert (w.village.auto_approve_max, w.village.two_approver_min) == (0, 0)
    settings(w)
    assert (w.village.auto_approve_max, w.village.two_approver_min) == (None, None)


@pytest.mark.parametrize(
    ("auto", "two", "message"),
    [
        (-1, None, "Auto-approval must be empty or a whole number from 0 to 10000."),
        (10_001, None, "Auto-approval must be empty or a whole number from 0 to 10000."),
        ("5", None, "Auto-approval must be empty or a whole number from 0 to 10000."),
        (True, None, "Auto-approval must be empty or a whole number from 0 to 10000."),
        (2.0, None, "Auto-approval must be empty or a whole number from 0 to 10000."),
        (
            None,
            -5,
            "The two-approver threshold must be empty or a whole number from 0 to 10000.",
        ),
        (
            None,
            10**9,
            "The two-approver threshold must be empty or a whole number from 0 to 10000.",
        ),
        (
            31,
            30,
            "Awards above 30 points need two approvers, so auto-approval cannot go above 30.",
        ),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(w, auto, two, message):
    settings(w, auto=3, two=40)
    with refused(InvalidInput, message):
        rules.set_approval_settings(w.village, w.a, auto_approve_max=auto, two_approver_min=two)


@pytest.mark.parametrize("who", ["cadre", "far_committee"])
def test_only_the_villages_committee_changes_its_settings(w, who):
    with refused(Forbidden):
        rules.set_approval_settings(
            w.village, getattr(w, who), auto_approve_max=100, two_approver_min=None
        )


# --- auto-approval ----------------------------------------------------------------------------


def test_awards_up_to_the_limit_post_at_once_without_an_approver(w):
    settings(w, auto=10)
    small = by_rule(w, 10)
    assert small.status is TransferStatus.POSTED
    assert small.approved_by_id is None and small.posted_at is not None
    assert approvals(small) == []
    assert balance(w) == ledger.Balance(10, 10)

    larger = by_rule(w, 11)
    assert larger.status is TransferStatus.PENDING
    assert balance(w) == ledger.Balance(10, 10)


def test_deductions_and_villages_without_the_setting_wait(w):
    before = by_rule(w, 1, name="未设置时")
    assert before.status is TransferStatus.PENDING
    settings(w, auto=50)
    rule = rules.create(RuleData("乱倒垃圾", Category.SANITATION, -5), w.a, village=w.village)
    deduction = awards.record_by_rule(
        household=w.household, rule=rule, recorded_by=w.cadre, key="deduct-1"
    )
    assert deduction.status is TransferStatus.PENDING


def test_no_setting_posts_an_award_that_needs_two_approvers(w):
    # Set directly, as an old database might hold it; the settings page refuses this pair.
    w.village.auto_approve_max, w.village.two_approver_min = 50, 20
    db.session.commit()
    award = by_rule(w, 30)
    assert award.status is TransferStatus.PENDING
    assert balance(w) == ledger.Balance(0, 0)


# --- one and two approvers --------------------------------------------------------------------


def test_one_approver_posts_up_to_the_threshold(w):
    settings(w, two=30)
    transfer = record(w, 30)
    assert ledger.required_approvals(transfer) == 1
    ledger.post(transfer, w.a)
    assert transfer.status is TransferStatus.POSTED
    assert transfer.approved_by_id == w.a.id and approvals(transfer) == [w.a.id]


@pytest.mark.parametrize("kind", [TransferKind.AWARD, TransferKind.DEDUCTION])
def test_above_the_threshold_two_members_must_approve(w, make, kind):
    make.funded(w.household, 100, recorder=w.cadre, approver=w.d)
    settings(w, two=30)
    transfer = record(w, 31, kind=kind)
    assert ledger.required_approvals(transfer) == 2

    ledger.post(transfer, w.a)
    db.session.commit()
    assert transfer.status is TransferStatus.PENDING
    assert approvals(transfer) == [w.a.id]
    assert balance(w) == ledger.Balance(100, 100)

    # The same member again changes nothing.
    assert ledger.post(transfer, w.a).id == transfer.id
    db.session.commit()
    assert transfer.status is TransferStatus.PENDING and approvals(transfer) == [w.a.id]

    ledger.post(transfer, w.b)
    db.session.commit()
    assert transfer.status is TransferStatus.POSTED
    assert transfer.approved_by_id == w.b.id
    assert approvals(transfer) == [w.a.id, w.b.id]
    expected = 131 if kind is TransferKind.AWARD else 69
    assert balance(w) == ledger.Balance(expected, expected)

    # Either approver tapping again gets the posted record back; a third member is refused.
    assert ledger.post(transfer, w.a).status is TransferStatus.POSTED
    assert ledger.post(transfer, w.b).status is TransferStatus.POSTED
    with refused(AlreadyResolved, "This record has already been approved; nothing was changed."):
        ledger.post(transfer, w.c)


def test_the_recorder_is_neither_approver(w):
    settings(w, two=30)
    transfer = record(w, 40, by=w.a)
    with refused(SelfApproval):
        ledger.post(transfer, w.a)
    ledger.post(transfer, w.b)
    db.session.commit()
    with refused(SelfApproval):
        ledger.post(transfer, w.a)
    assert transfer.status is TransferStatus.PENDING and approvals(transfer) == [w.b.id]
    ledger.post(transfer, w.c)
    assert transfer.status is TransferStatus.POSTED


def test_another_villages_committee_cannot_approve_or_reject(w):
    transfer = record(w, 10)
    with refused(Forbidden):
        ledger.post(transfer, w.far_committee)
    with refused(Forbidden):
        ledger.void(transfer, w.far_committee, "不对")


def test_a_half_approved_record_can_be_rejected_and_keeps_its_history(w):
    settings(w, two=30)
    transfer = record(w, 40)
    ledger.post(transfer, w.a)
    ledger.void(transfer, w.b, "照片不清楚")
    db.session.commit()
    assert transfer.status is TransferStatus.VOIDED
    assert (transfer.voided_by_id, transfer.void_reason) == (w.b.id, "照片不清楚")
    assert approvals(transfer) == [w.a.id]
    assert balance(w) == ledger.Balance(0, 0)


def test_approving_a_rejected_record_is_refused_with_a_clear_message(w):
    transfer = record(w, 10)
    ledger.void(transfer, w.a, "重复记录")
    db.session.commit()
    for member in (w.a, w.b):
        with refused(
            AlreadyResolved, "This record has already been rejected; nothing was changed."
        ):
            ledger.post(transfer, member)
    assert approvals(transfer) == []


def test_rejecting_an_approved_record_is_refused_with_a_clear_message(w):
    transfer = record(w, 10)
    ledger.post(transfer, w.a)
    with refused(AlreadyResolved, "This record has already been approved; nothing was changed."):
        ledger.void(transfer, w.b, "弄错了")


# --- races ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: TransferStatus | None = None
    error: DomainError | None = None


def race(app, n: int, load, act) -> list[Outcome]:
    """Run ``act(*load(i))`` in n threads released together; return each thread's outcome."""
    barrier = threading.Barrier(n, timeout=60)
    outcomes: list[Outcome | None] = [None] * n
    crashes: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with app.app_context():
                db.session().expire_on_commit = False
                loaded = load(i)
                db.session.commit()  # end the read transaction before waiting
                barrier.wait()
                try:
                    transfer = act(*loaded)
                    db.session.commit()
                    outcomes[i] = Outcome(status=transfer.status)
                except DomainError as exc:
                    db.session.rollback()
                    outcomes[i] = Outcome(error=exc)
        except BaseException as exc:  # surfaced in the main thread
            crashes.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if crashes:
        crashes.sort(key=lambda exc: isinstance(exc, threading.BrokenBarrierError))
        raise crashes[0]
    db.session.expire_all()
    return outcomes


def approve_in_threads(app, transfer_id: int, member_ids: list[int]) -> list[Outcome]:
    # Reading the ids opened a transaction; on SQLite it would hold the write lock.
    db.session.commit()

    def load(i):
        transfer = db.session.get(Transfer, transfer_id)
        transfer.village.town  # noqa: B018  (loaded now: each thread acts on a stale view)
        assert transfer.status is TransferStatus.PENDING
        member = db.session.get(User, member_ids[i])
        member.grants  # noqa: B018
        return transfer, member

    return race(app, len(member_ids), load, ledger.post)


def posted_once(w, transfer_id: int, points: int) -> Transfer:
    transfer = db.session.get(Transfer, transfer_id)
    assert transfer.status is TransferStatus.POSTED
    assert balance(w) == ledger.Balance(points, points)
    return transfer


concurrency = pytest.mark.concurrency


@concurrency
def test_members_approving_a_one_approver_award_at_once_post_it_once(app, w):
    transfer_id = record(w, 15).id
    members = [w.a.id, w.b.id, w.c.id, w.d.id]

    outcomes = approve_in_threads(app, transfer_id, members)

    winners = [i for i, o in enumerate(outcomes) if o.error is None]
    assert len(winners) == 1
    assert all(isinstance(o.error, AlreadyResolved) for o in outcomes if o.error is not None)
    transfer = posted_once(w, transfer_id, 15)
    assert transfer.approved_by_id == members[winners[0]]
    assert approvals(transfer) == [members[winners[0]]]


@concurrency
def test_two_members_approving_a_two_approver_award_at_once_post_it_once(app, w):
    settings(w, two=20)
    transfer_id = record(w, 25).id

    outcomes = approve_in_threads(app, transfer_id, [w.a.id, w.b.id])

    # Both approvals count, one after the other: the second one posts.
    assert [o.error for o in outcomes] == [None, None]
    assert sorted(o.status for o in outcomes) == [TransferStatus.PENDING, TransferStatus.POSTED]
    transfer = posted_once(w, transfer_id, 25)
    assert sorted(approvals(transfer)) == sorted([w.a.id, w.b.id])
    assert transfer.approved_by_id == approvals(transfer)[-1]


@concurrency
def test_second_approvals_at_once_post_a_two_approver_award_once(app, w):
    settings(w, two=20)
    transfer = record(w, 25)
    ledger.post(transfer, w.a)
    db.session.commit()
    transfer_id = transfer.id

    outcomes = approve_in_threads(app, transfer_id, [w.b.id, w.c.id, w.d.id])

    winners = [o for o in outcomes if o.error is None]
    assert [o.status for o in winners] == [TransferStatus.POSTED]
    assert all(isinstance(o.error, AlreadyResolved) for o in outcomes if o.error is not None)
    transfer = posted_once(w, transfer_id, 25)
    assert len(approvals(transfer)) == 2 and approvals(transfer)[0] == w.a.id


@concurrency
def test_one_member_tapping_twice_at_once_counts_once(app, w):
    settings(w, two=20)
    transfer_id = record(w, 25).id

    outcomes = approve_in_threads(app, transfer_id, [w.a.id, w.a.id])

    assert [o.error for o in outcomes] == [None, None]
    transfer = db.session.get(Transfer, transfer_id)
    assert transfer.status is TransferStatus.PENDING
    assert approvals(transfer) == [w.a.id]
    assert balance(w) == ledger.Balance(0, 0)
