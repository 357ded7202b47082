"""`pointsmart backup` writes a consistent copy that restores and passes check-ledger."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import sqlalchemy as sa

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Role, Transfer
from pointsmart.services import catalogue, redemptions
from tests.conftest import app_config


@pytest.fixture
def busy_village(make):
    """A village with awards, a redemption with a void and stock movements, committed."""
    village = make.village()
    household = make.household(make.group(village))
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    make.funded(household, 80)
    item = catalogue.create_item(shop, catalogue.ItemData("毛巾", "日用品", 10), clerk)
    catalogue.receive(item, clerk, quantity_=9, key="backup-in")
    sale, _ = redemptions.checkout(
        shop=shop, household=household, cart={item.id: 3}, clerk=clerk, key="backup-sale"
    )
    redemptions.void(
        sale, clerk, reason="退一条", key="backup-void", quantities={sale.lines[0].id: 1}
    )
    db.session.commit()
    return household


def restored_url(app, backup_path, tmp_path):
    """Restore the backup into a fresh database of the same backend; yield its URL."""
    url = db.engine.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{backup_path}", None
    name = f"restore_{uuid.uuid4().hex[:10]}"
    admin = url.set(drivername="postgresql", password=None)
    server = admin.set(database="postgres").render_as_string(hide_password=False)
    subprocess.run(["createdb", f"--maintenance-db={server}", name], check=True)
    target = admin.set(database=name).render_as_string(hide_password=False)
    subprocess.run(
        ["pg_restore", "--no-owner", f"--dbname={target}", str(backup_path)],
        check=True,
        capture_output=True,
    )
    return url.set(database=name).render_as_string(hide_password=False), (server, name)


def test_a_backup_restores_and_the_books_check_out(app, runner, busy_village, tmp_path):
    backup_path = tmp_path / "copy.backup"
    result = runner.invoke(args=["backup", "--output", str(backup_path)])
    assert result.exit_code == 0, result.output
    assert "Backup written" in result.output and backup_path.stat().st_size > 0
    transfers = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer))
    db.session.remove()

    url, dropper = restored_url(app, backup_path, tmp_path)
    try:
        copy = create_app(app_config(url))
        with copy.app_context():
            check = copy.test_cli_runner().invoke(args=["check-ledger"])
            assert check.exit_code == 0, check.output
            assert "Ledger OK" in check.output and "Stock OK" in check.output
            assert db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)) == transfers
            db.session.remove()
            db.engine.dispose()
    finally:
        if dropper:
            subprocess.run(["dropdb", f"--maintenance-db={dropper[0]}", "--force", dropper[1]])


def test_a_backup_to_a_place_that_cannot_be_written_says_why(app, runner, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result = runner.invoke(args=["backup", "--output", str(blocked / "x.backup")])
    assert result.exit_code != 0
    assert "Error" in result.output
