"""Who may act where: every account is scoped to a place of the tree."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from .models import Household, Role, Shop, User, Village, VillagerGroup

#: Roles that record awards and deductions in the field.
RECORDERS = (Role.CADRE, Role.COMMITTEE)


def _as_tuple(roles: Role | Iterable[Role]) -> tuple[Role, ...]:
    return (roles,) if isinstance(roles, Role) else tuple(roles)


def covers_household(user: User, household: Household, roles: Role | Iterable[Role]) -> bool:
    """Return whether one of the user's grants in ``roles`` reaches this household."""
    roles = _as_tuple(roles)
    group = household.group
    for grant in user.grants:
        if grant.role not in roles:
            continue
        if (
            grant.household_id == household.id
            or grant.group_id == group.id
            or grant.village_id == group.village_id
            or (grant.town_id is not None and grant.town_id == group.village.town_id)
        ):
            return True
    return False


def covers_village(user: User, village: Village, roles: Role | Iterable[Role]) -> bool:
    """Return whether a grant in ``roles`` covers the whole village (or its town)."""
    roles = _as_tuple(roles)
    return any(
        grant.role in roles and (grant.village_id == village.id or grant.town_id == village.town_id)
        for grant in user.grants
    )


def covers_group(user: User, group: VillagerGroup, roles: Role | Iterable[Role]) -> bool:
    """Return whether a grant in ``roles`` covers the group (directly or via its village)."""
    roles = _as_tuple(roles)
    return any(grant.role in roles and grant.group_id == group.id for grant in user.grants) or (
        covers_village(user, group.village, roles)
    )


def covers_shop(user: User, shop: Shop) -> bool:
    """Return whether the user is a clerk of this shop."""
    return any(g.role is Role.CLERK and g.shop_id == shop.id for g in user.grants)


def household_filter(user: User, roles: Role | Iterable[Role]):
    """Return a SQL condition selecting the households the user's grants reach."""
    roles = _as_tuple(roles)
    conditions = []
    for grant in user.grants:
        if grant.role not in roles:
            continue
        if grant.household_id is not None:
            conditions.append(Household.id == grant.household_id)
        elif grant.group_id is not None:
            conditions.append(Household.group_id == grant.group_id)
        elif grant.village_id is not None:
            conditions.append(VillagerGroup.village_id == grant.village_id)
        elif grant.town_id is not None:
            conditions.append(
                VillagerGroup.village_id.in_(
                    sa.select(Village.id).where(Village.town_id == grant.town_id)
                )
            )
    return sa.or_(*conditions) if conditions else sa.false()
