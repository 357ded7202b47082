"""API: villagers' claims and reports, rankings, published boards and village monthly totals."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g
from flask_babel import gettext as _
from flask_smorest import Blueprint

from ..extensions import db
from ..models import Board, Claim, Household, Report, Role, Village
from ..services import boards as board_service
from ..services import rankings, rules, submissions
from ..services.errors import NotFound
from . import ApiError, current_user, idempotent, page_of, service_key, token_required
from . import schemas as s

blp = Blueprint(
    "api_community", __name__, url_prefix="/api/v1", description="Claims, reports, rankings, boards"
)


def _household_id() -> int | None:
    grant = next((x for x in current_user().grants if x.role is Role.VILLAGER), None)
    return grant.household_id if grant else None


@blp.route("/claims", methods=["POST"])
@token_required(Role.VILLAGER)
@idempotent(required=True)
@blp.arguments(s.ClaimRequest)
@blp.response(201, s.Claim)
def new_claim(body: dict):
    """Claim points for something the household did (photos: use the page); a cadre verifies it."""
    rule = None
    household = db.session.get(Household, _household_id())
    if "rule_id" in body and household is not None:
        rule = rules.get_village_rule(body["rule_id"], household.group.village)
    return submissions.submit_claim(
        current_user(), body["description"], key=service_key(g.idempotency_key), rule=rule
    )


@blp.route("/claims", methods=["GET"])
@token_required(Role.VILLAGER)
@blp.arguments(s.PageQuery, location="query", as_kwargs=True)
@blp.response(200, s.ClaimPage)
def claims(page: int, per_page: int):
    """Return the household's own claims with their status, newest first."""
    query = sa.select(Claim).where(Claim.household_id == _household_id())
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Claim.created_at.desc(), Claim.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return page_of(rows, page, per_page, total)


@blp.route("/reports", methods=["POST"])
@token_required(Role.VILLAGER)
@idempotent(required=True)
@blp.arguments(s.ReportRequest)
@blp.response(201, s.Report)
def new_report(body: dict):
    """Report a violation in the village (optionally anonymous to other villagers)."""
    return submissions.submit_report(
        current_user(),
        body["what"],
        body["where"],
        anonymous=body.get("anonymous", False),
        key=service_key(g.idempotency_key),
    )


@blp.route("/reports", methods=["GET"])
@token_required(Role.VILLAGER)
@blp.arguments(s.PageQuery, location="query", as_kwargs=True)
@blp.response(200, s.ReportPage)
def reports(page: int, per_page: int):
    """Return the reports the household made, with their status, newest first."""
    query = sa.select(Report).where(Report.reporter_household_id == _household_id())
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Report.created_at.desc(), Report.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return page_of(rows, page, per_page, total)


def _period(args: dict) -> rankings.Period:
    query = {k: v for k, v in args.items() if k in ("period", "month", "year", "quarter", "to")}
    if "start" in args:
        query["from"] = args["start"]
    return rankings.parse_period(query)


def _period_out(period: rankings.Period) -> dict:
    return {
        "kind": period.kind.value,
        "start": f"{period.start:%Y-%m}",
        "end": f"{period.end:%Y-%m}",
        "label": period.label(),
    }


@blp.route("/rankings", methods=["GET"])
@token_required()
@blp.arguments(s.RankingQuery, location="query")
@blp.response(200, s.RankingPage)
def ranking(args: dict):
    """Rank a group's, village's or town's households by honour points earned in a period."""
    from ..main.rankings import may_see

    try:
        scope = rankings.scope_of(args["scope"], args["id"])
    except NotFound:  # an unknown place is answered like a forbidden one: nothing given away
        scope = None
    if scope is None or not may_see(current_user(), scope):
        raise ApiError(404, "not_found", _("There is no such place, or it is not yours to see."))
    period = _period(args)
    page, per_page = args["page"], args["per_page"]
    rows = rankings.households(scope, period, limit=per_page, offset=(page - 1) * per_page)
    result = page_of(rows, page, per_page, rankings.count_households(scope))
    result.update(
        period=_period_out(period),
        scope=scope.kind.value,
        scope_id=scope.id,
        tie_rule=_(
            "Equal points share a rank; tied households are listed by group and house number."
        ),
    )
    return result


def _village_or_404(village_id: int) -> Village:
    village = db.session.get(Village, village_id)
    if village is None:
        raise ApiError(404, "not_found", _("There is no such village, or it is not yours."))
    return village


@blp.route("/villages/<int:village_id>/boards", methods=["GET"])
@token_required()
@blp.arguments(s.PageQuery, location="query", as_kwargs=True)
@blp.response(200, s.BoardPage)
def village_boards(village_id: int, page: int, per_page: int):
    """Return the village's published boards in force (public information), newest first."""
    village = _village_or_404(village_id)
    in_force = board_service.published(village, limit=10_000)
    start = (page - 1) * per_page
    return page_of(
        [_board(b) for b in in_force[start : start + per_page]], page, per_page, len(in_force)
    )


def _board(board: Board) -> dict:
    return {
        "id": board.id,
        "village_id": board.village_id,
        "kind": board.kind.value,
        "period": f"{board.period:%Y-%m}",
        "version": board.version,
        "corrects_id": board.corrects_id,
        "correction_note": board.correction_note,
        "published_at": board.published_at,
        "content": board.content,
    }


@blp.route("/boards/<int:board_id>", methods=["GET"])
@token_required()
@blp.response(200, s.Board)
def board(board_id: int):
    """Return one published board (any version), as it was published."""
    found = db.session.get(Board, board_id)
    if found is None:
        raise ApiError(404, "not_found", _("There is no such board."))
    return _board(found)


@blp.route("/villages/<int:village_id>/totals", methods=["GET"])
@token_required()
@blp.arguments(s.TotalsQuery, location="query")
@blp.response(200, s.Totals)
def totals(args: dict, village_id: int):
    """Return a village's points issued, deducted and redeemed per month (public information)."""
    village = _village_or_404(village_id)
    period = _period(args)
    months = rankings.village_totals(village, period)
    page, per_page = args["page"], args["per_page"]
    start = (page - 1) * per_page
    items = [
        {
            "month": f"{t.month:%Y-%m}",
            "issued": t.issued,
            "deducted": t.deducted,
            "redeemed": t.redeemed,
        }
        for t in months[start : start + per_page]
    ]
    result = page_of(items, page, per_page, len(months))
    result.update(village_id=village.id, period=_period_out(period))
    return result
