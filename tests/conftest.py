"""Fixtures: an app per test on a schema migrated once per run, and callable factories.

Set POINTSMART_TEST_DATABASE_URL (e.g. postgresql+psycopg://localhost/pointsmart_test)
to run the whole suite against that database; it must be one the suite may empty.
"""

from __future__ import annotations

import functools
import itertools
import os

import pytest
import sqlalchemy as sa
from flask import g, request_started
from werkzeug.security import generate_password_hash

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Role, TransferKind
from pointsmart.services import accounts, ledger, places

TEST_DATABASE_URL = os.environ.get("POINTSMART_TEST_DATABASE_URL")
PASSWORD = "correct horse battery"
PIN = "246810"


def app_config(url: str, **extra) -> dict:
    """Return a test configuration for create_app on the database at ``url``."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": url,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": True,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


app_config.__test__ = False  # not a test, wherever it is imported
test_config = app_config


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    if TEST_DATABASE_URL:
        return TEST_DATABASE_URL
    return "sqlite:///" + str(tmp_path_factory.mktemp("db") / "pointsmart-test.sqlite")


def wipe(url: str) -> None:
    """Drop every table, including alembic_version, so the run starts from empty."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def migrated(database_url, tmp_path_factory) -> str:
    """Migrate the test database from empty once per run, through Alembic."""
    from flask_migrate import upgrade

    os.environ.setdefault("POINTSMART_INSTANCE_PATH", str(tmp_path_factory.mktemp("instance")))
    wipe(database_url)
    app = create_app(app_config(database_url))
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        db.engine.dispose()
    return database_url


def empty_tables() -> None:
    tables = [t for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                conn.execute(table.delete())


def _fresh_g(sender, **extra):
    # The fixture keeps one app context open for the whole test, so requests would share
    # `g` and with it Flask-Login's user, Flask-WTF's token and Babel's locale; production
    # gives every request a fresh one.
    g.__dict__.clear()


@pytest.fixture
def app(migrated):
    app = create_app(app_config(migrated))
    with app.app_context(), request_started.connected_to(_fresh_g):
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Factory:
    """Callable factories that build through the services, as real data is built."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)

    def n(self) -> int:
        return next(self._seq)

    def town(self, name: str | None = None):
        return places.create_town(name or f"镇{self.n()}")

    def village(self, town=None, name: str | None = None, **settings):
        return places.create_village(town or self.town(), name or f"村{self.n()}", **settings)

    def group(self, village=None, name: str | None = None):
        return places.create_group(village or self.village(), name or f"{self.n()}组")

    def household(self, group=None, name: str | None = None, phone: str | None = None):
        n = self.n()
        return places.create_household(
            group or self.group(), str(n), name or f"户主{n}", head_phone=phone
        )

    def shop(self, village=None, town=None):
        if village is not None:
            return places.create_shop(village.town, f"超市{self.n()}", village)
        return places.create_shop(town or self.town(), f"镇超市{self.n()}")

    def staff(self, role: Role, place, username: str | None = None):
        user = accounts.create_staff(username or f"user{self.n()}", f"职员{self.n()}", PASSWORD)
        accounts.grant(user, role, place)
        return user

    def villager(self, household, phone: str | None = None, pin: str = PIN):
        member = household.members[0]
        member.phone = phone or f"139{self.n():08d}"
        return accounts.create_villager_login(member, pin)

    def funded(self, household, points: int, recorder=None, approver=None):
        """Give a household posted points through a normal award and approval."""
        village = household.group.village
        recorder = recorder or self.staff(Role.CADRE, village)
        approver = approver or self.staff(Role.COMMITTEE, village)
        transfer = ledger.record(
            kind=TransferKind.AWARD,
            household=household,
            points=points,
            reason="垃圾分类",
            recorded_by=recorder,
            key=f"fund-{self.n()}",
        )
        return ledger.post(transfer, approver)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch):
    """Hash with one round in tests: many accounts are made and a real hash takes 0.1 s.

    Still a salted hash that check_password_hash verifies; production keeps scrypt.
    """
    monkeypatch.setattr(
        accounts,
        "generate_password_hash",
        functools.partial(generate_password_hash, method="pbkdf2:sha256:1"),
    )


@pytest.fixture
def make(app) -> Factory:
    return Factory()


def login(client, user) -> str:
    """Log a user in through a real server-side session; return its token."""
    from datetime import timedelta

    session = accounts.start_session(user, timedelta(hours=1))
    db.session.commit()
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = session.id
        flask_session["_fresh"] = True
    return session.id


@pytest.fixture
def login_as(client):
    return lambda user: login(client, user)
