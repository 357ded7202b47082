"""A household's points statement on paper, for villagers without a phone: one A4 page.

Opened by the cadres and committee members who look after the household and by the clerks of a
shop that serves it; to anyone else the household does not exist (404).
"""

from __future__ import annotations

import logging
from datetime import date

import sqlalchemy as sa
from flask import abort, make_response, render_template, url_for
from flask_login import current_user

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import Household, HouseholdMonth, Role, User
from ..services import ledger
from ..timeutil import local_today, to_local, utcnow
from ..villager import history
from . import bp

log = logging.getLogger(__name__)
#: Lines of history that fit on one A4 page under the header and balances.
LINES = 25


def can_open(user: User, household: Household) -> bool:
    """Return whether the user may print the household's statement."""
    if access.covers_household(user, household, access.RECORDERS):
        return True
    return any(
        grant.role is Role.CLERK and grant.shop is not None and grant.shop.serves(household)
        for grant in user.grants
    )


def points_in_year(household: Household, year: int) -> int:
    """Return the honour points the household earned in a local year, net of deductions."""
    return db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(HouseholdMonth.points), 0)).where(
            HouseholdMonth.household_id == household.id,
            HouseholdMonth.month >= date(year, 1, 1),
            HouseholdMonth.month < date(year + 1, 1, 1),
        )
    )


@bp.get("/households/<int:household_id>/statement")
@role_required()  # any logged-in user; the household decides, and others get 404
def statement(household_id: int):
    """Show a household's balances and latest changes, laid out to print on one A4 page."""
    household = db.session.get(Household, household_id)
    if household is None or not can_open(current_user, household):
        abort(404)
    log.info("user %s opened the statement of household %s", current_user.id, household.id)
    today = local_today()
    items = history.lines(household, LINES)
    if access.covers_household(current_user, household, access.RECORDERS):
        back_url = url_for("cadre.household", household_id=household.id)
    else:
        back_url = url_for("clerk.home")
    response = make_response(
        render_template(
            "main/statement.html",
            household=household,
            members=[m for m in household.members if m.is_active],
            balance=ledger.balance_of(household),
            year=today.year,
            year_points=points_in_year(household, today.year),
            items=history.tagged(items),
            more=history.count(household) > LINES,
            printed_at=to_local(utcnow()),
            back_url=back_url,
        )
    )
    # A household's figures: no shared cache keeps a copy.
    response.headers["Cache-Control"] = "private, no-store"
    return response
