"""API: households — found by card, their balance and their history."""

from __future__ import annotations

import sqlalchemy as sa
from flask_smorest import Blueprint
from sqlalchemy.orm import selectinload

from .. import access
from ..extensions import db
from ..models import Household, Role, Shop, Transfer
from ..services import cards, ledger
from . import ApiError, current_user, page_of, token_required
from . import schemas as s

blp = Blueprint(
    "api_households", __name__, url_prefix="/api/v1", description="Households and their points"
)

#: Who may read a household: its villagers, the cadres and committee of its village or group,
#: its town's administrators, and clerks of a shop that serves it.
READERS = (Role.VILLAGER, Role.CADRE, Role.COMMITTEE, Role.ADMIN, Role.CLERK)


def can_read(user, household: Household) -> bool:
    """Return whether the user may see the household's points and history."""
    if access.covers_household(
        user, household, (Role.VILLAGER, Role.CADRE, Role.COMMITTEE, Role.ADMIN)
    ):
        return True
    shop_ids = [g.shop_id for g in user.grants if g.role is Role.CLERK]
    if not shop_ids:
        return False
    shops = db.session.scalars(sa.select(Shop).where(Shop.id.in_(shop_ids)))
    return any(shop.serves(household) and shop.is_active for shop in shops)


def household_or_404(household_id: int) -> Household:
    """Return a household the caller may read; 404 for any other, giving nothing away."""
    household = db.session.get(Household, household_id)
    if household is None or not can_read(current_user(), household):
        raise ApiError(404, "not_found", _not_found())
    return household


def _not_found():
    from flask_babel import gettext as _

    return _("There is no such household, or it is not yours to see.")


def household_view(household: Household) -> dict:
    """Return the household as the API shows it, with both balances."""
    balance = ledger.balance_of(household)
    return {
        "id": household.id,
        "name": household.name,
        "house_number": household.house_number,
        "group": household.group.name,
        "village_id": household.group.village_id,
        "village": household.group.village.name,
        "is_active": household.is_active,
        "members": [
            {"id": m.id, "name": m.name, "is_head": m.is_head}
            for m in household.members
            if m.is_active
        ],
        "spendable": balance.spendable,
        "honour": balance.honour,
    }


@blp.route("/cards/<string:code>", methods=["GET"])
@token_required(Role.CLERK, Role.CADRE, Role.COMMITTEE, Role.ADMIN)
@blp.response(200, s.Household)
def card(code: str):
    """Find the household of a scanned QR token or a typed card code.

    A replaced card answers 422 `card_revoked`; an unknown code 404 `card_not_found`.
    """
    found = cards.resolve(code)
    return household_view(household_or_404(found.household_id))


@blp.route("/households/<int:household_id>", methods=["GET"])
@token_required(*READERS)
@blp.response(200, s.Household)
def household(household_id: int):
    """Return a household with its members and both balances."""
    return household_view(household_or_404(household_id))


@blp.route("/households/<int:household_id>/history", methods=["GET"])
@token_required(*READERS)
@blp.arguments(s.PageQuery, location="query", as_kwargs=True)
@blp.response(200, s.HistoryPage)
def history(household_id: int, page: int, per_page: int):
    """Return every change of a household's points with its reason, newest first."""
    household = household_or_404(household_id)
    query = sa.select(Transfer).where(Transfer.household_id == household.id)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Transfer.created_at.desc(), Transfer.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
        .options(selectinload(Transfer.recorded_by), selectinload(Transfer.approved_by))
    ).all()
    return page_of(rows, page, per_page, total)
