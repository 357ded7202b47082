"""The pointsmart command line: check-ledger, create-user, clear start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from flask_babel import gettext

from pointsmart.extensions import db
from pointsmart.models import Account, AccountKind, Role, User

POINTSMART = str(Path(sys.executable).with_name("pointsmart"))


def run_cli(*args, env=None, tmp_path=None):
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if tmp_path is not None:
        environment["POINTSMART_INSTANCE_PATH"] = str(tmp_path)
    environment.update(env or {})
    return subprocess.run(
        [POINTSMART, *args], env=environment, capture_output=True, text=True, timeout=120
    )


def test_check_ledger_clean(runner, make):
    household = make.household()
    make.funded(household, 40)
    db.session.commit()
    result = runner.invoke(args=["check-ledger"])
    assert result.exit_code == 0, result.output
    assert "Ledger OK" in result.output


def test_check_ledger_names_tampered_account(runner, make):
    household = make.household(name="王建国")
    make.funded(household, 40)
    db.session.commit()
    account = db.session.scalar(
        sa.select(Account).where(
            Account.household_id == household.id, Account.kind == AccountKind.HOUSEHOLD_SPENDABLE
        )
    )
    db.session.execute(sa.update(Account).where(Account.id == account.id).values(balance=1000))
    db.session.commit()
    result = runner.invoke(args=["check-ledger"])
    assert result.exit_code == 1
    assert (
        f"account {account.id} household {household.id} 王建国 (household_spendable)"
        in result.output
    )
    assert "stored 1000, sum of transfers 40" in result.output


def test_create_user_grants_role(runner, make):
    village = make.village()
    db.session.commit()
    result = runner.invoke(
        args=[
            "create-user",
            "--username",
            "liwei",
            "--name",
            "李伟",
            "--role",
            "committee",
            "--place",
            str(village.id),
            "--password",
            "a-long-password",
        ]
    )
    assert result.exit_code == 0, result.output
    user = db.session.scalar(sa.select(User).where(User.username == "liwei"))
    assert user.has_role(Role.COMMITTEE) and user.grants[0].village_id == village.id
    assert user.password_hash != "a-long-password"


def test_create_user_refuses_bad_input(runner, make):
    village = make.village()
    make.staff(Role.CADRE, village, username="taken")
    db.session.commit()
    # Messages come out in the default interface language, like the pages.
    cases = [
        (
            ["--username", "taken", "--role", "cadre", "--place", str(village.id)],
            gettext("That username is taken."),
        ),
        (
            ["--username", "newone", "--role", "cadre", "--place", "99999"],
            "no village with id 99999",
        ),
        (
            ["--username", "x", "--role", "cadre", "--place", str(village.id)],
            gettext("Usernames are 3 to 40 letters, digits, dots, dashes or underscores."),
        ),
    ]
    for args, message in cases:
        result = runner.invoke(args=["create-user", *args, "--password", "a-long-password"])
        assert result.exit_code != 0
        assert message in result.output
    short = runner.invoke(
        args=[
            "create-user",
            "--username",
            "shorty",
            "--role",
            "cadre",
            "--place",
            str(village.id),
            "--password",
            "short",
        ]
    )
    assert short.exit_code != 0
    assert gettext("The password must have at least %(n)s characters.", n=8) in short.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_bad_database_url_is_explained(tmp_path):
    result = run_cli("check-ledger", env={"DATABASE_URL": "not a url"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "DATABASE_URL is not a valid database URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_unsupported_database_is_explained(tmp_path):
    result = run_cli(
        "check-ledger", env={"DATABASE_URL": "mysql://x@localhost/y"}, tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "PointSmart runs on SQLite or PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_explained(tmp_path):
    url = "postgresql+psycopg://nobody@127.0.0.1:9/nowhere?connect_timeout=2"
    result = run_cli("check-ledger", env={"DATABASE_URL": url}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_routes_lists_the_url_map(tmp_path):
    result = run_cli("routes", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "villager.home" in result.stdout and "/me/" in result.stdout
