"""Creating the place tree; every place that holds points gets its accounts here."""

from __future__ import annotations

import logging

from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..models import Household, Member, Shop, Town, Village, VillagerGroup
from . import cards, ledger
from .errors import InvalidInput

log = logging.getLogger(__name__)


def _name(value: str, what) -> str:
    value = (value or "").strip()
    if not value or len(value) > 60:
        raise InvalidInput(_l("%(what)s must be 1 to 60 characters.", what=what))
    return value


def create_town(name: str) -> Town:
    """Add a town."""
    town = Town(name=_name(name, _l("The town name")))
    db.session.add(town)
    db.session.flush()
    return town


def create_village(town: Town, name: str, **settings) -> Village:
    """Add a village to a town, with its ledger accounts."""
    village = Village(town=town, name=_name(name, _l("The village name")), **settings)
    db.session.add(village)
    ledger.open_village_accounts(village)
    db.session.flush()
    return village


def create_group(village: Village, name: str) -> VillagerGroup:
    """Add a villager group to a village."""
    group = VillagerGroup(village=village, name=_name(name, _l("The group name")))
    db.session.add(group)
    db.session.flush()
    return group


def create_household(
    group: VillagerGroup, house_number: str, head_name: str, *, head_phone: str | None = None
) -> Household:
    """Add a household with its head member, its points accounts and its card."""
    household = Household(
        group=group,
        house_number=_name(house_number, _l("The house number")),
        name=_name(head_name, _l("The name")),
    )
    db.session.add(household)
    db.session.add(Member(household=household, name=household.name, phone=head_phone, is_head=True))
    ledger.open_household_accounts(household)
    db.session.flush()
    cards.issue(household)
    return household


def add_member(household: Household, name: str, *, phone: str | None = None) -> Member:
    """Add a member to a household."""
    member = Member(household=household, name=_name(name, _l("The name")), phone=phone)
    db.session.add(member)
    db.session.flush()
    return member


def create_shop(town: Town, name: str, village: Village | None = None) -> Shop:
    """Add a love supermarket for one village, or for the whole town when village is None."""
    shop = Shop(town=town, village=village, name=_name(name, _l("The shop name")))
    db.session.add(shop)
    ledger.open_shop_account(shop)
    db.session.flush()
    return shop
