"""A village's approval settings: which awards post at once, which need two members."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms.validators import NumberRange, Optional

from ..auth import role_required
from ..extensions import db
from ..models import Role
from ..services import rules as rule_service
from ..services.errors import DomainError
from . import bp, get_village_or_404
from .rules import WholeNumberField

_RANGE = _l("Please enter a whole number from %(min)s to %(max)s, or leave it empty.")


class ApprovalSettingsForm(FlaskForm):
    auto_approve_max = WholeNumberField(
        _l("Auto-approve awards of up to this many points (empty: never)"),
        validators=[Optional(), NumberRange(min=0, max=rule_service.MAX_THRESHOLD, message=_RANGE)],
        render_kw={"inputmode": "numeric"},
    )
    two_approver_min = WholeNumberField(
        _l("Require two committee members above this many points (empty: never)"),
        validators=[Optional(), NumberRange(min=0, max=rule_service.MAX_THRESHOLD, message=_RANGE)],
        render_kw={"inputmode": "numeric"},
    )


@bp.route("/villages/<int:village_id>/settings", methods=["GET", "POST"])
@role_required(Role.COMMITTEE)
def approval_settings(village_id: int):
    """Show and change when awards post without approval and when two members must approve."""
    village = get_village_or_404(village_id)
    form = ApprovalSettingsForm()
    if not form.is_submitted():
        form.auto_approve_max.data = village.auto_approve_max
        form.two_approver_min.data = village.two_approver_min
    if form.validate_on_submit():
        try:
            rule_service.set_approval_settings(
                village,
                current_user,
                auto_approve_max=form.auto_approve_max.data,
                two_approver_min=form.two_approver_min.data,
            )
            db.session.commit()
            flash(_("Approval settings of %(village)s saved.", village=village.name), "success")
            return redirect(url_for(".approval_settings", village_id=village.id))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "committee/settings/approvals.html",
        form=form,
        village=village,
        max_threshold=rule_service.MAX_THRESHOLD,
    )
