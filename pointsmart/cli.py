"""The `pointsmart` command: demo, create-user, check-ledger, plus Flask's run/routes and db."""

from __future__ import annotations

import sys

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from werkzeug.serving import run_simple

from . import ConfigError, create_app
from .extensions import db


def _create_app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(cls=FlaskGroup, create_app=_create_app, load_dotenv=False, set_debug_flag=False)
def main() -> None:
    """PointSmart: points for village environmental upkeep (积分制) and the love supermarket."""


def ensure_database() -> None:
    """Fail with a clear message when the database cannot be reached."""
    url = db.engine.url
    try:
        # Through the session, not a second connection: on SQLite a second one would
        # wait for the write lock the session may already hold.
        db.session.execute(sa.text("SELECT 1"))
        db.session.rollback()
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise click.ClickException(
            f"Cannot reach the database {url.render_as_string(hide_password=True)}: {reason}\n"
            "Check DATABASE_URL and that the database server is running."
        ) from None


def upgrade_database() -> None:
    """Bring the schema up to the newest migration."""
    from flask_migrate import upgrade

    upgrade(directory=current_app.extensions["migrate"].directory)


def register_commands(app: Flask) -> None:
    app.cli.add_command(demo_command)
    app.cli.add_command(create_user_command)
    app.cli.add_command(check_ledger_command)
    app.cli.add_command(backup_command)
    app.cli.add_command(run_clearing_command)


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--no-serve", is_flag=True, help="Prepare the database and demo data, then exit.")
@with_appcontext
def demo_command(host: str, port: int, no_serve: bool) -> None:
    """Create or upgrade the database, load a demo town if it is empty, and serve it."""
    from .demo import CREDENTIALS_FILE, load_demo

    ensure_database()
    upgrade_database()
    # Loading logs a line per ledger event; a new user needs only the accounts.
    app_logger = current_app.logger
    level = app_logger.level
    app_logger.setLevel("WARNING")
    try:
        credentials = load_demo()
    finally:
        app_logger.setLevel(level)
    path = f"{current_app.instance_path}/{CREDENTIALS_FILE}"
    if credentials:
        click.echo("Demo town loaded. Accounts (shown once; also saved to " + path + "):")
        for line in credentials:
            click.echo("  " + line)
    else:
        click.echo(f"The database already holds data; demo accounts were listed in {path}.")
    if no_serve:
        return
    click.echo(f"PointSmart is running on http://{host}:{port}/  (Ctrl+C to stop)")
    sys.stdout.flush()
    # Not app.run(): Flask ignores it inside a `flask`-style CLI command and returns at once.
    run_simple(host, port, current_app._get_current_object(), threaded=True)


@click.command("create-user")
@click.option("--username", required=True)
@click.option("--name", "display_name", help="Name shown in the interface.")
@click.option(
    "--role",
    type=click.Choice(["admin", "committee", "cadre", "clerk"]),
    required=True,
)
@click.option(
    "--place",
    "place_id",
    type=int,
    required=True,
    help="Id of the town (admin), village (committee, cadre) or shop (clerk).",
)
@click.password_option(help="Prompted for when not given.")
@with_appcontext
def create_user_command(username, display_name, role, place_id, password) -> None:
    """Create a staff account with one role over one place."""
    from .models import Role, Shop, Town, Village
    from .services import accounts
    from .services.errors import DomainError

    ensure_database()
    role = Role(role)
    place_type = {Role.ADMIN: Town, Role.CLERK: Shop}.get(role, Village)
    place = db.session.get(place_type, place_id)
    if place is None:
        raise click.ClickException(f"There is no {place_type.__name__.lower()} with id {place_id}.")
    try:
        user = accounts.create_staff(username, display_name or username, password)
        accounts.grant(user, role, place)
    except DomainError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc.message)) from None
    db.session.commit()
    click.echo(f"Created {username} ({role.value} of {place.name}).")


@click.command("check-ledger")
@with_appcontext
def check_ledger_command() -> None:
    """Recompute every balance from the transfers and every stock from its movements; exit 1
    naming any mismatch."""
    from .services import catalogue, ledger, monthly, redemptions

    ensure_database()
    mismatches, unbalanced = ledger.check()
    stock = catalogue.check_stock()
    carts = redemptions.check_redemptions()
    months = monthly.check()
    accounts = db.session.scalar(sa.select(sa.func.count()).select_from(ledger.Account))
    for m in mismatches:
        click.echo(
            f"MISMATCH account {m.account_id} {m.description}: stored {m.stored}, "
            f"sum of transfers {m.computed}",
            err=True,
        )
    for transfer_id in unbalanced:
        click.echo(f"UNBALANCED transfer {transfer_id}: its entries do not sum to zero", err=True)
    for item, total in stock:
        click.echo(
            f"STOCK MISMATCH item {item.id} {item.name} (shop {item.shop_id}): stored "
            f"{item.stock}, sum of movements {total}",
            err=True,
        )
    for line in carts:
        click.echo(f"REDEMPTION MISMATCH {line}", err=True)
    for line in months:
        click.echo(f"MONTHLY MISMATCH {line}", err=True)
    if mismatches or unbalanced or stock or carts or months:
        raise SystemExit(1)
    click.echo(f"Ledger OK: {accounts} accounts match the sum of their transfers.")
    click.echo("Stock OK: every item's stock matches its movements; every redemption its lines.")
    click.echo("Rankings OK: every household's monthly points match its transfers.")


@click.command("backup")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="File to write (default: instance/backups/pointsmart-<time>.sqlite or .dump).",
)
@with_appcontext
def backup_command(output: str | None) -> None:
    """Write a consistent backup of the database while PointSmart keeps running."""
    from .services import backup

    ensure_database()
    try:
        path = backup.write(output)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Backup written: {path} ({path.stat().st_size:,} bytes).")
    click.echo("Restore it as the README says, then run `pointsmart check-ledger` on the copy.")


@click.command("run-clearing")
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Act as if it were this local date (default: today in Asia/Shanghai).",
)
@with_appcontext
def run_clearing_command(today) -> None:
    """Clear spendable points of villages whose yearly clearing date has come (run daily)."""
    from .services import clearing

    ensure_database()
    runs = clearing.run_due(today.date() if today else None)
    db.session.commit()
    for record in runs:
        click.echo(
            f"Village {record.village.name}: cleared {record.points} points of "
            f"{record.households} households for {record.clearing_date}."
        )
    if not runs:
        click.echo("No clearing is due.")
