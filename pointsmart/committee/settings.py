"""A village's settings: which awards post at once, which need two members, and how the
"needs improvement" board names households."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectChoice
from wtforms.validators import NumberRange, Optional

from ..auth import role_required
from ..extensions import db
from ..models import BoardNames, Role
from ..services import boards
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
    board_names = RadioField(
        _l('How the "needs improvement" list names a household'),
        choices=[
            SelectChoice(BoardNames.FULL.value, _l("Full name, e.g. 王建明")),
            SelectChoice(BoardNames.MASKED.value, _l("Masked name, e.g. 王*明")),
            SelectChoice(BoardNames.GROUP_ONLY.value, _l("The group only, e.g. 一组, no name")),
        ],
        validators=[Optional()],  # a form without the choice keeps the village's setting
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
        form.board_names.data = village.board_names.value
    if form.validate_on_submit():
        try:
            rule_service.set_approval_settings(
                village,
                current_user,
                auto_approve_max=form.auto_approve_max.data,
                two_approver_min=form.two_approver_min.data,
            )
            if form.board_names.data:
                boards.set_board_names(village, current_user, form.board_names.data)
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
