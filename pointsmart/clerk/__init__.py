"""Pages for love-supermarket clerks."""

from __future__ import annotations

from datetime import datetime, time

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import current_user

from ..auth import role_required
from ..extensions import db
from ..models import Role, Shop, Transfer, TransferKind
from ..timeutil import LOCAL_TZ, local_today

bp = Blueprint("clerk", __name__, url_prefix="/clerk")


def clerk_shops() -> list[Shop]:
    ids = [g.shop_id for g in current_user.grants if g.role is Role.CLERK]
    return db.session.scalars(sa.select(Shop).where(Shop.id.in_(ids)).order_by(Shop.name)).all()


@bp.get("/")
@role_required(Role.CLERK)
def home():
    """Show the clerk's shops and today's redemptions."""
    shops = clerk_shops()
    start = datetime.combine(local_today(), time.min, tzinfo=LOCAL_TZ)
    today = db.session.scalars(
        sa.select(Transfer)
        .where(
            Transfer.shop_id.in_([s.id for s in shops]),
            Transfer.kind == TransferKind.REDEMPTION,
            Transfer.created_at >= start,
        )
        .order_by(Transfer.created_at.desc())
    ).all()
    return render_template("clerk/home.html", shops=shops, today=today)
