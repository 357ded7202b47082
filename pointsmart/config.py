"""Default configuration; a deployment overrides it in instance/config.py or the environment."""

from __future__ import annotations

from datetime import timedelta


class DefaultConfig:
    #: Filled in by create_app: SQLite in the instance folder unless DATABASE_URL is set.
    SQLALCHEMY_DATABASE_URI: str | None = None
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    SQLALCHEMY_TRACK_MODIFICATIONS = False

    # Server-side login sessions: staff for a working day, villagers' phones for a month.
    # The cookie may live longer; the server decides (services.accounts.load_session).
    STAFF_SESSION_LIFETIME = timedelta(hours=12)
    VILLAGER_SESSION_LIFETIME = timedelta(days=30)
    PERMANENT_SESSION_LIFETIME = timedelta(days=30)
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"

    BABEL_DEFAULT_LOCALE = "zh_CN"
    BABEL_DEFAULT_TIMEZONE = "Asia/Shanghai"
    LANGUAGES = {"zh_CN": "简体中文", "en": "English"}

    WTF_CSRF_TIME_LIMIT = None  # a form left open on a phone all morning still submits

    #: Evidence photos: where they are kept (default: the instance folder's photos/) and the
    #: largest request body, enough for four phone photos of up to 8 MB each and a form.
    PHOTO_FOLDER: str | None = None
    PHOTO_MAX_BYTES = 8 * 1024 * 1024
    MAX_CONTENT_LENGTH = 40 * 1024 * 1024

    #: Sent as Strict-Transport-Security on HTTPS requests (0: never).
    HSTS_SECONDS = 31_536_000
    #: Trust one reverse proxy's X-Forwarded-For/-Proto/-Host (set True behind nginx).
    PROXY_FIX = False

    #: Shared store for login rate limits; use redis://… when several workers serve.
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_HEADERS_ENABLED = True
    LOGIN_RATE_LIMIT = "10 per 15 minutes"
