"""Authentication: login sessions and the one access decorator."""

from __future__ import annotations

from functools import wraps

from flask import Flask, abort, jsonify, request
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from ..extensions import login_manager
from ..models import Role


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please log in to continue.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = None  # server-side sessions do the job

    @login_manager.user_loader
    def load_user(token: str):
        from ..services.accounts import load_session

        return load_session(token)


def role_required(*roles: Role):
    """Let through logged-in users holding one of ``roles``; others go to login or get 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                wants_json = request.accept_mimetypes.best == "application/json"
                from ..api import is_api_request

                if is_api_request() or wants_json:
                    return jsonify(error={"code": "unauthenticated"}), 401
                return login_manager.unauthorized()
            if roles and not (current_user.roles & set(roles)):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = roles
        return wrapped

    return decorator
