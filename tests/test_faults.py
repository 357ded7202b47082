"""Faults in the middle of a request: nothing half-done is kept, the page says so, the app recovers.

A failure injected between the writes of a checkout or an approval leaves the books as they were
and shows the 500 page; a database that goes away answers 503 "try again" in the user's language;
once the fault is gone the next request works. On PostgreSQL the app's connections are really
terminated (pg_terminate_backend), between requests and in the middle of one.
"""

from __future__ import annotations

import html
import re
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale, gettext
from sqlalchemy.pool import NullPool

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import (
    Approval,
    HouseholdMonth,
    Item,
    Redemption,
    Role,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import api_tokens, audit, catalogue, ledger
from tests.conftest import app_config, login
from tests.test_request_safety import snapshot

CJK = re.compile(r"[\u4e00-\u9fff]")
KEY = "f" * 32
SERVER_ERROR = ("Something went wrong", "An error occurred. Nothing was saved.")
UNAVAILABLE = (
    "Service unavailable",
    "The database cannot be reached right now. Nothing was saved. Please try again in a minute.",
)


class InjectedFault(RuntimeError):
    """The failure a test injects; neither its name nor its text may reach the page."""


@pytest.fixture
def app(app):
    # As in production: an unexpected exception becomes the 500 page instead of reaching the test.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    return app


@pytest.fixture
def w(make):
    """A village shop with soap in stock, a household with 100 points and a pending award."""
    village = make.village()
    household = make.household(make.group(village))
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    cadre = make.staff(Role.CADRE, village)
    committee = make.staff(Role.COMMITTEE, village)
    make.funded(household, 100, recorder=cadre, approver=committee)
    soap = catalogue.create_item(shop, catalogue.ItemData("肥皂", "日用品", 5), clerk)
    catalogue.receive(soap, clerk, quantity_=20, key="soap-in")
    pending = [
        ledger.record(
            kind=TransferKind.AWARD,
            household=household,
            points=points,
            reason="植树",
            recorded_by=cadre,
            key=f"pending-{points}",
        )
        for points in (30, 7)
    ]
    db.session.commit()
    return SimpleNamespace(
        village=village,
        household=household,
        shop=shop,
        clerk=clerk,
        committee=committee,
        soap=soap,
        pending=pending[0],
        second=pending[1],
    )


# --- helpers --------------------------------------------------------------------------------------


def checkout_url(w) -> str:
    return f"/clerk/shops/{w.shop.id}/households/{w.household.id}/checkout"


def cart_form(w) -> dict:
    """The confirmation a clerk posts for two bars of soap (10 points) under KEY."""
    return {f"qty-{w.soap.id}": "2", "key": KEY, "total": "10"}


def approve_url(transfer) -> str:
    return f"/committee/transfers/{transfer.id}/approve"


def books(w) -> dict:
    """Everything a failed request must leave as it was."""
    db.session.expire_all()
    state = {
        "balance": ledger.balance_of(w.household),
        "stock": db.session.get(Item, w.soap.id).stock,
        "statuses": [db.session.get(Transfer, t.id).status for t in (w.pending, w.second)],
        "months": db.session.execute(
            sa.select(HouseholdMonth.household_id, HouseholdMonth.month, HouseholdMonth.points)
        ).all(),
    }
    state["rows"] = snapshot()  # every table's row count, all balances and all stock
    return state


def count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def assert_check_ledger_passes(app) -> None:
    db.session.rollback()
    result = app.test_cli_runner().invoke(args=["check-ledger"])
    assert result.exit_code == 0, result.output
    assert "Ledger OK" in result.output


def translated(app, message: str, locale: str) -> str:
    with app.test_request_context(), force_locale(locale):
        return gettext(message)


def assert_error_page(app, response, status: int, words: tuple[str, str], locale="zh_CN") -> None:
    """The response is the plain error page in the user's language, with no trace of the fault."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    page = html.unescape(response.get_data(as_text=True))
    for message in words:
        assert translated(app, message, locale) in page
    if locale == "zh_CN":
        assert CJK.search(translated(app, words[1], locale)), "the default language is Chinese"
        assert 'lang="zh-CN"' in page
    else:
        assert words[1] in page
    for leak in ("Traceback", "InjectedFault", "injected", "OperationalError", "SELECT", "UPDATE"):
        assert leak not in page


def is_write(statement: str) -> bool:
    return statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))


#: More writes than any one request makes: the walk below stops with a clear failure, not a hang.
MAX_WRITES = 60


@contextmanager
def failing_write(engine, number: int):
    """Raise InjectedFault in place of the ``number``-th INSERT, UPDATE or DELETE; yield writes."""
    writes = []

    def fail(conn, cursor, statement, parameters, context, executemany):
        if is_write(statement):
            writes.append(statement)
            if len(writes) == number:
                raise InjectedFault(f"injected before write {number}")

    sa.event.listen(engine, "before_cursor_execute", fail)
    try:
        yield writes
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail)


def fail_at_every_write(app, send, before, books_of) -> tuple[object, int]:
    """Send a request failing at its 1st write, then its 2nd, … until it has none left to fail.

    After each failure the page is the 500 page and the books are as ``before``; check-ledger
    passes. Returns the response of the request that went through, and its number of writes.
    """
    for number in range(1, MAX_WRITES + 1):
        with failing_write(db.engine, number) as writes:
            response = send()
        if len(writes) < number:  # nothing left to fail: the request went through
            return response, len(writes)
        failed_at = writes[-1].split("(")[0][:60]
        assert_error_page(app, response, 500, SERVER_ERROR)
        assert books_of() == before, f"a failure at write {number} ({failed_at}) kept something"
        assert_check_ledger_passes(app)
    pytest.fail(f"the request still wrote after {MAX_WRITES} writes")


@contextmanager
def failing_commit(monkeypatch):
    """Make the request's commit fail: every write is done, none is kept."""
    hits = []

    def fail():
        hits.append("commit")
        raise InjectedFault("injected into the commit")

    with monkeypatch.context() as patch:
        patch.setattr(db.session, "commit", fail)
        yield hits


# --- a failure between the writes of a checkout -----------------------------------------------------


def test_a_failure_between_any_two_writes_of_a_checkout_keeps_nothing(app, client, w, monkeypatch):
    login(client, w.clerk)
    before = books(w)
    with failing_commit(monkeypatch) as hits:
        response = client.post(checkout_url(w), data=cart_form(w))
        assert hits
    assert_error_page(app, response, 500, SERVER_ERROR)
    assert books(w) == before

    # The redemption row, its transfer, lines, stock movements, the stock, the points, the audit
    # entry: whichever write fails, nothing is kept. Then the clerk's retry with the same key
    # (the page's hidden key) redeems, once.
    first, writes = fail_at_every_write(
        app, lambda: client.post(checkout_url(w), data=cart_form(w)), before, lambda: books(w)
    )
    assert first.status_code == 302 and writes >= 5, (first.status_code, writes)
    again = client.post(checkout_url(w), data=cart_form(w))
    assert again.status_code == 302 and again.location == first.location
    after = books(w)
    assert count(Redemption, Redemption.idempotency_key == KEY) == 1
    assert count(Redemption) == before["rows"]["redemptions"] + 1
    assert after["balance"].spendable == before["balance"].spendable - 10
    assert after["balance"].honour == before["balance"].honour  # spending keeps the honour
    assert after["stock"] == before["stock"] - 2
    assert_check_ledger_passes(app)


# --- a failure between the writes of an approval ----------------------------------------------------


def test_a_failure_between_any_two_writes_of_an_approval_leaves_it_pending(
    app, client, w, monkeypatch
):
    login(client, w.committee)
    before = books(w)
    with failing_commit(monkeypatch) as hits:
        response = client.post(approve_url(w.pending))
        assert hits
    assert_error_page(app, response, 500, SERVER_ERROR)
    assert books(w) == before

    # The approval row, the audit entry, the status, each balance, the month's figures.
    first, writes = fail_at_every_write(
        app, lambda: client.post(approve_url(w.pending)), before, lambda: books(w)
    )
    assert first.status_code == 302 and writes >= 5, (first.status_code, writes)
    assert before["statuses"][0] is TransferStatus.PENDING
    assert client.post(approve_url(w.pending)).status_code == 302  # a double tap
    after = books(w)
    assert after["statuses"] == [TransferStatus.POSTED, TransferStatus.PENDING]
    assert after["balance"].spendable == before["balance"].spendable + 30
    assert after["balance"].honour == before["balance"].honour + 30
    assert count(Approval, Approval.transfer_id == w.pending.id) == 1
    assert_check_ledger_passes(app)


def test_a_failure_between_any_two_writes_of_a_bulk_approval_posts_none(app, client, w):
    login(client, w.committee)
    before = books(w)
    form = {"action": "approve", "transfer_id": [str(w.pending.id), str(w.second.id)]}
    first, writes = fail_at_every_write(
        app, lambda: client.post("/committee/transfers/bulk", data=form), before, lambda: books(w)
    )
    assert first.status_code == 302 and writes >= 10, (first.status_code, writes)
    assert books(w)["statuses"] == [TransferStatus.POSTED, TransferStatus.POSTED]
    assert_check_ledger_passes(app)


# --- the database goes away -------------------------------------------------------------------------


@contextmanager
def database_down(engine, match=lambda statement: True):
    """Fail every matching statement as a lost connection does, until the block ends; yield hits.

    The driver's own OperationalError is raised where the statement would be sent, so SQLAlchemy
    wraps it exactly as it wraps a real one.
    """
    dbapi = engine.dialect.loaded_dbapi
    hits = []

    def fail(conn, cursor, statement, parameters, context, executemany):
        if match(statement):
            hits.append(statement)
            raise dbapi.OperationalError("server closed the connection unexpectedly")

    sa.event.listen(engine, "before_cursor_execute", fail)
    try:
        yield hits
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail)


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_a_database_gone_at_the_first_query_gets_a_clear_503_in_the_users_language(
    app, client, w, locale
):
    login(client, w.committee)
    client.post("/language", data={"locale": locale})
    with database_down(db.engine) as hits:
        response = client.get("/committee/")
        assert hits
    assert_error_page(app, response, 503, UNAVAILABLE, locale)
    assert response.headers["Retry-After"] == "30"
    assert response.headers["Cache-Control"] == "no-store"

    assert client.get("/committee/").status_code == 200  # the fault is gone: the app works


def test_a_database_gone_at_the_first_write_of_a_checkout_keeps_nothing(app, client, w):
    login(client, w.clerk)
    before = books(w)
    with database_down(db.engine, is_write) as hits:
        response = client.post(checkout_url(w), data=cart_form(w))
        assert hits and hits[0].lstrip().upper().startswith("INSERT")
    assert_error_page(app, response, 503, UNAVAILABLE)
    assert books(w) == before
    assert_check_ledger_passes(app)

    assert client.post(checkout_url(w), data=cart_form(w)).status_code == 302
    assert count(Redemption, Redemption.idempotency_key == KEY) == 1
    assert books(w)["stock"] == before["stock"] - 2
    assert_check_ledger_passes(app)


def test_a_database_gone_in_the_middle_of_an_approval_keeps_it_pending(app, client, w):
    login(client, w.committee)
    before = books(w)
    writes = []

    def third_write(statement: str) -> bool:
        # The approval row and the audit entry are written; the status update fails.
        if is_write(statement):
            writes.append(statement)
        return len(writes) >= 3

    with database_down(db.engine, third_write) as hits:
        response = client.post(approve_url(w.pending))
        assert hits
    assert_error_page(app, response, 503, UNAVAILABLE)
    assert books(w) == before
    assert_check_ledger_passes(app)

    assert client.post(approve_url(w.pending)).status_code == 302
    assert books(w)["statuses"][0] is TransferStatus.POSTED
    assert_check_ledger_passes(app)


def test_the_api_answers_503_in_its_envelope(app, client, w, make):
    scanner = api_tokens.issue(make.staff(Role.ADMIN, w.village.town), "扫码枪", Role.CLERK, w.shop)
    db.session.commit()
    headers = {"Authorization": f"Bearer {scanner.secret}", "Accept-Language": "en"}
    url = f"/api/v1/households/{w.household.id}"
    with database_down(db.engine) as hits:
        response = client.get(url, headers=headers)
        assert hits
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json["error"] == {"code": "service_unavailable", "message": UNAVAILABLE[1]}

    assert client.get(url, headers=headers).status_code == 200


def test_a_statement_the_database_refuses_is_a_500_not_an_outage(app, client, w, monkeypatch):
    # An integrity error is a bug: it must not tell people to wait for the database.
    from sqlalchemy.exc import IntegrityError

    def refuse(*args, **kwargs):
        raise IntegrityError("INSERT …", {}, Exception("duplicate key"))

    login(client, w.committee)
    before = books(w)
    monkeypatch.setattr(audit, "record", refuse)
    response = client.post(approve_url(w.pending))
    assert_error_page(app, response, 500, SERVER_ERROR)
    assert books(w) == before


# --- PostgreSQL: the app's connections really terminated --------------------------------------------


@pytest.fixture
def postgres(app):
    """A separate connection that can terminate the app's; PostgreSQL only."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("pg_terminate_backend needs PostgreSQL (set POINTSMART_TEST_DATABASE_URL)")
    engine = sa.create_engine(db.engine.url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def served(app):
    """The app as gunicorn runs it: each request in its own app context, torn down after it.

    (The `app` fixture keeps one context open for the whole test, so its requests share one
    session that would keep a terminated connection across requests.)
    """
    served = create_app(app_config(app.config["SQLALCHEMY_DATABASE_URI"]))
    served.config["PROPAGATE_EXCEPTIONS"] = False
    yield served
    with served.app_context():
        db.engine.dispose()


def served_engine(served):
    with served.app_context():
        return db.engine


def terminate(engine, pids=None) -> list[int]:
    """Terminate the given backends (default: every client of this database but ours) and wait
    until they are gone; return their pids."""
    with engine.connect() as conn:
        if pids is None:
            pids = list(
                conn.scalars(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    )
                )
            )
        for pid in pids:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = conn.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": pids},
            )
            conn.commit()  # pg_stat_activity is a snapshot per transaction
            if not left:
                return pids
            time.sleep(0.05)
    pytest.fail(f"backends {pids} were still there 10 s after pg_terminate_backend")


def test_after_its_connections_are_terminated_the_next_request_still_succeeds(
    app, served, w, postgres
):
    client = served.test_client()
    login(client, w.committee)
    assert client.get("/committee/").status_code == 200
    db.session.rollback()  # the test's own connection goes back to the pool too
    assert terminate(postgres), "the app held no connection to terminate"

    # pool_pre_ping finds the dead connections and replaces them before any request uses one.
    assert client.get("/committee/").status_code == 200
    assert client.post(approve_url(w.pending)).status_code == 302
    assert books(w)["statuses"][0] is TransferStatus.POSTED
    assert_check_ledger_passes(app)


def test_a_connection_terminated_mid_checkout_gets_503_then_the_same_key_redeems_once(
    app, served, w, postgres
):
    client = served.test_client()
    login(client, w.clerk)
    before = books(w)
    db.session.rollback()
    engine = served_engine(served)
    killed = []

    def kill_own_connection(conn, cursor, statement, parameters, context, executemany):
        # At the stock UPDATE: the redemption row is written, nothing else yet.
        if not killed and statement.lstrip().upper().startswith("UPDATE"):
            killed.extend(terminate(postgres, [conn.connection.dbapi_connection.info.backend_pid]))

    sa.event.listen(engine, "before_cursor_execute", kill_own_connection)
    try:
        response = client.post(checkout_url(w), data=cart_form(w))
    finally:
        sa.event.remove(engine, "before_cursor_execute", kill_own_connection)
    assert killed
    assert_error_page(app, response, 503, UNAVAILABLE)
    assert books(w) == before
    db.session.rollback()

    response = client.post(checkout_url(w), data=cart_form(w))
    assert response.status_code == 302
    after = books(w)
    assert count(Redemption, Redemption.idempotency_key == KEY) == 1
    assert after["stock"] == before["stock"] - 2
    assert after["balance"].spendable == before["balance"].spendable - 10
    assert_check_ledger_passes(app)
