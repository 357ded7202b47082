"""API tokens: issued by a town administrator, shown once, stored hashed, revocable.

A token acts through a user of its own that holds exactly one grant (the token's role over
the token's place), so every service checks a token's calls as it checks a person's, and the
audit log names the token. Revoking a token deactivates that user at once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..models import ApiToken, Household, Role, Shop, Town, User, Village, VillagerGroup
from ..timeutil import utcnow
from . import accounts, audit
from .errors import Forbidden, InvalidInput

log = logging.getLogger(__name__)

PREFIX = "ps_"


def _hash(secret: str) -> str:
    # The secret has 256 random bits: a fast hash is enough, nothing to slow down.
    return hashlib.sha256(secret.encode()).hexdigest()


def _town_of(place) -> Town:
    if isinstance(place, Town):
        return place
    if isinstance(place, Village):
        return place.town
    if isinstance(place, VillagerGroup):
        return place.village.town
    if isinstance(place, Shop):
        return place.town
    if isinstance(place, Household):
        return place.group.village.town
    raise InvalidInput(_l("This role cannot be given for that place."))


def can_issue(user: User, town: Town) -> bool:
    """Return whether the user administers the town."""
    return any(g.role is Role.ADMIN and g.town_id == town.id for g in user.grants)


@dataclass(frozen=True)
class Issued:
    token: ApiToken
    #: The bearer secret: shown to the administrator once, never stored.
    secret: str


def issue(actor: User, name: str, role: Role, place, owner: User | None = None) -> Issued:
    """Issue a token with one role over one place of the actor's town.

    Raises Forbidden, InvalidInput.
    """
    name = (name or "").strip()
    if not name or len(name) > 60:
        raise InvalidInput(_l("Name the token (what or who it is for), at most 60 characters."))
    town = _town_of(place)
    if not can_issue(actor, town):
        raise Forbidden()
    secret = PREFIX + secrets.token_urlsafe(32)
    user = User(display_name=f"API {name}"[:60], is_active=True)
    db.session.add(user)
    db.session.flush()
    accounts.grant(user, role, place)
    token = ApiToken(
        user=user,
        owner=owner,
        name=name,
        secret_hash=_hash(secret),
        prefix=secret[:10],
        town_id=town.id,
        created_by=actor,
    )
    db.session.add(token)
    db.session.flush()
    audit.record(
        "api_token.issue",
        actor,
        token,
        summary=f"{name}: {role.value} {getattr(place, 'name', '')}",
        town_id=town.id,
    )
    log.info("user %s issued API token %s (%s)", actor.id, token.id, role.value)
    return Issued(token, secret)


def revoke(token: ApiToken, actor: User) -> ApiToken:
    """Revoke a token: it stops working at once. Raises Forbidden."""
    town = db.session.get(Town, token.town_id)
    if not can_issue(actor, town):
        raise Forbidden()
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        token.revoked_by = actor
        token.user.is_active = False
        db.session.flush()
        audit.record("api_token.revoke", actor, token, summary=token.name, town_id=town.id)
        log.info("user %s revoked API token %s", actor.id, token.id)
    return token


def authenticate(secret: str) -> ApiToken | None:
    """Return the active token of a bearer secret, or None."""
    if not secret or not secret.startswith(PREFIX) or len(secret) > 100:
        return None
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.secret_hash == _hash(secret)))
    if token is None or token.revoked_at is not None or not token.user.is_active:
        return None
    return token


def tokens_of(town_ids: list[int]) -> list[ApiToken]:
    """Return the tokens of the given towns, newest first."""
    return list(
        db.session.scalars(
            sa.select(ApiToken)
            .where(ApiToken.town_id.in_(town_ids))
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def scope_of(token: ApiToken):
    """Return the token's one grant."""
    (grant,) = token.user.grants
    return grant
