"""Pages for love-supermarket clerks: the counter, the catalogue and stock, the day's closing."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, redirect, render_template, url_for
from flask_login import current_user

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import Item, Redemption, Role, Shop
from ..services import catalogue
from ..timeutil import local_today

bp = Blueprint("clerk", __name__, url_prefix="/clerk")


def clerk_shops() -> list[Shop]:
    """Return the shops the current user serves at as a clerk."""
    ids = [g.shop_id for g in current_user.grants if g.role is Role.CLERK]
    return db.session.scalars(sa.select(Shop).where(Shop.id.in_(ids)).order_by(Shop.name)).all()


def counter_shop_or_404(shop_id: int) -> Shop:
    """Return a shop the current user is a clerk of; 404 for any other."""
    shop = db.session.get(Shop, shop_id)
    if shop is None or not access.covers_shop(current_user, shop):
        abort(404)
    return shop


def managed_shop_or_404(shop_id: int) -> Shop:
    """Return a shop whose catalogue the user runs (its clerk or town admin); 404 otherwise."""
    shop = db.session.get(Shop, shop_id)
    if shop is None or not catalogue.can_manage(current_user, shop):
        abort(404)
    return shop


def managed_item_or_404(item_id: int) -> Item:
    """Return an item of a shop the user runs; 404 otherwise."""
    item = db.session.get(Item, item_id)
    if item is None or not catalogue.can_manage(current_user, item.shop):
        abort(404)
    return item


def redemption_or_404(redemption_id: int) -> Redemption:
    """Return a redemption of the user's shop, or of a household of the user's village (committee)."""
    redemption = db.session.get(Redemption, redemption_id)
    if redemption is None or not (
        access.covers_shop(current_user, redemption.shop)
        or access.covers_village(current_user, redemption.household.group.village, Role.COMMITTEE)
    ):
        abort(404)
    return redemption


def mask_phone(phone: str | None) -> str:
    """Return a phone number with its middle hidden: 138****0001."""
    if not phone:
        return ""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


@bp.get("/")
@role_required(Role.CLERK)
def home():
    """Send a clerk of one shop to its counter; list the shops of a clerk of several."""
    shops = clerk_shops()
    if len(shops) == 1:
        return redirect(url_for(".counter", shop_id=shops[0].id))
    return render_template("clerk/home.html", shops=shops, today=local_today())


# Views of this audience in their own modules; imported last, they register on bp.
from . import counter, day, stock  # noqa: E402, F401
