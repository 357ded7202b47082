"""User accounts, their role grants, and server-side login sessions."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..models import (
    Household,
    LoginSession,
    Member,
    Role,
    RoleGrant,
    Shop,
    Town,
    User,
    Village,
    VillagerGroup,
)
from ..timeutil import utcnow
from .errors import InvalidInput

log = logging.getLogger(__name__)

PHONE_RE = re.compile(r"^1\d{10}$")
PIN_RE = re.compile(r"^\d{6}$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,40}$")
MIN_PASSWORD = 8

#: Which kind of place each role is scoped to.
_SCOPES: dict[Role, tuple[type, ...]] = {
    Role.VILLAGER: (Household,),
    Role.CADRE: (Village, VillagerGroup),
    Role.COMMITTEE: (Village,),
    Role.CLERK: (Shop,),
    Role.ADMIN: (Town,),
}
_COLUMN = {
    Town: "town",
    Village: "village",
    VillagerGroup: "group",
    Shop: "shop",
    Household: "household",
}

# Compared against when the account does not exist, so timing does not reveal it.
_DUMMY_HASH = generate_password_hash("not a real password")


def normalize_phone(value: str) -> str:
    """Return a mainland mobile number without spaces, dashes or a +86 prefix."""
    digits = re.sub(r"[\s\-()]", "", value or "")
    digits = digits.translate({ord(c): ord("0") + i for i, c in enumerate("０１２３４５６７８９")})
    if digits.startswith("+86"):
        digits = digits[3:]
    return digits


def check_phone(value: str) -> str:
    phone = normalize_phone(value)
    if not PHONE_RE.match(phone):
        raise InvalidInput(_l("Please enter an 11-digit mobile number."))
    return phone


def check_pin(pin: str) -> str:
    if not PIN_RE.match(pin or ""):
        raise InvalidInput(_l("The PIN must be exactly 6 digits."))
    return pin


def check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise InvalidInput(_l("The password must have at least %(n)s characters.", n=MIN_PASSWORD))
    return password


def fits(role: Role, place) -> bool:
    """Return whether a role can be held over this kind of place (a clerk over a shop…)."""
    return isinstance(place, _SCOPES[role])


def grant(user: User, role: Role, place) -> RoleGrant:
    """Give a user a role over a place of the right kind.

    Raises InvalidInput when the place does not fit the role.
    """
    if not fits(role, place):
        raise InvalidInput(_l("This role cannot be given for that place."))
    role_grant = RoleGrant(role=role, **{_COLUMN[type(place)]: place})
    user.grants.append(role_grant)
    db.session.flush()
    log.info("granted %s on %r to user %s", role.value, place, user.id)
    return role_grant


def create_staff(username: str, display_name: str, password: str) -> User:
    """Create a staff account that logs in with username and password.

    Raises InvalidInput for a malformed or taken username or a short password.
    """
    username = (username or "").strip()
    if not USERNAME_RE.match(username):
        raise InvalidInput(
            _l("Usernames are 3 to 40 letters, digits, dots, dashes or underscores.")
        )
    if db.session.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise InvalidInput(_l("That username is taken."))
    user = User(
        username=username,
        display_name=(display_name or username).strip()[:60],
        password_hash=generate_password_hash(check_password(password)),
    )
    db.session.add(user)
    db.session.flush()
    return user


def create_villager_login(member: Member, pin: str) -> User:
    """Let a household member log in with their phone number and a PIN set by a cadre.

    Raises InvalidInput when the member has no valid phone, it is taken, or the PIN is malformed.
    """
    phone = check_phone(member.phone or "")
    if db.session.scalar(sa.select(User.id).where(User.phone == phone)) is not None:
        raise InvalidInput(_l("That phone number already has an account."))
    user = User(
        phone=phone,
        display_name=member.name,
        member=member,
        pin_hash=generate_password_hash(check_pin(pin)),
    )
    db.session.add(user)
    db.session.flush()
    grant(user, Role.VILLAGER, member.household)
    return user


def set_pin(user: User, pin: str) -> None:
    """Replace a villager's PIN and end their open sessions."""
    user.pin_hash = generate_password_hash(check_pin(pin))
    end_all_sessions(user)


def set_password(user: User, password: str) -> None:
    """Replace a staff password and end their open sessions."""
    user.password_hash = generate_password_hash(check_password(password))
    end_all_sessions(user)


def authenticate_staff(username: str, password: str) -> User | None:
    """Return the active staff user with these credentials, or None."""
    user = db.session.scalar(sa.select(User).where(User.username == (username or "").strip()))
    return _verify(user, user.password_hash if user else None, password)


def authenticate_villager(phone: str, pin: str) -> User | None:
    """Return the active villager with this phone number and PIN, or None."""
    user = db.session.scalar(sa.select(User).where(User.phone == normalize_phone(phone)))
    return _verify(user, user.pin_hash if user else None, pin)


def _verify(user: User | None, stored: str | None, secret: str) -> User | None:
    ok = check_password_hash(stored or _DUMMY_HASH, secret or "")
    if user is None or stored is None or not ok or not user.is_active:
        return None
    return user


def start_session(user: User, lifetime: timedelta) -> LoginSession:
    """Open a new server-side session for a user who just proved who they are."""
    now = utcnow()
    login = LoginSession(
        id=secrets.token_urlsafe(32), user=user, created_at=now, expires_at=now + lifetime
    )
    user.last_login_at = now
    db.session.add(login)
    db.session.flush()
    log.info("user %s logged in", user.id)
    return login


def load_session(token: str) -> User | None:
    """Return the user of a live session token, or None when ended, expired or deactivated."""
    if not token:
        return None
    # With its user and grants in one query: every page checks the user's roles.
    login = db.session.get(
        LoginSession, token, options=[joinedload(LoginSession.user).joinedload(User.grants)]
    )
    if login is None or login.ended_at is not None or login.expires_at <= utcnow():
        return None
    user = login.user
    if not user.is_active:
        return None
    user.current_session_id = login.id
    return user


def end_session(token: str) -> None:
    """End one session; its cookie no longer authenticates anyone."""
    login = db.session.get(LoginSession, token)
    if login is not None and login.ended_at is None:
        login.ended_at = utcnow()


def end_all_sessions(user: User) -> None:
    """End every open session of a user (password change, deactivation)."""
    db.session.execute(
        sa.update(LoginSession)
        .where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .execution_options(synchronize_session=False)
    )
