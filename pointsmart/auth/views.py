"""Login for villagers (phone + PIN) and staff (username + password), logout, language, display."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from ..extensions import db, limiter
from ..models import Role
from ..services import accounts
from .forms import EmptyForm, StaffLoginForm, VillagerLoginForm

bp = Blueprint("auth", __name__)


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _login_identity() -> str:
    # Limit guesses per account too, so rotating addresses does not help an attacker.
    # Key on the field the endpoint authenticates with, normalized as it is looked up,
    # so neither an extra form field nor another spelling starts a fresh count.
    if request.endpoint == "auth.staff_login":
        return "login:staff:" + request.form.get("username", "").strip()[:40]
    return "login:phone:" + accounts.normalize_phone(request.form.get("phone", ""))[:40]


def safe_next(target: str | None) -> str | None:
    """Return ``target`` if it is a path on this site, else None (no open redirects)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    # Browsers read "\" as "/" and drop tabs and newlines: "/\evil.example" leaves the site.
    if "\\" in target or any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return None
    return target


def _finish_login(user, lifetime):
    login = accounts.start_session(user, lifetime)
    user.current_session_id = login.id
    db.session.commit()
    locale = session.get("locale")
    session.clear()  # a fresh session at login: nothing carried over from before
    if locale:
        session["locale"] = locale
    session.permanent = True
    login_user(user)
    return redirect(safe_next(request.form.get("next")) or url_for("main.home"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_login_identity)
def login():
    """Villager login with phone number and PIN (the default login page)."""
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = VillagerLoginForm(next=request.args.get("next"))
    if form.validate_on_submit():
        user = accounts.authenticate_villager(form.phone.data, form.pin.data)
        if user is not None and user.has_role(Role.VILLAGER):
            return _finish_login(user, current_app.config["VILLAGER_SESSION_LIFETIME"])
        flash(
            _("Wrong mobile number or PIN. Ask your village cadre if you forgot the PIN."),
            "error",
        )
    return render_template("auth/login.html", form=form)


@bp.route("/login/staff", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_login_identity)
def staff_login():
    """Staff login with username and password."""
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = StaffLoginForm(next=request.args.get("next"))
    if form.validate_on_submit():
        user = accounts.authenticate_staff(form.username.data, form.password.data)
        if user is not None:
            return _finish_login(user, current_app.config["STAFF_SESSION_LIFETIME"])
        flash(_("Wrong username or password."), "error")
    return render_template("auth/staff_login.html", form=form)


@bp.post("/logout")
def logout():
    """End the session on the server, so a copied cookie stops working too."""
    form = EmptyForm()
    if form.validate_on_submit() and current_user.is_authenticated:
        accounts.end_session(current_user.current_session_id)
        db.session.commit()
        logout_user()
        locale = session.get("locale")
        session.clear()
        if locale:
            session["locale"] = locale
        flash(_("You have logged out."), "info")
    return redirect(url_for("auth.login"))


@bp.post("/language")
def language():
    """Switch the interface language for this browser."""
    form = EmptyForm()
    chosen = request.form.get("locale")
    if form.validate_on_submit() and chosen in current_app.config["LANGUAGES"]:
        session["locale"] = chosen
    return redirect(safe_next(request.form.get("next")) or url_for("main.home"))


#: Large text and high contrast, per browser, kept for a year (and across logins).
DISPLAY_COOKIE = "display"
LARGE_DISPLAY = "large"
DISPLAY_COOKIE_AGE = 365 * 24 * 3600


@bp.app_context_processor
def display_mode():
    # Every page, logged in or not, puts the class on <html> and links large.css.
    return {"large_display": request.cookies.get(DISPLAY_COOKIE) == LARGE_DISPLAY}


@bp.post("/display")
def display():
    """Turn large text and high contrast on or off for this browser."""
    form = EmptyForm()
    response = redirect(safe_next(request.form.get("next")) or url_for("main.home"))
    if not form.validate_on_submit():
        return response
    secure = current_app.config.get("SESSION_COOKIE_SECURE", False)
    if request.form.get("mode") == LARGE_DISPLAY:
        response.set_cookie(
            DISPLAY_COOKIE,
            LARGE_DISPLAY,
            max_age=DISPLAY_COOKIE_AGE,
            samesite="Lax",
            secure=secure,
            httponly=True,  # read by the server only
        )
    elif request.form.get("mode") == "normal":
        response.delete_cookie(DISPLAY_COOKIE, samesite="Lax", secure=secure, httponly=True)
    return response
