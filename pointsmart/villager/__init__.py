"""Pages for villagers: their household's balance and why it changed."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import current_user
from sqlalchemy.orm import joinedload

from ..auth import role_required
from ..extensions import db
from ..models import Household, Role, Transfer, VillagerGroup
from ..services import clearing, ledger, photos, rankings

bp = Blueprint("villager", __name__, url_prefix="/me")

#: The latest changes the home page lists; the history page has them all, thirty a page.
HOME_LINES = 10


def my_household() -> Household:
    """Return the household of the logged-in villager, with its group and village."""
    grant = next(g for g in current_user.grants if g.role is Role.VILLAGER)
    # Every villager page names the group and village: one read instead of three.
    return db.get_or_404(
        Household,
        grant.household_id,
        options=[joinedload(Household.group).joinedload(VillagerGroup.village)],
    )


def month_ranks(household: Household) -> dict[str, rankings.Standing] | None:
    """Return the household's points and rank this month in its group and village."""
    if not household.is_active:
        return None
    period = rankings.month_period(rankings.this_month())
    group = rankings.Scope(rankings.ScopeKind.GROUP, household.group)
    village = rankings.Scope(rankings.ScopeKind.VILLAGE, household.group.village)
    in_group, in_village = rankings.standings(household, [group, village], period)
    return {"group": in_group, "village": in_village}


@bp.get("/")
@role_required(Role.VILLAGER)
def home():
    """Show the household's balances and its latest changes with their reasons."""
    household = my_household()
    history = db.session.scalars(
        sa.select(Transfer)
        .where(Transfer.household_id == household.id)
        .order_by(Transfer.created_at.desc(), Transfer.id.desc())
        .limit(HOME_LINES)
        # Each line names recorder, approver, member, shop and what it reverses or refunds:
        # all many-to-one, so joined into the one read.
        .options(
            joinedload(Transfer.recorded_by),
            joinedload(Transfer.approved_by),
            joinedload(Transfer.member),
            joinedload(Transfer.reverses),
            joinedload(Transfer.refunds),
            joinedload(Transfer.shop),
        )
    ).all()
    balance = ledger.balance_of(household)
    return render_template(
        "villager/home.html",
        household=household,
        balance=balance,
        history=history,
        evidence=photos.evidence_for(history),
        speech=spoken_summary(balance, history),
        ranks=month_ranks(household),
        clearing=clearing.notice(household),
    )


# Views of this audience in their own modules; imported last, they register on bp.
from . import card, shop, submissions  # noqa: E402, F401
from .history import spoken_summary  # noqa: E402  (importing it registers the history page too)
