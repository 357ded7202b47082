"""The catalogue of the shops that serve the household: what it can get with its points now."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import render_template

from ..auth import role_required
from ..extensions import db
from ..models import Household, Item, Role, Shop
from ..services import catalogue, ledger
from . import bp, my_household


@dataclass(frozen=True)
class ShopCatalogue:
    """One shop as the villager sees it: when it exchanges, and its goods split by price."""

    shop: Shop
    window: str
    is_open: bool
    affordable: list[Item]
    too_dear: list[Item]


def serving_shops(household: Household) -> list[Shop]:
    """Return the open-for-business shops where the household may redeem, its village's first."""
    village = household.group.village
    return db.session.scalars(
        sa.select(Shop)
        .where(
            Shop.is_active.is_(True),
            sa.or_(
                Shop.village_id == village.id,
                sa.and_(Shop.village_id.is_(None), Shop.town_id == village.town_id),
            ),
        )
        .order_by(Shop.village_id.is_(None), Shop.name, Shop.id)
    ).all()


def shop_catalogues(household: Household, spendable: int) -> list[ShopCatalogue]:
    """Return each serving shop's goods on sale, those within ``spendable`` points first."""
    shops = serving_shops(household)
    items: dict[int, list[Item]] = {shop.id: [] for shop in shops}
    for item in db.session.scalars(
        sa.select(Item)
        .where(Item.shop_id.in_(items), Item.is_active.is_(True))
        .order_by(Item.points, Item.name, Item.id)
    ):
        items[item.shop_id].append(item)
    return [
        ShopCatalogue(
            shop=shop,
            window=catalogue.describe_window(shop),
            is_open=catalogue.is_open(shop),
            affordable=[i for i in items[shop.id] if i.points <= spendable],
            too_dear=[i for i in items[shop.id] if i.points > spendable],
        )
        for shop in shops
    ]


@bp.get("/shop")
@role_required(Role.VILLAGER)
def shop():
    """Show the goods the household may exchange its points for, and what it can afford now."""
    household = my_household()
    balance = ledger.balance_of(household)
    return render_template(
        "villager/shop.html",
        household=household,
        balance=balance,
        shops=shop_catalogues(household, balance.spendable),
    )
