"""Public pages of a village (公示), open without login: its boards, rules and monthly totals.

Nothing here reads a household's or a member's record: a board shows only its frozen snapshot,
which holds names as the village chose to show them, and never phone or ID numbers.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, render_template

from ..committee.rules import limit_text
from ..extensions import db
from ..models import Board, BoardKind, Village
from ..services import boards, rankings
from ..services import rules as rule_service
from ..timeutil import local_today

bp = Blueprint("public", __name__, url_prefix="/v")

#: Ids beyond this are not ids at all (PostgreSQL's integer would overflow).
MAX_ID = 2**31 - 1
#: Months of totals the village page shows.
TOTAL_MONTHS = 12


def get_village_or_404(village_id: int) -> Village:
    """Return a village by id; 404 for an unknown one."""
    village = db.session.get(Village, village_id) if village_id <= MAX_ID else None
    if village is None:
        abort(404)
    return village


def get_board_or_404(village: Village, board_id: int) -> Board:
    """Return a board of the village; 404 for an unknown board or one of another village."""
    board = db.session.get(Board, board_id) if board_id <= MAX_ID else None
    if board is None or board.village_id != village.id:
        abort(404)
    return board


def recent_months(n: int) -> rankings.Period:
    """Return the period of the last ``n`` local months, this month included."""
    end = rankings.this_month()
    index = end.year * 12 + end.month - 1 - (n - 1)
    start = date(index // 12, index % 12 + 1, 1)
    return rankings.Period(rankings.PeriodKind.CUSTOM, start, end)


@bp.get("/<int:village_id>")
def village(village_id: int):
    """Show a village's boards in force, its rules in force today and its monthly totals."""
    place = get_village_or_404(village_id)
    today = local_today()
    in_force = [r for r in rule_service.catalogue(village=place) if r.is_active_on(today)]
    totals = rankings.village_totals(place, recent_months(TOTAL_MONTHS))
    return render_template(
        "public/village.html",
        village=place,
        boards=boards.published(place),
        awards=[r for r in in_force if not r.is_deduction],
        deductions=[r for r in in_force if r.is_deduction],
        limit_text=limit_text,
        totals=list(reversed(totals)),
        today=today,
    )


@bp.get("/<int:village_id>/boards/<int:board_id>")
def board(village_id: int, board_id: int):
    """Show one published board, printable on one A4 page, with its corrections both ways."""
    place = get_village_or_404(village_id)
    shown = get_board_or_404(place, board_id)
    return render_template(
        "public/board.html",
        village=place,
        board=shown,
        monthly=shown.kind is BoardKind.MONTHLY,
    )
