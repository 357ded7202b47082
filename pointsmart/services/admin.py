"""Town administration: villages, groups, shops, staff accounts and villager logins.

A town administrator acts only inside the towns they administer: every function checks the
actor's scope, raises a domain error with a message for the person, writes an audit entry in
the same transaction as the change, flushes and never commits.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from .. import access
from ..extensions import db
from ..models import (
    ApiToken,
    Household,
    Member,
    Role,
    RoleGrant,
    Shop,
    Town,
    User,
    Village,
    VillagerGroup,
)
from . import accounts, api_tokens, audit, places
from .errors import Forbidden, InvalidInput

log = logging.getLogger(__name__)

#: Roles an administrator gives to staff accounts (villagers get theirs with their login).
STAFF_ROLES = (Role.CADRE, Role.COMMITTEE, Role.CLERK, Role.ADMIN)

_WRONG_PLACE = {
    Role.ADMIN: _l("A town administrator serves a town: choose the town."),
    Role.COMMITTEE: _l("A committee member serves a village: choose a village."),
    Role.CADRE: _l("A cadre serves a village or one of its groups: choose one."),
    Role.CLERK: _l("A clerk serves a shop: choose a shop."),
}
_OUTSIDE = _l("That place is not in a town you administer.")


# --- scope -------------------------------------------------------------------------------


def town_ids(actor: User) -> set[int]:
    """Return the ids of the towns the actor administers."""
    return {g.town_id for g in actor.grants if g.role is Role.ADMIN and g.town_id is not None}


def town_of(place) -> Town:
    """Return the town a place (town, village, group, shop or household) belongs to."""
    if isinstance(place, Town):
        return place
    if isinstance(place, (Village, Shop)):
        return place.town
    if isinstance(place, VillagerGroup):
        return place.village.town
    if isinstance(place, Household):
        return place.group.village.town
    raise InvalidInput(_l("Choose a place."))


def administers(actor: User, place) -> bool:
    """Return whether the actor administers the town the place belongs to."""
    return town_of(place).id in town_ids(actor)


def _require(actor: User, place) -> Town:
    town = town_of(place)
    if town.id not in town_ids(actor):
        raise Forbidden(_OUTSIDE)
    return town


def _grant_town_id(grant: RoleGrant) -> int:
    return town_of(grant.place).id


def is_staff(user: User) -> bool:
    """Return whether the account logs in with a username (not a villager, not an API token)."""
    return user.username is not None


def sees_account(actor: User, user: User) -> bool:
    """Return whether a staff account holds a role in one of the actor's towns."""
    mine = town_ids(actor)
    return is_staff(user) and any(_grant_town_id(g) in mine for g in user.grants)


def manages_account(actor: User, user: User) -> bool:
    """Return whether every role of the staff account is in one of the actor's towns."""
    mine = town_ids(actor)
    return (
        is_staff(user) and bool(user.grants) and all(_grant_town_id(g) in mine for g in user.grants)
    )


def _require_account(actor: User, user: User) -> None:
    if not sees_account(actor, user):
        raise Forbidden()
    if not manages_account(actor, user):
        raise Forbidden(
            _l(
                "This account also serves another town; only an administrator of every town "
                "it serves can change it."
            )
        )


def _places(place) -> tuple[int | None, int | None]:
    """Return (town id, village id) of a place, for its audit entries."""
    if isinstance(place, Town):
        return place.id, None
    if isinstance(place, Village):
        return place.town_id, place.id
    if isinstance(place, VillagerGroup):
        return place.village.town_id, place.village_id
    if isinstance(place, Shop):
        return place.town_id, place.village_id
    if isinstance(place, Household):
        return place.group.village.town_id, place.group.village_id
    return None, None


def _account_places(user: User) -> tuple[int | None, int | None]:
    """Return (town id, village id) for an account's audit entries: its first role's place."""
    return _places(user.grants[0].place) if user.grants else (None, None)


def staff_filter(ids: set[int] | list[int]):
    """Return a SQL condition selecting role grants over places of the given towns."""
    ids = list(ids)
    villages = sa.select(Village.id).where(Village.town_id.in_(ids))
    return sa.or_(
        RoleGrant.town_id.in_(ids),
        RoleGrant.village_id.in_(villages),
        RoleGrant.group_id.in_(
            sa.select(VillagerGroup.id).where(VillagerGroup.village_id.in_(villages))
        ),
        RoleGrant.shop_id.in_(sa.select(Shop.id).where(Shop.town_id.in_(ids))),
    )


def staff_query(actor: User, search: str = "") -> sa.Select:
    """Return a query of the staff accounts with a role in the actor's towns, by name."""
    holders = sa.select(RoleGrant.user_id).where(
        RoleGrant.role != Role.VILLAGER, staff_filter(town_ids(actor))
    )
    query = sa.select(User).where(User.username.is_not(None), User.id.in_(holders))
    search = (search or "").strip()
    if search:
        pattern = f"%{search}%"
        query = query.where(sa.or_(User.username.ilike(pattern), User.display_name.ilike(pattern)))
    return query.order_by(User.is_active.desc(), User.display_name, User.id)


# --- names -------------------------------------------------------------------------------


def _name(value: str, what) -> str:
    value = " ".join((value or "").split())
    if not value or len(value) > 60:
        raise InvalidInput(_l("%(what)s must be 1 to 60 characters.", what=what))
    return value


# --- villages and groups -----------------------------------------------------------------


def _village_name_free(town: Town, name: str, village: Village | None = None) -> None:
    taken = db.session.scalar(
        sa.select(Village.id).where(Village.town_id == town.id, Village.name == name)
    )
    if taken is not None and (village is None or taken != village.id):
        raise InvalidInput(
            _l("%(town)s already has a village named %(name)s.", town=town.name, name=name)
        )


def create_village(actor: User, town: Town, name: str) -> Village:
    """Add a village with its ledger accounts to a town the actor administers.

    Raises Forbidden, InvalidInput.
    """
    _require(actor, town)
    name = _name(name, _l("The village name"))
    _village_name_free(town, name)
    village = places.create_village(town, name)
    audit.record("village.create", actor, village, summary=name, after={"name": name})
    log.info("user %s created village %s in town %s", actor.id, village.id, town.id)
    return village


def rename_village(actor: User, village: Village, name: str) -> Village:
    """Rename a village; its history and boards keep pointing at it. Raises Forbidden, InvalidInput."""
    _require(actor, village)
    name = _name(name, _l("The village name"))
    if name == village.name:
        return village
    _village_name_free(village.town, name, village)
    before = village.name
    village.name = name
    db.session.flush()
    audit.record(
        "village.rename",
        actor,
        village,
        summary=f"{before} → {name}",
        before={"name": before},
        after={"name": name},
    )
    log.info("user %s renamed village %s", actor.id, village.id)
    return village


def _group_name_free(village: Village, name: str, group: VillagerGroup | None = None) -> None:
    taken = db.session.scalar(
        sa.select(VillagerGroup.id).where(
            VillagerGroup.village_id == village.id, VillagerGroup.name == name
        )
    )
    if taken is not None and (group is None or taken != group.id):
        raise InvalidInput(
            _l("%(village)s already has a group named %(name)s.", village=village.name, name=name)
        )


def create_group(actor: User, village: Village, name: str) -> VillagerGroup:
    """Add a villager group to a village of the actor's town. Raises Forbidden, InvalidInput."""
    _require(actor, village)
    name = _name(name, _l("The group name"))
    _group_name_free(village, name)
    group = places.create_group(village, name)
    audit.record(
        "group.create", actor, group, summary=f"{village.name} · {name}", after={"name": name}
    )
    log.info("user %s created group %s in village %s", actor.id, group.id, village.id)
    return group


def rename_group(actor: User, group: VillagerGroup, name: str) -> VillagerGroup:
    """Rename a villager group. Raises Forbidden, InvalidInput."""
    _require(actor, group)
    name = _name(name, _l("The group name"))
    if name == group.name:
        return group
    _group_name_free(group.village, name, group)
    before = group.name
    group.name = name
    db.session.flush()
    audit.record(
        "group.rename",
        actor,
        group,
        summary=f"{group.village.name} · {before} → {name}",
        before={"name": before},
        after={"name": name},
    )
    log.info("user %s renamed group %s", actor.id, group.id)
    return group


# --- shops -------------------------------------------------------------------------------


def create_shop(actor: User, town: Town, name: str, village: Village | None = None) -> Shop:
    """Add a love supermarket for one village of the town, or for the whole town (None).

    Raises Forbidden, InvalidInput.
    """
    _require(actor, town)
    if village is not None and village.town_id != town.id:
        raise Forbidden(_OUTSIDE)
    name = _name(name, _l("The shop name"))
    if db.session.scalar(sa.select(Shop.id).where(Shop.town_id == town.id, Shop.name == name)):
        raise InvalidInput(
            _l("%(town)s already has a shop named %(name)s.", town=town.name, name=name)
        )
    shop = places.create_shop(town, name, village)
    where = village.name if village is not None else town.name
    audit.record(
        "shop.create",
        actor,
        shop,
        summary=f"{name} ({where})",
        after={"name": name, "village_id": shop.village_id},
    )
    log.info("user %s created shop %s in town %s", actor.id, shop.id, town.id)
    return shop


def set_shop_active(actor: User, shop: Shop, active: bool) -> Shop:
    """Open a shop for exchanges again, or close it (its history stays). Raises Forbidden."""
    _require(actor, shop)
    active = bool(active)
    if shop.is_active != active:
        shop.is_active = active
        db.session.flush()
        audit.record(
            "shop.activate" if active else "shop.deactivate",
            actor,
            shop,
            summary=shop.name,
            before={"is_active": not active},
            after={"is_active": active},
        )
        log.info("user %s set shop %s active=%s", actor.id, shop.id, active)
    return shop


# --- staff accounts ----------------------------------------------------------------------


def _check_grant(actor: User, role: Role, place, held: list[RoleGrant] = ()) -> None:
    if role not in STAFF_ROLES:
        raise InvalidInput(_l("Choose a staff role."))
    if place is None:
        raise InvalidInput(_l("Choose a place."))
    if not accounts.fits(role, place):
        raise InvalidInput(_WRONG_PLACE[role])
    _require(actor, place)
    if any(g.role is role and g.place is place for g in held):
        raise InvalidInput(_l("The account already has this role there."))


def _describe_grant(role: Role, place) -> dict:
    return {"role": role.value, "place": type(place).__name__.lower(), "place_id": place.id}


def create_staff(
    actor: User, username: str, display_name: str, password: str, role: Role, place
) -> User:
    """Create a staff account with one role over one place of the actor's town.

    Raises Forbidden, InvalidInput.
    """
    display_name = _name(display_name, _l("The name"))
    _check_grant(actor, role, place)
    user = accounts.create_staff(username, display_name, password)
    accounts.grant(user, role, place)
    town_id, village_id = _places(place)
    audit.record(
        "account.create",
        actor,
        user,
        summary=f"{user.username} {display_name}: {role.value} {place.name}",
        after={"username": user.username, "display_name": display_name}
        | _describe_grant(role, place),
        town_id=town_id,
        village_id=village_id,
    )
    log.info("user %s created staff account %s (%s)", actor.id, user.id, role.value)
    return user


def add_grant(actor: User, user: User, role: Role, place) -> RoleGrant:
    """Give a staff account of the actor's town one more role. Raises Forbidden, InvalidInput."""
    if not sees_account(actor, user):
        raise Forbidden()
    _check_grant(actor, role, place, user.grants)
    role_grant = accounts.grant(user, role, place)
    town_id, village_id = _places(place)
    audit.record(
        "account.grant",
        actor,
        user,
        summary=f"{user.username}: + {role.value} {place.name}",
        after=_describe_grant(role, place),
        town_id=town_id,
        village_id=village_id,
    )
    return role_grant


def remove_grant(actor: User, role_grant: RoleGrant) -> User:
    """Take one role away from a staff account.

    The last role is never removed (the account would belong to no town and nobody could
    manage it): deactivate the account instead. Raises Forbidden, InvalidInput.
    """
    user = role_grant.user
    if not sees_account(actor, user) or role_grant.role is Role.VILLAGER:
        raise Forbidden()
    place = role_grant.place
    _require(actor, place)
    if len(user.grants) == 1:
        raise InvalidInput(
            _l(
                "This is the account's only role, so it was not removed: an account without "
                "a role belongs to no town. Give it another role first, or deactivate it."
            )
        )
    if user.id == actor.id and role_grant.role is Role.ADMIN:
        raise InvalidInput(
            _l("You cannot remove your own administrator role; ask another administrator.")
        )
    town_id, village_id = _places(place)
    before = _describe_grant(role_grant.role, place)
    user.grants.remove(role_grant)
    db.session.flush()
    audit.record(
        "account.revoke_grant",
        actor,
        user,
        summary=f"{user.username}: − {before['role']} {place.name}",
        before=before,
        town_id=town_id,
        village_id=village_id,
    )
    log.info("user %s removed a %s role from account %s", actor.id, before["role"], user.id)
    return user


def deactivate(actor: User, user: User) -> User:
    """Deactivate a staff account: it can no longer log in and its open sessions end at once.

    Its history (awards, approvals, sales, audit entries) stays, and so do its roles, for a
    reactivation. API tokens issued to the person are revoked. Raises Forbidden, InvalidInput.
    """
    _require_account(actor, user)
    if user.id == actor.id:
        raise InvalidInput(_l("You cannot deactivate your own account."))
    if not user.is_active:
        return user
    user.is_active = False
    accounts.end_all_sessions(user)
    tokens = db.session.scalars(
        sa.select(ApiToken).where(ApiToken.owner_id == user.id, ApiToken.revoked_at.is_(None))
    ).all()
    for token in tokens:
        if token.town_id in town_ids(actor):
            api_tokens.revoke(token, actor)
    db.session.flush()
    town_id, village_id = _account_places(user)
    audit.record(
        "account.deactivate",
        actor,
        user,
        summary=f"{user.username} {user.display_name}",
        before={"is_active": True},
        after={"is_active": False},
        town_id=town_id,
        village_id=village_id,
    )
    log.info("user %s deactivated account %s", actor.id, user.id)
    return user


def reactivate(actor: User, user: User) -> User:
    """Let a deactivated staff account log in again. Raises Forbidden."""
    _require_account(actor, user)
    if user.is_active:
        return user
    user.is_active = True
    db.session.flush()
    town_id, village_id = _account_places(user)
    audit.record(
        "account.reactivate",
        actor,
        user,
        summary=f"{user.username} {user.display_name}",
        before={"is_active": False},
        after={"is_active": True},
        town_id=town_id,
        village_id=village_id,
    )
    log.info("user %s reactivated account %s", actor.id, user.id)
    return user


def reset_password(actor: User, user: User, password: str) -> User:
    """Give a staff account a new password and end its open sessions. Raises Forbidden, InvalidInput."""
    _require_account(actor, user)
    accounts.set_password(user, password)
    db.session.flush()
    town_id, village_id = _account_places(user)
    audit.record(
        "account.reset_password",
        actor,
        user,
        summary=f"{user.username} {user.display_name}",
        town_id=town_id,
        village_id=village_id,
    )
    log.info("user %s reset the password of account %s", actor.id, user.id)
    return user


# --- villager logins ---------------------------------------------------------------------


@dataclass(frozen=True)
class Slip:
    """What the one-time slip shows: the PIN is in clear here only, never stored."""

    user: User
    member: Member
    pin: str


def _weak(pin: str) -> bool:
    digits = [int(c) for c in pin]
    steps = {(b - a) % 10 for a, b in zip(digits, digits[1:], strict=False)}
    # 000000, 123456, 654321, 890123, 135791, 121212…: the first things anyone tries.
    return len(steps) == 1 or len(set(digits)) <= 2


def new_pin() -> str:
    """Return a random 6-digit PIN that is not one of the obvious ones."""
    while True:
        pin = f"{secrets.randbelow(10**6):06d}"
        if not _weak(pin):
            return pin


def _require_member(actor: User, member: Member) -> None:
    _require(actor, member.household)


def login_of(member: Member) -> User | None:
    """Return the villager login of a household member, or None."""
    return db.session.scalar(sa.select(User).where(User.member_id == member.id))


def mask_phone(phone: str | None) -> str:
    """Return a phone number with its middle hidden: 138****0001."""
    if not phone:
        return ""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


def create_villager_login(actor: User, member: Member, phone: str) -> Slip:
    """Let a household member log in with their phone number and a PIN made up here.

    The member's phone becomes the given one. Returns the slip with the PIN to print once.
    Raises Forbidden, InvalidInput.
    """
    _require_member(actor, member)
    if not member.is_active or not member.household.is_active:
        raise InvalidInput(_l("This person is no longer on the roster; no login was made."))
    if login_of(member) is not None:
        raise InvalidInput(_l("This person already has a login; reset the PIN instead."))
    phone = accounts.check_phone(phone)
    if db.session.scalar(sa.select(User.id).where(User.phone == phone)) is not None:
        raise InvalidInput(_l("That phone number already has an account."))
    member.phone = phone
    pin = new_pin()
    user = accounts.create_villager_login(member, pin)
    audit.record(
        "villager.create_login",
        actor,
        member,
        summary=f"{member.household.name} · {member.name} {mask_phone(phone)}",
        after={"user_id": user.id},
    )
    log.info("user %s made a login for member %s", actor.id, member.id)
    return Slip(user, member, pin)


def reset_pin(actor: User, member: Member) -> Slip:
    """Give a villager a new random PIN; their open sessions end and the old PIN stops working.

    Raises Forbidden, InvalidInput.
    """
    _require_member(actor, member)
    user = login_of(member)
    if user is None:
        raise InvalidInput(_l("This person has no login yet; create one first."))
    pin = new_pin()
    accounts.set_pin(user, pin)
    db.session.flush()
    audit.record(
        "villager.reset_pin",
        actor,
        member,
        summary=f"{member.household.name} · {member.name} {mask_phone(user.phone)}",
        after={"user_id": user.id},
    )
    log.info("user %s reset the PIN of member %s", actor.id, member.id)
    return Slip(user, member, pin)


# --- village settings --------------------------------------------------------------------


def can_edit_settings(user: User, village: Village) -> bool:
    """Return whether the user keeps the village's settings: its committee or the town admin."""
    return access.covers_village(user, village, (Role.COMMITTEE, Role.ADMIN))


def set_negative_balance(actor: User, village: Village, allowed: bool) -> Village:
    """Set whether deductions may take a household's spendable balance below zero.

    Raises Forbidden.
    """
    if not can_edit_settings(actor, village):
        raise Forbidden()
    allowed = bool(allowed)
    if village.allow_negative_balance != allowed:
        village.allow_negative_balance = allowed
        db.session.flush()
        audit.record(
            "settings.negative_balance",
            actor,
            village,
            summary=f"{village.name}: {allowed}",
            before={"allow_negative_balance": not allowed},
            after={"allow_negative_balance": allowed},
        )
        log.info("user %s set negative balances of village %s to %s", actor.id, village.id, allowed)
    return village
