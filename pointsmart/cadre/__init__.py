"""Pages for cadres and grid officers: the households they look after."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template, request
from flask_login import current_user

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import Account, AccountKind, Household, Member, Role, VillagerGroup

bp = Blueprint("cadre", __name__, url_prefix="/cadre")

PAGE_SIZE = 50


def search_households(user, roles, query: str, page: int = 1):
    """Return (households with spendable balance, total) in the user's scope matching query."""
    stmt = (
        sa.select(Household, Account.balance)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(
            Account,
            sa.and_(
                Account.household_id == Household.id,
                Account.kind == AccountKind.HOUSEHOLD_SPENDABLE,
            ),
        )
        .where(access.household_filter(user, roles), Household.is_active.is_(True))
    )
    query = (query or "").strip()[:40]
    if query:
        like = f"%{query}%"
        stmt = stmt.where(
            sa.or_(
                Household.name.like(like),
                Household.house_number.like(like),
                VillagerGroup.name.like(like),
                Household.id.in_(
                    sa.select(Member.household_id).where(
                        sa.or_(Member.name.like(like), Member.phone.like(like))
                    )
                ),
            )
        )
    total = db.session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
    rows = db.session.execute(
        stmt.order_by(VillagerGroup.name, Household.house_number)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return rows, total


@bp.get("/")
@role_required(Role.CADRE)
def home():
    """List and search the households in the cadre's villages or groups."""
    query = request.args.get("q", "")
    page = max(request.args.get("page", 1, type=int), 1)
    rows, total = search_households(current_user, Role.CADRE, query, page)
    return render_template(
        "cadre/home.html", rows=rows, total=total, query=query, page=page, page_size=PAGE_SIZE
    )


# Views of this audience in their own modules; imported last, they register on bp.
from . import cards, ratings, record, rounds, verify  # noqa: E402, F401
