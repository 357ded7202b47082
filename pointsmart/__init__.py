"""PointSmart: points for village environmental upkeep, and the love supermarket."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, request, session
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from werkzeug.routing import IntegerConverter

from .config import DefaultConfig


class RowIdConverter(IntegerConverter):
    """An <int:…> URL part that fits a database id (1 to 2**31 − 1)."""

    def __init__(self, map, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, **kwargs)
        self.regex = r"\d{1,10}"


class ConfigError(RuntimeError):
    """The deployment is misconfigured; the message says how to fix it."""


def instance_folder() -> Path:
    """Return the instance folder: $POINTSMART_INSTANCE_PATH or ./instance."""
    return Path(os.environ.get("POINTSMART_INSTANCE_PATH") or Path.cwd() / "instance").resolve()


def migrations_folder() -> str:
    """Return the Alembic folder, shipped in the package or beside it in a checkout."""
    packaged = Path(__file__).parent / "migrations"
    if (packaged / "env.py").exists():
        return str(packaged)
    return str(Path(__file__).parent.parent / "migrations")


def create_app(test_config: dict | None = None) -> Flask:
    """Create the application: config, extensions, blueprints, commands, error pages."""
    app = Flask(__name__, instance_path=str(instance_folder()), instance_relative_config=True)
    app.config.from_object(DefaultConfig)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("POINTSMART")
        if os.environ.get("DATABASE_URL"):
            app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    else:
        app.config.from_mapping(test_config)
    _configure_database(app)
    _configure_secret_key(app, generate=test_config is None)
    # Module loggers propagate to the app logger, which Flask gives a stderr handler.
    app.logger.setLevel(app.config.get("LOG_LEVEL", "INFO"))

    # <int:…> ids stop at the database's 32-bit INTEGER: a larger number matches no route (404)
    # instead of failing inside the database.
    app.url_map.converters["int"] = RowIdConverter

    from . import models  # noqa: F401  (register the tables)
    from .extensions import babel, csrf, db, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=migrations_folder(), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=_select_locale, timezone_selector=lambda: "Asia/Shanghai")
    login_manager.init_app(app)

    from . import auth, errors, security, templating
    from .admin import bp as admin_bp
    from .auth.views import bp as auth_bp
    from .cadre import bp as cadre_bp
    from .clerk import bp as clerk_bp
    from .committee import bp as committee_bp
    from .main import bp as main_bp
    from .media import bp as media_bp
    from .public import bp as public_bp
    from .villager import bp as villager_bp

    auth.init_app(app)
    templating.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    for blueprint in (
        main_bp,
        auth_bp,
        villager_bp,
        cadre_bp,
        committee_bp,
        clerk_bp,
        admin_bp,
        media_bp,
        public_bp,
    ):
        app.register_blueprint(blueprint)

    from .api import init_app as init_api

    init_api(app)

    from .cli import register_commands

    register_commands(app)
    return app


def _configure_database(app: Flask) -> None:
    url = app.config.get("SQLALCHEMY_DATABASE_URI")
    if not url:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        url = "sqlite:///" + str(Path(app.instance_path) / "pointsmart.sqlite")
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"DATABASE_URL is not a valid database URL ({exc}). Examples: "
            "sqlite:////srv/pointsmart/instance/pointsmart.sqlite or "
            "postgresql+psycopg://user:password@host/pointsmart"
        ) from None
    # Heroku-style postgres:// URLs name a driver we do not ship; use psycopg 3.
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"DATABASE_URL uses {parsed.get_backend_name()!r}; PointSmart runs on SQLite or PostgreSQL."
        )
    app.config["SQLALCHEMY_DATABASE_URI"] = parsed.render_as_string(hide_password=False)


def _configure_secret_key(app: Flask, generate: bool) -> None:
    if app.config.get("SECRET_KEY"):
        return
    key_file = Path(app.instance_path) / "secret_key"
    if key_file.exists():
        app.config["SECRET_KEY"] = key_file.read_text().strip()
    elif generate:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        # Written once, readable by the owner only, kept across restarts.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        app.config["SECRET_KEY"] = key
    else:
        raise ConfigError("SECRET_KEY is not set.")


def _select_locale() -> str:
    from flask import current_app

    from .api import is_api_request

    if request and is_api_request():
        # API callers choose by Accept-Language; Chinese unless they ask for English.
        best = request.accept_languages.best_match(["zh-CN", "zh", "en"])
        return "en" if best == "en" else current_app.config["BABEL_DEFAULT_LOCALE"]
    chosen = session.get("locale") if request else None
    if chosen in current_app.config["LANGUAGES"]:
        return chosen
    return current_app.config["BABEL_DEFAULT_LOCALE"]
