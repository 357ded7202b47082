"""The migrations are the schema: one head, upgrade from empty, and they match the models."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from pointsmart import create_app, migrations_folder
from pointsmart.extensions import db

from .conftest import app_config


def test_exactly_one_head():
    config = Config()
    config.set_main_option("script_location", migrations_folder())
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_models_match_migrations(app):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


@pytest.fixture
def empty_database_url(migrated, tmp_path):
    """An empty database on the backend under test: a new file, or a new PostgreSQL schema."""
    url = sa.make_url(migrated)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    schema = f"mig_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


def test_upgrade_from_empty_and_back(empty_database_url):
    app = create_app(app_config(empty_database_url))
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory)
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"households", "transfers", "ledger_entries", "accounts", "users"} <= tables
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []
        downgrade(directory=directory, revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade(directory=directory)
        assert "transfers" in sa.inspect(db.engine).get_table_names()
        db.engine.dispose()


def test_cli_db_upgrade_from_empty(empty_database_url):
    app = create_app(app_config(empty_database_url))
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert "households" in sa.inspect(db.engine).get_table_names()
        db.engine.dispose()


def test_households_existing_before_the_shop_migration_get_a_card(empty_database_url):
    app = create_app(app_config(empty_database_url))
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory, revision="df795c048175")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO towns (id, name, created_at) VALUES (1, '镇', '2026-01-01 00:00:00+00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO villages (id, town_id, name, allow_negative_balance, board_names, "
                "created_at) VALUES (1, 1, '村', false, 'masked', '2026-01-01 00:00:00+00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO villager_groups (id, village_id, name) VALUES (1, 1, '组')"
            )
            for n in (1, 2):
                conn.exec_driver_sql(
                    "INSERT INTO households (id, group_id, house_number, name, is_active, created_at) "
                    f"VALUES ({n}, 1, '{n}', '户{n}', true, '2026-01-01 00:00:00+00')"
                )
        upgrade(directory=directory)
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT household_id, token, code, revoked_at FROM household_cards ORDER BY household_id"
            ).all()
        assert [r[0] for r in rows] == [1, 2]
        assert all(len(r[1]) == 26 and r[1].isupper() and len(r[2]) == 8 for r in rows)
        assert all(r[3] is None for r in rows) and rows[0][1] != rows[1][1]
        db.engine.dispose()


def test_household_months_get_their_copies_and_groups_their_counts(empty_database_url):
    from pointsmart.services import monthly

    app = create_app(app_config(empty_database_url))
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory, revision="7cb99fa0ef90")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO towns (id, name, created_at) VALUES (1, '镇', '2026-01-01 00:00:00+00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO villages (id, town_id, name, allow_negative_balance, board_names, "
                "created_at) VALUES (1, 1, '1村', false, 'masked', '2026-01-01 00:00:00+00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO villager_groups (id, village_id, name) VALUES (1, 1, '1组')"
            )
            for n, number, active in ((1, "2", "true"), (2, "10", "true"), (3, "3", "false")):
                conn.exec_driver_sql(
                    "INSERT INTO households (id, group_id, house_number, name, is_active, created_at) "
                    f"VALUES ({n}, 1, '{number}', '户{n}', {active}, '2026-01-01 00:00:00+00')"
                )
                conn.exec_driver_sql(
                    "INSERT INTO household_months (household_id, month, group_id, village_id, "
                    "town_id, points, awarded, deducted, awards, deductions) "
                    f"VALUES ({n}, '2026-10-01', 1, 1, 1, {10 * n}, {10 * n}, 0, 1, 0)"
                )
        upgrade(directory=directory)
        with db.engine.connect() as conn:
            copies = conn.exec_driver_sql(
                "SELECT household_id, is_active, village_name, group_name, house_number, "
                "house_length FROM household_months ORDER BY household_id"
            ).all()
            counted = conn.exec_driver_sql("SELECT active_households FROM villager_groups").all()
        assert [(h, bool(a), *rest) for h, a, *rest in copies] == [
            (1, True, "1村", "1组", "2", 1),
            (2, True, "1村", "1组", "10", 2),
            (3, False, "1村", "1组", "3", 1),
        ]
        assert counted == [(2,)]
        assert monthly.stale_copies() == [] and monthly.stale_counts() == []
        db.session.remove()
        downgrade(directory=directory, revision="7cb99fa0ef90")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM household_months").scalar() == 3
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("household_months")}
        assert "village_name" not in columns
        db.engine.dispose()
