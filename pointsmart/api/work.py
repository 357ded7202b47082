"""API: awards and deductions — record under a rule, list what waits, approve, reject."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g
from flask_babel import gettext as _
from flask_smorest import Blueprint

from .. import access
from ..extensions import db
from ..models import Member, Role, RuleWarning, Transfer, TransferStatus, Village
from ..services import awards, ledger, rules
from . import ApiError, current_user, idempotent, page_of, service_key, token_required
from . import schemas as s
from .households import household_or_404

blp = Blueprint("api_work", __name__, url_prefix="/api/v1", description="Awards and approvals")


@blp.route("/households/<int:household_id>/awards", methods=["POST"])
@token_required(Role.CADRE, Role.COMMITTEE)
@idempotent(required=True)
@blp.arguments(s.AwardRequest)
@blp.response(201, s.AwardResult)
def record(body: dict, household_id: int):
    """Record an award or a deduction under one of the village's rules (Idempotency-Key required).

    It waits for a committee member who is not the recorder, unless the village auto-approves
    it; a first offence under a "warning first" rule records a warning and no points.
    """
    household = household_or_404(household_id)
    if not access.covers_household(current_user(), household, access.RECORDERS):
        raise ApiError(403, "forbidden", _("This token cannot record for this household."))
    rule = rules.get_village_rule(body["rule_id"], household.group.village)
    member = None
    if "member_id" in body:
        member = db.session.get(Member, body["member_id"])
        if member is None or member.household_id != household.id:
            raise ApiError(
                422, "invalid_input", _("That person is not a member of this household.")
            )
    awards.check_rule(rule, household.group.village, photo_count=0)
    result, _created = awards.record_once(
        household=household,
        rule=rule,
        recorded_by=current_user(),
        key=service_key(g.idempotency_key),
        member=member,
        note=body.get("note"),
        photos=[],
    )
    if isinstance(result, RuleWarning):
        return {"outcome": "warning", "transfer": None, "warning": result}
    return {"outcome": "recorded", "transfer": result, "warning": None}


def village_or_404(village_id: int) -> Village:
    """Return a village the caller is a committee member of; 404 otherwise."""
    village = db.session.get(Village, village_id)
    if village is None or not access.covers_village(current_user(), village, Role.COMMITTEE):
        raise ApiError(404, "not_found", _("There is no such village, or it is not yours."))
    return village


@blp.route("/villages/<int:village_id>/pending", methods=["GET"])
@token_required(Role.COMMITTEE)
@blp.arguments(s.PageQuery, location="query", as_kwargs=True)
@blp.response(200, s.TransferPage)
def pending(village_id: int, page: int, per_page: int):
    """Return the village's awards and deductions waiting for approval, oldest first."""
    village = village_or_404(village_id)
    query = sa.select(Transfer).where(
        Transfer.village_id == village.id, Transfer.status == TransferStatus.PENDING
    )
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Transfer.created_at, Transfer.id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return page_of(rows, page, per_page, total)


def transfer_or_404(transfer_id: int) -> Transfer:
    """Return an award or deduction of a village the caller is a committee member of."""
    transfer = db.session.get(Transfer, transfer_id)
    if transfer is None or not access.covers_village(
        current_user(), transfer.village, Role.COMMITTEE
    ):
        raise ApiError(404, "not_found", _("There is no such record, or it is not yours."))
    return transfer


@blp.route("/transfers/<int:transfer_id>/approve", methods=["POST"])
@token_required(Role.COMMITTEE)
@idempotent()
@blp.response(200, s.Transfer)
def approve(transfer_id: int):
    """Approve a pending award or deduction (posted once enough members approved).

    Approving twice answers with the same record; one already rejected answers 409.
    """
    return ledger.post(transfer_or_404(transfer_id), current_user())


@blp.route("/transfers/<int:transfer_id>/reject", methods=["POST"])
@token_required(Role.COMMITTEE)
@idempotent()
@blp.arguments(s.RejectRequest)
@blp.response(200, s.Transfer)
def reject(body: dict, transfer_id: int):
    """Reject a pending award or deduction with a reason; nothing moves."""
    return ledger.void(transfer_or_404(transfer_id), current_user(), body["reason"])
