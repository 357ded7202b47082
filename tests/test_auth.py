"""Logging in and out through the real forms: villagers, staff, sessions, limits, CSRF."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_babel import gettext
from werkzeug.security import check_password_hash

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import LoginSession, Role, User
from pointsmart.timeutil import utcnow
from tests.conftest import PASSWORD, PIN, app_config

PHONE = "13912345678"
CJK = re.compile(r"[\u4e00-\u9fff]")
CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


# --- helpers ----------------------------------------------------------------------------------


def villager_login(client, phone=PHONE, pin=PIN, form=None, **request_args):
    data = {"phone": phone, "pin": pin, **(form or {})}
    return client.post("/login", data=data, **request_args)


def staff_login(client, username, password=PASSWORD, form=None, **request_args):
    data = {"username": username, "password": password, **(form or {})}
    return client.post("/login/staff", data=data, **request_args)


def token_of(client) -> str | None:
    """Return the login-session token kept in the client's session cookie."""
    with client.session_transaction() as session:
        return session.get("_user_id")


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    """Return ``message`` as a page in the default language shows it."""
    with app.app_context(), app.test_request_context():
        return gettext(message, **values)


def csrf_token(client, path: str = "/login") -> str:
    match = CSRF_INPUT.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


@pytest.fixture
def villager(make):
    household = make.household()
    user = make.villager(household, phone=PHONE)
    db.session.commit()
    return user


@pytest.fixture
def app_with(app):
    """Build another app on the test database with extra settings; its context is pushed."""
    contexts = []

    def build(**extra):
        other = create_app(app_config(app.config["SQLALCHEMY_DATABASE_URI"], **extra))
        context = other.app_context()
        context.push()
        contexts.append(context)
        return other

    yield build
    for context in reversed(contexts):
        db.session.remove()
        db.engine.dispose()
        context.pop()


# --- villager login ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [PHONE, "139 1234 5678", "+86 139-1234-5678", "+8613912345678", "１３９１２３４５６７８"],
)
def test_villager_logs_in_with_phone_and_pin(client, villager, typed):
    response = villager_login(client, phone=typed, follow_redirects=True)
    assert response.status_code == 200
    assert response.request.path == "/me/"
    assert token_of(client) is not None


def test_wrong_pin_stays_on_login_page_without_session(app, client, villager):
    response = villager_login(client, pin="135790")
    assert response.status_code == 200
    page = text(response)
    assert (
        translated(app, "Wrong mobile number or PIN. Ask your village cadre if you forgot the PIN.")
        in page
    )
    assert 'name="pin"' in page
    assert token_of(client) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LoginSession)) == 0
    assert client.get("/me/").status_code == 302


def test_unknown_phone_gets_the_same_message(app, client, villager):
    page = text(villager_login(client, phone="13800000000"))
    assert (
        translated(app, "Wrong mobile number or PIN. Ask your village cadre if you forgot the PIN.")
        in page
    )
    assert token_of(client) is None


def test_staff_account_cannot_use_villager_login(make, client):
    cadre = make.staff(Role.CADRE, make.village())
    cadre.phone = PHONE
    db.session.commit()
    villager_login(client, pin=PASSWORD)
    assert token_of(client) is None


# --- staff login ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "home"),
    [
        (Role.ADMIN, "/admin/"),
        (Role.COMMITTEE, "/committee/"),
        (Role.CADRE, "/cadre/"),
        (Role.CLERK, "/clerk/shops/1/counter"),  # a clerk of one shop lands at its counter
    ],
)
def test_staff_land_on_their_role_home(make, client, role, home):
    village = make.village()
    place = {
        Role.ADMIN: village.town,
        Role.COMMITTEE: village,
        Role.CADRE: village,
        Role.CLERK: make.shop(village),
    }[role]
    user = make.staff(role, place, username="worker1")
    db.session.commit()
    response = staff_login(client, "worker1", follow_redirects=True)
    assert response.status_code == 200
    assert response.request.path == home
    assert token_of(client) is not None
    assert user.last_login_at is not None


def test_wrong_password_refused(app, make, client):
    make.staff(Role.CADRE, make.village(), username="worker1")
    db.session.commit()
    response = staff_login(client, "worker1", password="wrong password")
    assert response.status_code == 200
    assert translated(app, "Wrong username or password.") in text(response)
    assert token_of(client) is None


def test_user_with_two_roles_sees_both_in_nav(make, client):
    village = make.village()
    user = make.staff(Role.CADRE, village, username="both")
    from pointsmart.services import accounts

    accounts.grant(user, Role.COMMITTEE, village)
    db.session.commit()
    page = staff_login(client, "both", follow_redirects=True).get_data(as_text=True)
    nav = page.split("<nav>", 1)[1].split("</nav>", 1)[0]
    assert 'href="/cadre/"' in nav
    assert 'href="/committee/"' in nav
    assert 'href="/admin/"' not in nav
    assert client.get("/cadre/").status_code == 200
    assert client.get("/committee/").status_code == 200


# --- deactivation -----------------------------------------------------------------------------


def test_deactivated_user_cannot_log_in(client, villager, make):
    villager.is_active = False
    make.staff(Role.CADRE, make.village(), username="gone").is_active = False
    db.session.commit()
    villager_login(client)
    assert token_of(client) is None
    staff_login(client, "gone")
    assert token_of(client) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LoginSession)) == 0


def test_deactivation_ends_an_open_session(client, villager):
    villager_login(client)
    assert client.get("/me/").status_code == 200
    villager.is_active = False
    db.session.commit()
    response = client.get("/me/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


# --- logout -----------------------------------------------------------------------------------


def test_logout_is_post_only(client, villager):
    villager_login(client)
    assert client.get("/logout").status_code == 405
    assert client.get("/me/").status_code == 200


def test_logout_ends_the_session_for_a_copied_cookie_too(app, client, villager):
    villager_login(client)
    stolen = client.get_cookie("session").value
    token = token_of(client)

    response = client.post("/logout")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get("/me/").status_code == 302
    assert db.session.get(LoginSession, token).ended_at is not None

    replay = app.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/me/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


# --- session identity and expiry --------------------------------------------------------------


def test_each_login_gets_a_new_session_token(app, client, villager):
    villager_login(client)
    first = token_of(client)
    other = app.test_client()
    villager_login(other)
    second = token_of(other)
    assert first and second and first != second
    tokens = set(
        db.session.scalars(sa.select(LoginSession.id).where(LoginSession.user_id == villager.id))
    )
    assert tokens == {first, second}


def test_values_from_before_login_do_not_survive_it(client, villager):
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
        session["_user_id"] = "a token an attacker chose"
        session["locale"] = "en"
    villager_login(client)
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"] != "a token an attacker chose"
        assert session["locale"] == "en"  # the chosen language is kept


def test_expired_session_no_longer_authenticates(client, villager):
    villager_login(client)
    assert client.get("/me/").status_code == 200
    login = db.session.get(LoginSession, token_of(client))
    login.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    response = client.get("/me/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_sessions_are_given_a_lifetime(app, client, villager, make):
    villager_login(client)
    login = db.session.get(LoginSession, token_of(client))
    lifetime = login.expires_at - login.created_at
    assert lifetime == app.config["VILLAGER_SESSION_LIFETIME"]

    make.staff(Role.CADRE, make.village(), username="worker1")
    db.session.commit()
    staff = app.test_client()
    staff_login(staff, "worker1")
    login = db.session.get(LoginSession, token_of(staff))
    assert login.expires_at - login.created_at == app.config["STAFF_SESSION_LIFETIME"]


# --- next redirects ---------------------------------------------------------------------------


def test_login_required_page_comes_back_after_login(client, villager):
    response = client.get("/me/?tab=history")
    assert response.status_code == 302
    login_url = response.headers["Location"]
    assert login_url.startswith("/login?next=")
    page = client.get(login_url).get_data(as_text=True)
    next_value = re.search(r'name="next" type="hidden" value="([^"]*)"', page).group(1)
    assert html.unescape(next_value) == "/me/?tab=history"
    response = villager_login(client, form={"next": html.unescape(next_value)})
    assert response.headers["Location"] == "/me/?tab=history"


def test_staff_login_follows_a_local_next(make, client):
    make.staff(Role.CADRE, make.village(), username="worker1")
    db.session.commit()
    response = staff_login(client, "worker1", form={"next": "/cadre/?q=3"})
    assert response.headers["Location"] == "/cadre/?q=3"


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/steal",
        "https://evil.example",
        "//evil.example/steal",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "me/",
    ],
)
def test_next_pointing_elsewhere_is_ignored(client, villager, target):
    response = villager_login(client, form={"next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert token_of(client) is not None


# --- rate limiting ----------------------------------------------------------------------------


def test_too_many_wrong_pins_get_a_clear_429(app_with, make):
    app = app_with(LOGIN_RATE_LIMIT="3 per 15 minutes")
    make.villager(make.household(), phone=PHONE)
    db.session.commit()
    client = app.test_client()
    for _ in range(3):
        assert villager_login(client, pin="000000").status_code == 200
    response = villager_login(client)  # even the right PIN waits now
    assert response.status_code == 429
    page = text(response)
    message = translated(app, "Too many attempts. Please wait a few minutes before trying again.")
    assert message in page
    assert CJK.search(message), "the default language is Simplified Chinese"
    assert 'lang="zh-CN"' in page
    assert "Traceback" not in page
    assert token_of(client) is None


def test_staff_login_is_rate_limited_too(app_with, make):
    app = app_with(LOGIN_RATE_LIMIT="2 per 15 minutes")
    make.staff(Role.ADMIN, make.town(), username="boss")
    db.session.commit()
    client = app.test_client()
    for _ in range(2):
        assert staff_login(client, "boss", password="guess1234").status_code == 200
    assert staff_login(client, "boss").status_code == 429
    assert token_of(client) is None


def test_rotating_addresses_does_not_bypass_the_limit(app_with, make):
    app = app_with(LOGIN_RATE_LIMIT="3 per 15 minutes")
    make.villager(make.household(), phone=PHONE)
    make.staff(Role.ADMIN, make.town(), username="boss")
    db.session.commit()
    client = app.test_client()
    # Other spellings of the same phone or username count against the same account,
    # and an extra form field does not give the attempt a new identity.
    phones = [PHONE, "+86 " + PHONE, "139 1234 5678"]
    for n, phone in enumerate(phones):
        environ = {"REMOTE_ADDR": f"10.0.0.{n + 1}"}
        extra = {"username": f"x{n}"} if n else {}
        response = villager_login(client, phone, "000000", form=extra, environ_base=environ)
        assert response.status_code == 200
    response = villager_login(client, environ_base={"REMOTE_ADDR": "10.0.0.99"})
    assert response.status_code == 429

    for n, username in enumerate(["boss", " boss", "boss "]):
        environ = {"REMOTE_ADDR": f"10.0.1.{n + 1}"}
        assert staff_login(client, username, "guess1234", environ_base=environ).status_code == 200
    assert staff_login(client, "boss", environ_base={"REMOTE_ADDR": "10.0.1.99"}).status_code == 429


def test_other_accounts_are_not_locked_out(app_with, make):
    app = app_with(LOGIN_RATE_LIMIT="2 per 15 minutes")
    make.villager(make.household(), phone=PHONE)
    make.villager(make.household(), phone="13700000000")
    db.session.commit()
    client = app.test_client()
    for n in range(2):
        villager_login(client, pin="000000", environ_base={"REMOTE_ADDR": f"10.0.0.{n}"})
    response = villager_login(client, phone="13700000000", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# --- CSRF -------------------------------------------------------------------------------------


def test_login_without_csrf_token_is_refused(app_with, make):
    app = app_with(WTF_CSRF_ENABLED=True)
    make.villager(make.household(), phone=PHONE)
    db.session.commit()
    client = app.test_client()
    response = villager_login(client)
    assert response.status_code == 400
    assert translated(app, "The form was incomplete or had expired. Please try again.") in text(
        response
    )
    assert token_of(client) is None

    response = villager_login(client, form={"csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert token_of(client) is not None


def test_logout_without_csrf_token_does_not_log_out(app_with, make):
    app = app_with(WTF_CSRF_ENABLED=True)
    make.villager(make.household(), phone=PHONE)
    db.session.commit()
    client = app.test_client()
    villager_login(client, form={"csrf_token": csrf_token(client)})
    assert client.get("/me/").status_code == 200

    assert client.post("/logout").status_code == 400
    assert client.get("/me/").status_code == 200
    assert db.session.scalar(sa.select(LoginSession.ended_at)) is None

    token = csrf_token(client, "/me/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/me/").status_code == 302


# --- secrets at rest --------------------------------------------------------------------------


def test_passwords_and_pins_are_stored_hashed(make, villager):
    make.staff(Role.ADMIN, make.town(), username="boss")
    db.session.commit()
    rows = db.session.execute(
        sa.select(User.username, User.password_hash, User.pin_hash).execution_options(
            populate_existing=True
        )
    ).all()
    for username, password_hash, pin_hash in rows:
        stored = password_hash if username else pin_hash
        secret = PASSWORD if username else PIN
        assert stored and stored != secret
        assert secret not in stored
        assert stored.startswith(("scrypt:", "pbkdf2:"))
        assert check_password_hash(stored, secret)
    assert {bool(r.username) for r in rows} == {True, False}
