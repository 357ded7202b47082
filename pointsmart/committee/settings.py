"""A village's settings, kept by its committee and the town's administrators: which awards
post at once and which need two members, whether deductions may go below zero, how the
"needs improvement" board names households, the shops' exchange windows and the yearly
clearing of spendable points."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectChoice
from wtforms.validators import NumberRange, Optional

from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..models import BoardNames, ClearingRun, Role, Shop, Village
from ..services import admin as admin_service
from ..services import boards, catalogue, clearing
from ..services import rules as rule_service
from ..services.errors import DomainError
from ..timeutil import local_today
from . import MAX_ID, bp
from .rules import WholeNumberField

_RANGE = _l("Please enter a whole number from %(min)s to %(max)s, or leave it empty.")
#: Who keeps a village's settings.
KEEPERS = (Role.COMMITTEE, Role.ADMIN)
#: Past clearing runs listed on the page.
RUNS_SHOWN = 10


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
    allow_negative_balance = RadioField(
        _l("May a deduction take a household's spendable points below zero?"),
        choices=[
            SelectChoice("no", _l("No: a deduction takes at most what the household has")),
            SelectChoice("yes", _l("Yes: the balance may go below zero")),
        ],
        validators=[Optional()],  # a form without the choice keeps the village's setting
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


class ClearingForm(FlaskForm):
    month = WholeNumberField(
        _l("Month"), validators=[Optional()], render_kw={"inputmode": "numeric"}
    )
    day = WholeNumberField(_l("Day"), validators=[Optional()], render_kw={"inputmode": "numeric"})


def settings_village_or_404(village_id: int) -> Village:
    """Return a village whose settings the user keeps (its committee, its town's admin); else 404."""
    village = db.session.get(Village, village_id) if village_id <= MAX_ID else None
    if village is None or not admin_service.can_edit_settings(current_user, village):
        abort(404)
    return village


def _back(village: Village):
    return redirect(url_for(".approval_settings", village_id=village.id))


def _shops(village: Village) -> list[dict]:
    """Return the shops serving the village, each with its window and, for its managers, a link."""
    shops = db.session.scalars(
        sa.select(Shop)
        .where(
            Shop.town_id == village.town_id,
            sa.or_(Shop.village_id == village.id, Shop.village_id.is_(None)),
        )
        .order_by(Shop.village_id.is_(None), Shop.name)
    ).all()
    return [
        {
            "shop": shop,
            "window": catalogue.describe_window(shop),
            "url": url_for("clerk.shop_settings", shop_id=shop.id)
            if catalogue.can_manage(current_user, shop)
            else None,
        }
        for shop in shops
    ]


@bp.route("/villages/<int:village_id>/settings", methods=["GET", "POST"])
@role_required(*KEEPERS)
def approval_settings(village_id: int):
    """Show the village's settings; save approvals, negative balances and board names."""
    village = settings_village_or_404(village_id)
    form = ApprovalSettingsForm()
    if not form.is_submitted():
        form.auto_approve_max.data = village.auto_approve_max
        form.two_approver_min.data = village.two_approver_min
        form.allow_negative_balance.data = "yes" if village.allow_negative_balance else "no"
        form.board_names.data = village.board_names.value
    if form.validate_on_submit():
        try:
            rule_service.set_approval_settings(
                village,
                current_user,
                auto_approve_max=form.auto_approve_max.data,
                two_approver_min=form.two_approver_min.data,
            )
            if form.allow_negative_balance.data in ("yes", "no"):
                admin_service.set_negative_balance(
                    current_user, village, form.allow_negative_balance.data == "yes"
                )
            if form.board_names.data:
                boards.set_board_names(village, current_user, form.board_names.data)
            db.session.commit()
            flash(_("Approval settings of %(village)s saved.", village=village.name), "success")
            return _back(village)
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    clearing_form = ClearingForm(formdata=None)
    clearing_form.month.data, clearing_form.day.data = village.clearing_month, village.clearing_day
    today = local_today()
    runs = db.session.scalars(
        sa.select(ClearingRun)
        .where(ClearingRun.village_id == village.id)
        .order_by(ClearingRun.clearing_date.desc())
        .limit(RUNS_SHOWN)
    ).all()
    return render_template(
        "committee/settings/approvals.html",
        form=form,
        village=village,
        max_threshold=rule_service.MAX_THRESHOLD,
        shops=_shops(village),
        clearing_form=clearing_form,
        next_clearing=clearing.next_date(village, today),
        due_clearing=clearing.due_date(village, today),
        notice_days=clearing.NOTICE_DAYS,
        runs=runs,
        action=EmptyForm(),
        back_url=url_for("admin.village", village_id=village.id)
        if current_user.has_role(Role.ADMIN) and admin_service.administers(current_user, village)
        else url_for(".home"),
    )


@bp.post("/villages/<int:village_id>/clearing")
@role_required(*KEEPERS)
def clearing_date(village_id: int):
    """Set or remove the village's yearly clearing date (empty month and day: no clearing)."""
    village = settings_village_or_404(village_id)
    form = ClearingForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            flash(str(errors[0]), "error")
        return _back(village)
    try:
        clearing.set_date(village, current_user, form.month.data, form.day.data)
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was changed: %(reason)s", reason=error.message), "error")
        return _back(village)
    db.session.commit()
    upcoming = clearing.next_date(village)
    if upcoming is None:
        flash(_("%(village)s has no yearly clearing now.", village=village.name), "success")
    else:
        flash(
            _(
                "Saved: the next clearing of %(village)s is on %(date)s. Villagers see the date "
                "and their amount %(days)s days ahead.",
                village=village.name,
                date=upcoming.isoformat(),
                days=clearing.NOTICE_DAYS,
            ),
            "success",
        )
    return _back(village)


@bp.post("/villages/<int:village_id>/clearing/run")
@role_required(*KEEPERS)
def run_clearing(village_id: int):
    """Run the village's clearing that is due now, if one is (running it twice clears once)."""
    village = settings_village_or_404(village_id)
    if not EmptyForm().validate_on_submit():
        return _back(village)
    when = clearing.due_date(village)
    if when is None:
        flash(
            _("No clearing is due in %(village)s now; nothing was cleared.", village=village.name)
        )
        return _back(village)
    try:
        run, created = clearing.run(village, when, current_user)
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was cleared: %(reason)s", reason=error.message), "error")
        return _back(village)
    db.session.commit()
    if created:
        flash(
            _(
                "Clearing of %(date)s done: %(points)s points of %(households)s households.",
                date=when.isoformat(),
                points=run.points,
                households=run.households,
            ),
            "success",
        )
    return _back(village)
