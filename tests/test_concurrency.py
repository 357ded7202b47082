"""Real parallel requests: threads, each in its own app context, session and transaction.

Every thread loads what it needs, ends that read transaction (SQLite's BEGIN IMMEDIATE would
otherwise hold the write lock while it waits), meets the others at a barrier, then calls the
service with what it loaded and commits. Objects are kept loaded across that commit on purpose:
each thread then acts on a possibly stale view (status still pending, not yet reversed), so only
the guards inside the database writes can keep the outcome right, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Household, Role, Shop, Transfer, TransferKind, TransferStatus, User
from pointsmart.services import ledger
from pointsmart.services.errors import (
    AlreadyResolved,
    DomainError,
    InsufficientPoints,
    NotReversible,
)
from tests.conftest import app_config, empty_tables

pytestmark = pytest.mark.concurrency

THREADS = 20


@pytest.fixture
def app(migrated):
    """The usual test app, with a pool that holds every thread's connection at once."""
    options = {
        "pool_size": THREADS + 5,
        "max_overflow": 0,
        "pool_timeout": 60,
        "pool_pre_ping": True,
    }
    app = create_app(app_config(migrated, SQLALCHEMY_ENGINE_OPTIONS=options))
    with app.app_context():
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


@dataclass
class Outcome:
    transfer_id: int | None = None
    error: DomainError | None = None
    message: str = ""  #: in the default language (Simplified Chinese)
    message_en: str = ""


def race(app, n: int, load, act) -> list[Outcome]:
    """Run ``act(i, *load(i))`` in n threads released together; return each thread's outcome."""
    barrier = threading.Barrier(n, timeout=60)
    outcomes: list[Outcome | None] = [None] * n
    crashes: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with app.app_context():
                db.session().expire_on_commit = False
                loaded = load(i)
                db.session.commit()
                barrier.wait()
                try:
                    transfer = act(i, *loaded)
                    db.session.commit()
                    outcomes[i] = Outcome(transfer_id=transfer.id)
                except DomainError as exc:
                    db.session.rollback()
                    with force_locale("en"):
                        english = str(exc.message)
                    outcomes[i] = Outcome(error=exc, message=str(exc.message), message_en=english)
        except BaseException as exc:  # surfaced in the main thread below
            crashes.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if crashes:  # the cause, not the broken barrier it left the others at
        crashes.sort(key=lambda exc: isinstance(exc, threading.BrokenBarrierError))
        raise crashes[0]
    db.session.expire_all()
    return outcomes


def ids(**objects) -> dict[str, int]:
    """Commit the setup and return ids: threads must see committed data only."""
    result = {name: obj.id for name, obj in objects.items()}
    db.session.commit()
    return result


@pytest.fixture
def place(make):
    village = make.village()
    household = make.household(make.group(village))
    shop = make.shop(village)
    return {
        "household": household,
        "shop": shop,
        "cadre": make.staff(Role.CADRE, village),
        "committee": make.staff(Role.COMMITTEE, village),
        "committee2": make.staff(Role.COMMITTEE, village),
        "clerk": make.staff(Role.CLERK, shop),
    }


def spendable(household_id: int) -> int:
    return ledger.balance_of(db.session.get(Household, household_id)).spendable


def assert_books_clean() -> None:
    assert ledger.check() == ([], [])


def test_concurrent_redemptions_never_overdraw(app, make, place):
    make.funded(place["household"], 50)
    k = ids(household=place["household"], shop=place["shop"], clerk=place["clerk"])

    def load(i):
        household = db.session.get(Household, k["household"])
        household.group.village  # noqa: B018  (load now, before the race)
        return household, db.session.get(Shop, k["shop"]), db.session.get(User, k["clerk"])

    def act(i, household, shop, clerk):
        return ledger.redeem(
            household=household,
            shop=shop,
            points=10,
            clerk=clerk,
            key=f"sale-{i}",
            reason="兑换大米",
        )

    outcomes = race(app, THREADS, load, act)

    succeeded = [o for o in outcomes if o.error is None]
    refused = [o for o in outcomes if o.error is not None]
    assert len(succeeded) == 5
    assert len(refused) == 15
    for outcome in refused:
        assert isinstance(outcome.error, InsufficientPoints)
        assert outcome.message.startswith("积分不足")
        assert outcome.message_en == "Not enough points: the household has 0, this needs 10."
    assert spendable(k["household"]) == 0
    posted = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Transfer)
        .where(Transfer.kind == TransferKind.REDEMPTION, Transfer.status == TransferStatus.POSTED)
    )
    assert posted == 5
    assert_books_clean()


@pytest.mark.parametrize("operation", ["redeem", "record"])
def test_one_key_sent_by_many_threads_makes_one_transfer(app, make, place, operation):
    make.funded(place["household"], 50)
    k = ids(
        household=place["household"], shop=place["shop"], clerk=place["clerk"], cadre=place["cadre"]
    )
    before = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer))
    db.session.commit()

    def load(i):
        household = db.session.get(Household, k["household"])
        household.group.village  # noqa: B018
        return (
            household,
            db.session.get(Shop, k["shop"]),
            db.session.get(User, k["clerk"]),
            db.session.get(User, k["cadre"]),
        )

    def act(i, household, shop, clerk, cadre):
        if operation == "redeem":
            return ledger.redeem(
                household=household,
                shop=shop,
                points=10,
                clerk=clerk,
                key="tap-twice",
                reason="兑换大米",
            )
        return ledger.record(
            kind=TransferKind.AWARD,
            household=household,
            points=10,
            reason="清扫",
            recorded_by=cadre,
            key="tap-twice",
        )

    outcomes = race(app, 10, load, act)

    assert [o.error for o in outcomes] == [None] * 10
    assert len({o.transfer_id for o in outcomes}) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)) == before + 1
    assert spendable(k["household"]) == (40 if operation == "redeem" else 50)
    assert_books_clean()


def test_two_committee_members_approving_at_once_post_once(app, make, place):
    pending = ledger.record(
        kind=TransferKind.AWARD,
        household=place["household"],
        points=15,
        reason="植树",
        recorded_by=place["cadre"],
        key="award-1",
    )
    k = ids(
        transfer=pending, household=place["household"], a=place["committee"], b=place["committee2"]
    )

    def load(i):
        transfer = db.session.get(Transfer, k["transfer"])
        transfer.village.town  # noqa: B018
        assert transfer.status is TransferStatus.PENDING
        return transfer, db.session.get(User, k["a" if i == 0 else "b"])

    outcomes = race(app, 2, load, lambda i, transfer, approver: ledger.post(transfer, approver))

    assert sorted(type(o.error).__name__ for o in outcomes) == ["AlreadyResolved", "NoneType"]
    assert any(isinstance(o.error, AlreadyResolved) for o in outcomes)
    transfer = db.session.get(Transfer, k["transfer"])
    winner = next(i for i, o in enumerate(outcomes) if o.error is None)
    assert transfer.status is TransferStatus.POSTED
    assert transfer.approved_by_id == k["a" if winner == 0 else "b"]
    assert ledger.balance_of(db.session.get(Household, k["household"])) == ledger.Balance(15, 15)
    assert_books_clean()


def test_two_reversals_of_one_redemption_make_one(app, make, place):
    make.funded(place["household"], 50)
    sale = ledger.redeem(
        household=place["household"],
        shop=place["shop"],
        points=20,
        clerk=place["clerk"],
        key="sale-1",
        reason="兑换食用油",
    )
    k = ids(sale=sale, household=place["household"], a=place["committee"], b=place["committee2"])

    def load(i):
        transfer = db.session.get(Transfer, k["sale"])
        assert transfer.reversed_by is None
        [entry.account for entry in transfer.entries]
        transfer.village.town  # noqa: B018
        return transfer, db.session.get(User, k["a" if i == 0 else "b"])

    def act(i, transfer, actor):
        return ledger.reverse(transfer, actor, "顾客退货", key=f"undo-{i}")

    outcomes = race(app, 2, load, act)

    assert sorted(type(o.error).__name__ for o in outcomes) == ["NoneType", "NotReversible"]
    assert any(isinstance(o.error, NotReversible) for o in outcomes)
    reversals = db.session.scalars(
        sa.select(Transfer).where(Transfer.reverses_id == k["sale"])
    ).all()
    assert [r.id for r in reversals] == [o.transfer_id for o in outcomes if o.error is None]
    assert spendable(k["household"]) == 50
    assert_books_clean()


def test_clearing_and_deductions_posted_at_once_do_not_deadlock(app, make, place):
    """Clearing locks the household's account and the village sink in id order, as postings do."""
    make.funded(place["household"], 100)
    deductions = [
        ledger.record(
            kind=TransferKind.DEDUCTION,
            household=place["household"],
            points=1,
            reason="乱扔垃圾",
            recorded_by=place["cadre"],
            key=f"deduct-{i}",
        )
        for i in range(THREADS // 2)
    ]
    k = ids(household=place["household"], committee=place["committee"])
    pending_ids = [d.id for d in deductions]
    db.session.commit()

    def load(i):
        household = db.session.get(Household, k["household"])
        household.group.village  # noqa: B018
        transfer = db.session.get(Transfer, pending_ids[i // 2]) if i % 2 else None
        return household, transfer, db.session.get(User, k["committee"])

    def act(i, household, transfer, committee):
        if transfer is not None:
            return ledger.post(transfer, committee)
        cleared = ledger.clear(household, f"clear-{i}", "年度清零", committee)
        return cleared or SimpleNamespace(id=None)  # nothing left to clear

    # A deadlock would surface here as a database error from a thread, not as a refusal.
    outcomes = race(app, THREADS, load, act)

    clearings = [o for i, o in enumerate(outcomes) if i % 2 == 0 and o.transfer_id]
    assert len(clearings) == 1
    assert spendable(k["household"]) <= 0
    assert_books_clean()
