"""The ledger's guarantees through the API under real parallel requests, on SQLite and PostgreSQL.

Each thread has its own test client, so each request runs in its own app context, session and
database connection, as under gunicorn; the threads meet at a barrier and send together. The
outcome must be the same as the services promise (tests/test_shop_concurrency.py): never
overdrawn, never oversold, one redemption per key, one posting per award, books that reconcile.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import (
    ApiRequest,
    ApiToken,
    Household,
    Item,
    Redemption,
    Role,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import api_tokens, catalogue, ledger
from pointsmart.timeutil import utcnow
from tests import test_concurrency
from tests.test_concurrency import THREADS
from tests.test_shop_concurrency import assert_shop_clean

#: The usual app with a connection pool that holds every thread's connection at once.
app = test_concurrency.app

pytestmark = pytest.mark.concurrency


def send_together(app, n: int, request) -> list:
    """Send ``request(i)`` = (method, path, kwargs) from n threads at once; return the responses."""
    barrier = threading.Barrier(n, timeout=60)
    responses: list = [None] * n
    crashes: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            client = app.test_client()  # no app context in this thread: each request opens its own
            method, path, kwargs = request(i)
            barrier.wait()
            responses[i] = client.open(path, method=method, **kwargs)
        except BaseException as exc:  # surfaced in the main thread below
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
    return responses


def count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


@pytest.fixture
def counter(make):
    """A village shop with THREADS scanner tokens, a household, a cadre and committee tokens."""
    village = make.village()
    household = make.household(make.group(village))
    shop = make.shop(village)
    admin = make.staff(Role.ADMIN, village.town)
    clerk = make.staff(Role.CLERK, shop)
    cadre = make.staff(Role.CADRE, village)
    rice = catalogue.create_item(shop, catalogue.ItemData("大米", "粮油", 10), clerk)
    catalogue.receive(rice, clerk, quantity_=1000, key="intake-rice")
    tea = catalogue.create_item(shop, catalogue.ItemData("茶叶", "其他", 10), clerk)
    scanners = [api_tokens.issue(admin, f"扫码枪{i}", Role.CLERK, shop) for i in range(THREADS)]
    committee = [api_tokens.issue(admin, f"村委{i}", Role.COMMITTEE, village) for i in range(3)]
    k = {
        "village": village.id,
        "household": household.id,
        "shop": shop.id,
        "rice": rice.id,
        "tea": tea.id,
        "scanners": [s.secret for s in scanners],
        "scanner_ids": [s.token.id for s in scanners],
        "committee": [c.secret for c in committee],
        "committee_users": [c.token.user_id for c in committee],
        "people": {"admin": admin, "clerk": clerk, "cadre": cadre},
    }
    db.session.commit()  # ids read first: reading after the commit would hold SQLite's lock
    return k


def set_up(k, make, *, points: int, tea: int) -> None:
    """Fund the household and stock the tea; commit, and leave no transaction open."""
    household = db.session.get(Household, k["household"])
    make.funded(household, points)
    if tea:
        item = db.session.get(Item, k["tea"])
        catalogue.receive(item, k["people"]["clerk"], quantity_=tea, key=f"intake-tea-{tea}")
    db.session.commit()


def headers(secret: str, key: str | None = None) -> dict[str, str]:
    result = {"Authorization": f"Bearer {secret}", "Accept-Language": "en"}
    if key is not None:
        result["Idempotency-Key"] = key
    return result


def spendable(k) -> int:
    return ledger.balance_of(db.session.get(Household, k["household"])).spendable


def stock_of(k, item: str) -> int:
    return db.session.scalar(sa.select(Item.stock).where(Item.id == k[item]))


@pytest.mark.parametrize(
    ("points", "tea", "cart", "winners", "refusal"),
    [
        (100, 0, {"rice": 3}, 3, "insufficient_points"),  # 30 a cart: three fit in 100
        (10_000, 5, {"tea": 1}, 5, "out_of_stock"),  # five units on the shelf
        (10_000, 4, {"rice": 1, "tea": 2}, 2, "out_of_stock"),  # both rows locked at once
    ],
    ids=["points", "stock", "two-items"],
)
def test_parallel_checkouts_for_one_household_never_overdraw_or_oversell(
    app, make, counter, points, tea, cart, winners, refusal
):
    k = counter
    set_up(k, make, points=points, tea=tea)
    before = {"points": points, "rice": 1000, "tea": tea}
    lines = [{"item_id": k[name], "quantity": units} for name, units in cart.items()]
    body = {"household_id": k["household"], "items": lines}
    url = f"/api/v1/shops/{k['shop']}/checkouts"

    responses = send_together(
        app,
        THREADS,
        lambda i: ("POST", url, {"json": body, "headers": headers(k["scanners"][i], f"till-{i}")}),
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: winners, 409: THREADS - winners}, [r.json for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json["error"]["code"] == refusal
    total = sum(10 * units for units in cart.values())
    assert spendable(k) == points - winners * total
    for name, units in cart.items():
        assert stock_of(k, name) == before[name] - winners * units
    assert count(Redemption) == winners
    balances = sorted(r.json["balance_after"] for r in responses if r.status_code == 201)
    assert balances == [points - total * n for n in range(winners, 0, -1)]
    assert count(ApiRequest) == winners  # refusals keep no key: a retry may try again
    assert_shop_clean(app)


@pytest.mark.parametrize("token_state", ["fresh", "recently-used"])
def test_one_key_sent_by_many_threads_redeems_once_and_answers_alike(
    app, make, counter, token_state
):
    k = counter
    set_up(k, make, points=100, tea=0)
    if token_state == "recently-used":
        # No "last used" write by the calls, so nothing but the key's own guards orders them.
        token = db.session.get(ApiToken, k["scanner_ids"][0])
        token.last_used_at = utcnow()
        db.session.commit()
    body = {"household_id": k["household"], "items": [{"item_id": k["rice"], "quantity": 2}]}
    url = f"/api/v1/shops/{k['shop']}/checkouts"

    responses = send_together(
        app,
        THREADS,
        lambda i: ("POST", url, {"json": body, "headers": headers(k["scanners"][0], "tap")}),
    )

    assert [r.status_code for r in responses] == [201] * THREADS, [r.json for r in responses]
    assert len({r.get_data() for r in responses}) == 1  # every caller gets the same body
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in responses) >= 1
    assert count(Redemption) == 1
    assert count(ApiRequest) == 1
    assert spendable(k) == 80
    assert stock_of(k, "rice") == 998
    assert_shop_clean(app)


def pending_award(k, points: int = 15) -> int:
    household = db.session.get(Household, k["household"])
    transfer = ledger.record(
        kind=TransferKind.AWARD,
        household=household,
        points=points,
        reason="植树",
        recorded_by=k["people"]["cadre"],
        key=f"award-{points}",
    )
    transfer_id = transfer.id
    db.session.commit()
    return transfer_id


def test_committee_tokens_approving_one_award_at_once_post_it_once(app, make, counter):
    k = counter
    award = pending_award(k)
    n = len(k["committee"])

    responses = send_together(
        app,
        n,
        lambda i: (
            "POST",
            f"/api/v1/transfers/{award}/approve",
            {"headers": headers(k["committee"][i])},
        ),
    )

    assert sorted(r.status_code for r in responses) == [200] + [409] * (n - 1)
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    assert responses[winner].json["status"] == "posted"
    for response in responses:
        if response.status_code == 409:
            assert response.json["error"]["code"] == "already_resolved"
    transfer = db.session.get(Transfer, award)
    assert transfer.status is TransferStatus.POSTED
    assert transfer.approved_by_id == k["committee_users"][winner]
    assert ledger.balance_of(db.session.get(Household, k["household"])) == ledger.Balance(15, 15)
    assert_shop_clean(app)


def test_one_approval_retried_at_once_with_one_key_posts_once(app, make, counter):
    k = counter
    award = pending_award(k, points=20)

    responses = send_together(
        app,
        10,
        lambda i: (
            "POST",
            f"/api/v1/transfers/{award}/approve",
            {"headers": headers(k["committee"][0], "approve-once")},
        ),
    )

    assert [r.status_code for r in responses] == [200] * 10, [r.json for r in responses]
    assert len({r.get_data() for r in responses}) == 1
    assert db.session.get(Transfer, award).status is TransferStatus.POSTED
    assert count(ApiRequest) == 1
    assert ledger.balance_of(db.session.get(Household, k["household"])) == ledger.Balance(20, 20)
    assert_shop_clean(app)
