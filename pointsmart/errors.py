"""Error pages: a clear message in the user's language, never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, make_response, render_template, request
from flask_babel import gettext as _
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .extensions import db, login_manager
from .services.errors import DomainError

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    from .api import is_api_request

    return is_api_request() or request.accept_mimetypes.best == "application/json"


#: Seconds a client is asked to wait before retrying while the database is unavailable.
RETRY_AFTER = 30


def database_unavailable(error: DBAPIError) -> bool:
    """Return whether a database error means "unreachable for now" rather than a refused statement.

    Lost or refused connections, a server shutting down, locks or deadlocks that outlasted their
    wait: retrying shortly can succeed. An integrity or data error is a bug, answered with 500.
    """
    return error.connection_invalidated or isinstance(error, (OperationalError, InterfaceError))


def _render(status: int, title: str, message: str, code: str | None = None, details=None):
    db.session.rollback()
    if _wants_json():
        from .api import envelope

        return envelope(status, message, code, details)
    return render_template("error.html", title=title, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(400)
    def bad_request(error):
        if _wants_json():
            return _render(
                400, _("Bad request"), _("The request could not be read: send valid JSON.")
            )
        return _render(
            400, _("Bad request"), _("The form was incomplete or had expired. Please try again.")
        )

    @app.errorhandler(403)
    def forbidden(error):
        return _render(403, _("Not allowed"), _("Your account cannot open this page."))

    @app.errorhandler(404)
    def not_found(error):
        return _render(404, _("Not found"), _("There is no such page or record."))

    @app.errorhandler(405)
    def method_not_allowed(error):
        return _render(405, _("Not allowed"), _("This action cannot be done this way."))

    @app.errorhandler(413)
    def too_large(error):
        limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
        # The body was refused unread; the page's own forms (log out, language) must not
        # try to parse it again, or rendering this page would raise 413 once more.
        empty = request.parameter_storage_class()
        request._get_current_object().__dict__.update(form=empty, files=empty)
        return _render(
            413,
            _("Too large"),
            _(
                "The upload is too large: at most %(mb)s MB can be sent at once. Nothing was saved. "
                "Please go back and send fewer or smaller photos.",
                mb=limit // (1024 * 1024),
            ),
        )

    @app.errorhandler(429)
    def too_many(error):
        return _render(
            429,
            _("Too many attempts"),
            _("Too many attempts. Please wait a few minutes before trying again."),
        )

    @app.errorhandler(DomainError)
    def domain_error(error: DomainError):
        return _render(error.status, _("Cannot do this"), str(error.message), error.code)

    from .api import ApiError

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return _render(
            error.status, _("Cannot do this"), str(error.message), error.code, error.details
        )

    @app.errorhandler(422)
    def unprocessable(error):
        # webargs (API bodies and query strings) refuses input with 422 and the field messages.
        messages = getattr(error, "data", {}).get("messages")
        return _render(
            422,
            _("Bad request"),
            _("Some values are missing or not valid; see the details."),
            "invalid_input",
            messages,
        )

    @app.errorhandler(415)
    def unsupported(error):
        return _render(415, _("Bad request"), _("Send the request body as JSON."))

    @app.errorhandler(DBAPIError)
    def database_down(error: DBAPIError):
        if not database_unavailable(error):
            # A statement the database refused is a bug: the 500 page, logged with its traceback.
            raise error
        log.error("database unavailable: %s", error.orig or error)  # the driver's words, no SQL
        # The page must render without the database: the user (roles in the menu, the
        # no-store header) would be loaded or refreshed from it again and fail once more.
        g._login_user = login_manager.anonymous_user()
        try:
            db.session.rollback()
        except DBAPIError:
            db.session.close()  # a connection that died under the rollback is discarded
        response = make_response(
            _render(
                503,
                _("Service unavailable"),
                _(
                    "The database cannot be reached right now. Nothing was saved. Please try again in a minute."
                ),
            )
        )
        response.headers["Retry-After"] = str(RETRY_AFTER)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(500)
    def server_error(error):
        return _render(500, _("Something went wrong"), _("An error occurred. Nothing was saved."))
