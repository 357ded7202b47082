"""Pages for town administrators."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import current_user

from ..auth import role_required
from ..extensions import db
from ..models import Household, Role, Shop, Town, Village, VillagerGroup

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/")
@role_required(Role.ADMIN)
def home():
    """Show the administrator's towns with their villages, groups and household counts."""
    town_ids = [g.town_id for g in current_user.grants if g.role is Role.ADMIN]
    counts = db.session.execute(
        sa.select(
            Village.id,
            sa.func.count(sa.distinct(VillagerGroup.id)),
            sa.func.count(Household.id),
        )
        .join(VillagerGroup, VillagerGroup.village_id == Village.id, isouter=True)
        .join(Household, Household.group_id == VillagerGroup.id, isouter=True)
        .where(Village.town_id.in_(town_ids))
        .group_by(Village.id)
    ).all()
    stats = {village_id: (groups, households) for village_id, groups, households in counts}
    towns = db.session.scalars(sa.select(Town).where(Town.id.in_(town_ids))).all()
    shops = db.session.scalars(
        sa.select(Shop).where(Shop.town_id.in_(town_ids)).order_by(Shop.name)
    ).all()
    return render_template("admin/home.html", towns=towns, stats=stats, shops=shops)


# Views of this audience in their own modules; imported last, they register on bp.
from . import audit, reports, roster, rules, staff, supermarkets, tokens, villages  # noqa: E402, F401
