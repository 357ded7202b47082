"""API: the love supermarket — catalogue, checkout, redemptions and voids (handheld scanners)."""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_smorest import Blueprint

from .. import access
from ..extensions import db
from ..models import Household, Identification, Item, Member, Redemption, Role, Shop
from ..services import cards, catalogue, redemptions
from . import ApiError, current_user, idempotent, page_of, service_key, token_required
from . import schemas as s
from .households import can_read

blp = Blueprint("api_shop", __name__, url_prefix="/api/v1", description="The love supermarket")


def can_see_shop(user, shop: Shop) -> bool:
    """Return whether the user may see a shop's catalogue, as the pages let them: its clerks and
    its town's administrators (the catalogue pages), and villagers of a household it serves
    while it is open for business (the villager's shop page)."""
    if catalogue.can_manage(user, shop):
        return True
    return any(
        grant.role is Role.VILLAGER
        and grant.household is not None
        and shop.is_active
        and shop.serves(grant.household)
        for grant in user.grants
    )


def shop_or_404(shop_id: int, *, counter: bool = False) -> Shop:
    """Return a shop the caller may see (or serve at, with counter=True); 404 otherwise."""
    shop = db.session.get(Shop, shop_id)
    user = current_user()
    allowed = (
        access.covers_shop(user, shop) if shop and counter else shop and can_see_shop(user, shop)
    )
    if not allowed:
        raise ApiError(404, "not_found", _("There is no such shop, or it is not yours."))
    return shop


def redemption_or_404(redemption_id: int) -> Redemption:
    """Return a redemption of the caller's shop or of a household of the caller's village."""
    redemption = db.session.get(Redemption, redemption_id)
    user = current_user()
    if redemption is None or not (
        access.covers_shop(user, redemption.shop)
        or access.covers_village(user, redemption.household.group.village, Role.COMMITTEE)
    ):
        raise ApiError(404, "not_found", _("There is no such redemption, or it is not yours."))
    return redemption


@blp.route("/shops/<int:shop_id>/items", methods=["GET"])
@token_required()
@blp.arguments(s.PageQuery, location="query", as_kwargs=True)
@blp.response(200, s.ItemPage)
def items(shop_id: int, page: int, per_page: int):
    """Return the shop's goods on sale with their price and stock."""
    shop = shop_or_404(shop_id)
    query = sa.select(Item).where(Item.shop_id == shop.id, Item.is_active.is_(True))
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Item.category, Item.name, Item.id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return page_of(rows, page, per_page, total)


def _household_for(shop: Shop, body: dict) -> tuple[Household, Identification, object]:
    if ("card" in body) == ("household_id" in body):
        raise ApiError(
            422,
            "invalid_input",
            _("Give either the scanned card or a household_id, not both."),
            {"card": [_("Give either card or household_id.")]},
        )
    if "card" in body:
        card = cards.resolve(body["card"])
        via = (
            Identification.QR
            if len(cards.normalise(body["card"])) == cards.TOKEN_LENGTH
            else Identification.CODE
        )
        return card.household, via, card
    household = db.session.get(Household, body["household_id"])
    if household is None or not can_read(current_user(), household):
        raise ApiError(
            404, "not_found", _("There is no such household, or it is not yours to see.")
        )
    return household, Identification.LOOKUP, None


@blp.route("/shops/<int:shop_id>/checkouts", methods=["POST"])
@token_required(Role.CLERK)
@idempotent(required=True)
@blp.arguments(s.CheckoutRequest)
@blp.response(201, s.Redemption)
def checkout(body: dict, shop_id: int):
    """Redeem a cart for a household in one transaction (Idempotency-Key required).

    Refusals: 409 `insufficient_points`, `out_of_stock`, `outside_exchange_window`;
    422 `card_revoked`, `invalid_input`; 403 when the shop does not serve the household.
    """
    shop = shop_or_404(shop_id, counter=True)
    household, via, card = _household_for(shop, body)
    member = None
    if "member_id" in body:
        member = db.session.get(Member, body["member_id"])
        if member is None:
            raise ApiError(
                422, "invalid_input", _("That person is not a member of this household.")
            )
    cart: dict[int, int] = {}
    for line in body["items"]:
        cart[line["item_id"]] = cart.get(line["item_id"], 0) + line["quantity"]
    redemption, _created = redemptions.checkout(
        shop=shop,
        household=household,
        cart=cart,
        clerk=current_user(),
        key=service_key(_idempotency_key()),
        identified_by=via,
        card=card,
        member=member,
        expected_total=body.get("expected_total"),
    )
    return redemption


def _idempotency_key() -> str:
    from flask import g

    return g.idempotency_key


@blp.route("/redemptions/<int:redemption_id>", methods=["GET"])
@token_required(Role.CLERK, Role.COMMITTEE)
@blp.response(200, s.Redemption)
def redemption(redemption_id: int):
    """Return a redemption with its lines (voided units included)."""
    return redemption_or_404(redemption_id)


@blp.route("/redemptions/<int:redemption_id>/voids", methods=["POST"])
@token_required(Role.CLERK, Role.COMMITTEE)
@idempotent(required=True)
@blp.arguments(s.VoidRequest)
@blp.response(201, s.Void)
def void(body: dict, redemption_id: int):
    """Take back units of a redemption (Idempotency-Key required): points and goods go back.

    A clerk may void only on the day of the redemption; a committee member of the
    household's village any day.
    """
    record = redemption_or_404(redemption_id)
    quantities = None
    if "lines" in body:
        quantities = {}
        for line in body["lines"]:
            quantities[line["line_id"]] = quantities.get(line["line_id"], 0) + line["quantity"]
    result, _created = redemptions.void(
        record,
        current_user(),
        reason=body["reason"],
        key=service_key(_idempotency_key()),
        quantities=quantities,
    )
    return result
