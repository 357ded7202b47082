"""Pages for village committee members: the approval queue."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import InputRequired, Length

from .. import access
from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..models import Role, Transfer, TransferStatus, Village
from ..services import ledger
from ..services.errors import DomainError

bp = Blueprint("committee", __name__, url_prefix="/committee")


class RejectForm(FlaskForm):
    reason = StringField(_l("Reason for rejection"), validators=[InputRequired(), Length(max=200)])


def committee_villages() -> list[int]:
    return [g.village_id for g in current_user.grants if g.role is Role.COMMITTEE and g.village_id]


def get_transfer_or_404(transfer_id: int) -> Transfer:
    """Return a transfer of one of the member's villages; 404 for any other, giving nothing away."""
    transfer = db.session.get(Transfer, transfer_id)
    if transfer is None or not access.covers_village(
        current_user, transfer.village, Role.COMMITTEE
    ):
        abort(404)
    return transfer


@bp.get("/")
@role_required(Role.COMMITTEE)
def home():
    """Show the pending awards and deductions of the member's villages."""
    pending = db.session.scalars(
        sa.select(Transfer)
        .where(
            Transfer.village_id.in_(committee_villages()),
            Transfer.status == TransferStatus.PENDING,
        )
        .order_by(Transfer.created_at)
        .limit(200)
    ).all()
    villages = db.session.scalars(
        sa.select(Village).where(Village.id.in_(committee_villages()))
    ).all()
    return render_template(
        "committee/home.html", pending=pending, villages=villages, reject_form=RejectForm()
    )


@bp.post("/transfers/<int:transfer_id>/approve")
@role_required(Role.COMMITTEE)
def approve(transfer_id: int):
    """Post one pending award or deduction."""
    transfer = get_transfer_or_404(transfer_id)
    if EmptyForm().validate_on_submit():
        try:
            ledger.post(transfer, current_user)
            db.session.commit()
            flash(
                _(
                    "Approved: %(reason)s for %(household)s.",
                    reason=transfer.reason,
                    household=transfer.household.name,
                ),
                "success",
            )
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return redirect(url_for(".home"))


@bp.post("/transfers/<int:transfer_id>/reject")
@role_required(Role.COMMITTEE)
def reject(transfer_id: int):
    """Void one pending award or deduction, with a reason."""
    transfer = get_transfer_or_404(transfer_id)
    form = RejectForm()
    if form.validate_on_submit():
        try:
            ledger.void(transfer, current_user, form.reason.data)
            db.session.commit()
            flash(_("Rejected."), "success")
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    else:
        flash(_("Please give a reason for rejection."), "error")
    return redirect(url_for(".home"))


# Views of this audience in their own modules; imported last, they register on bp.
from . import ratings, rules, settings  # noqa: E402, F401
