"""Verifying villagers' claims and reports: the cadre's queue, one page per submission.

A cadre sees the submissions of the households their grants reach (for a report: the
reporter's household). An anonymous report shows the reporter to the verifying cadre, who
must reward that household, marked so that the name is not passed on.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import (
    Category,
    Claim,
    Household,
    Report,
    Role,
    ScoringRule,
    TransferStatus,
    VillagerGroup,
)
from ..services import rules as rule_service
from ..services import submissions
from ..services.errors import DomainError, NotFound
from ..timeutil import local_today
from . import bp

#: Cadres verify; committee members doing field work may too (as for recording and rounds).
VERIFIER_ROLES = (Role.CADRE, Role.COMMITTEE)


class VerifyClaimForm(FlaskForm):
    rule = SelectField(
        _l("Rule to award"),
        coerce=int,
        choices=[],
        default=0,
        validators=[NumberRange(min=1, message=_l("Please choose the rule to award."))],
    )
    key = HiddenField()


class VerifyReportForm(FlaskForm):
    rule = SelectField(
        _l("Reward for the reporter"),
        coerce=int,
        choices=[],
        default=0,
        validators=[NumberRange(min=1, message=_l("Please choose the reward rule."))],
    )
    offender = SelectField(
        _l("Household responsible (optional)"), coerce=int, choices=[], default=0
    )
    deduction_rule = SelectField(
        _l("Deduction for that household"), coerce=int, choices=[], default=0
    )
    key = HiddenField()


class RejectSubmissionForm(FlaskForm):
    reason = StringField(
        _l("Reason for rejection"),
        validators=[
            DataRequired(_l("Please give a reason for rejection.")),
            Length(max=submissions.MAX_REASON),
        ],
    )


def get_claim_or_404(claim_id: int) -> Claim:
    """Return a claim the user may verify; 404 for any other, giving nothing away."""
    claim = db.session.get(Claim, claim_id)
    if claim is None or not submissions.can_verify(current_user, claim):
        abort(404)
    return claim


def get_report_or_404(report_id: int) -> Report:
    """Return a report the user may verify; 404 for any other, giving nothing away."""
    report = db.session.get(Report, report_id)
    if report is None or not submissions.can_verify(current_user, report):
        abort(404)
    return report


def _rule_choices(village, *, awards: bool, empty: str) -> list[tuple[int, str]]:
    today = local_today()
    return [(0, empty)] + [
        (r.id, f"{r.name} ({r.points:+d})")
        for r in rule_service.catalogue(village=village)
        if r.is_deduction != awards and r.is_active_on(today)
    ]


def _offender_choices(report: Report) -> list[tuple[int, str]]:
    households = db.session.execute(
        sa.select(Household, VillagerGroup.name)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .where(
            VillagerGroup.village_id == report.village_id,
            Household.is_active.is_(True),
            Household.id != report.reporter_household_id,
            access.household_filter(current_user, submissions.VERIFIERS),
        )
        .order_by(VillagerGroup.name, Household.house_number)
    ).all()
    return [(0, _("Nobody / not known"))] + [
        (h.id, f"{group} · {_('No. %(n)s', n=h.house_number)} · {h.name}")
        for h, group in households
    ]


def _claim_form(claim: Claim) -> VerifyClaimForm:
    form = VerifyClaimForm()
    form.rule.choices = _rule_choices(
        claim.household.group.village, awards=True, empty=_("Choose a rule")
    )
    if not form.is_submitted():
        form.rule.data = claim.rule_id or 0
        form.key.data = str(uuid.uuid4())
    return form


def _report_form(report: Report) -> VerifyReportForm:
    form = VerifyReportForm()
    form.rule.choices = _rule_choices(report.village, awards=True, empty=_("Choose a rule"))
    form.deduction_rule.choices = _rule_choices(
        report.village, awards=False, empty=_("No deduction")
    )
    form.offender.choices = _offender_choices(report)
    if not form.is_submitted():
        form.key.data = str(uuid.uuid4())
        # Offer the village's reporting reward first; the cadre may choose another.
        form.rule.data = next(
            (
                r.id
                for r in rule_service.catalogue(village=report.village)
                if r.category is Category.REPORTING
                and r.points > 0
                and r.is_active_on(local_today())
            ),
            0,
        )
    return form


def _rule(rule_id: int, village) -> ScoringRule:
    return rule_service.get_village_rule(rule_id, village)


def _flash_form_errors(form: FlaskForm) -> None:
    for errors in form.errors.values():
        for error in errors:
            flash(str(error), "error")


@bp.get("/verify/")
@role_required(*VERIFIER_ROLES)
def verify_queue():
    """List the claims and reports waiting for the cadre, with a duplicate-photo flag."""
    claims = submissions.pending_claims(current_user)
    reports = submissions.pending_reports(current_user)
    photos = [p for record in (*claims, *reports) for p in record.photos]
    return render_template(
        "cadre/verify/queue.html",
        claims=claims,
        reports=reports,
        duplicates=submissions.duplicates(photos),
    )


@bp.get("/verify/claims/<int:claim_id>")
@role_required(*VERIFIER_ROLES)
def verify_claim_page(claim_id: int):
    """Show one claim with its photos and the forms to verify or reject it."""
    claim = get_claim_or_404(claim_id)
    return render_template(
        "cadre/verify/claim.html",
        claim=claim,
        duplicates=submissions.duplicates(claim.photos),
        form=_claim_form(claim),
        reject_form=RejectSubmissionForm(formdata=None),
    )


@bp.post("/verify/claims/<int:claim_id>/verify")
@role_required(*VERIFIER_ROLES)
def verify_claim(claim_id: int):
    """Confirm a claim under a rule; its award goes to approval."""
    claim = get_claim_or_404(claim_id)
    form = _claim_form(claim)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(url_for(".verify_claim_page", claim_id=claim.id))
    try:
        rule = _rule(form.rule.data, claim.household.group.village)
        submissions.verify_claim(claim, current_user, rule, key=form.key.data)
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(str(error.message), "error")
        return redirect(url_for(".verify_claim_page", claim_id=claim.id))
    flash(_verified_message(claim.transfer), "success")
    return redirect(url_for(".verify_queue"))


@bp.post("/verify/claims/<int:claim_id>/reject")
@role_required(*VERIFIER_ROLES)
def reject_claim(claim_id: int):
    """Reject a claim with a reason the villager will see."""
    claim = get_claim_or_404(claim_id)
    form = RejectSubmissionForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(url_for(".verify_claim_page", claim_id=claim.id))
    try:
        submissions.reject_claim(claim, current_user, form.reason.data)
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(str(error.message), "error")
        return redirect(url_for(".verify_claim_page", claim_id=claim.id))
    flash(_("Claim rejected; the villager will see your reason."), "success")
    return redirect(url_for(".verify_queue"))


@bp.get("/verify/reports/<int:report_id>")
@role_required(*VERIFIER_ROLES)
def verify_report_page(report_id: int):
    """Show one report with its photos and the forms to verify or reject it."""
    report = get_report_or_404(report_id)
    return render_template(
        "cadre/verify/report.html",
        report=report,
        duplicates=submissions.duplicates(report.photos),
        form=_report_form(report),
        reject_form=RejectSubmissionForm(formdata=None),
    )


@bp.post("/verify/reports/<int:report_id>/verify")
@role_required(*VERIFIER_ROLES)
def verify_report(report_id: int):
    """Confirm a report: reward the reporter, optionally deduct from the household responsible."""
    report = get_report_or_404(report_id)
    form = _report_form(report)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(url_for(".verify_report_page", report_id=report.id))
    try:
        reward_rule = _rule(form.rule.data, report.village)
        offender = deduction_rule = None
        if form.offender.data:
            offender = db.session.get(Household, form.offender.data)
            if offender is None:
                raise NotFound()
        if form.deduction_rule.data:
            deduction_rule = _rule(form.deduction_rule.data, report.village)
        submissions.verify_report(
            report,
            current_user,
            reward_rule,
            key=form.key.data,
            offender=offender,
            deduction_rule=deduction_rule,
        )
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(str(error.message), "error")
        return redirect(url_for(".verify_report_page", report_id=report.id))
    flash(_verified_message(report.reward_transfer), "success")
    return redirect(url_for(".verify_queue"))


@bp.post("/verify/reports/<int:report_id>/reject")
@role_required(*VERIFIER_ROLES)
def reject_report(report_id: int):
    """Reject a report with a reason the reporter will see."""
    report = get_report_or_404(report_id)
    form = RejectSubmissionForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(url_for(".verify_report_page", report_id=report.id))
    try:
        submissions.reject_report(report, current_user, form.reason.data)
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(str(error.message), "error")
        return redirect(url_for(".verify_report_page", report_id=report.id))
    flash(_("Report rejected; the reporter will see your reason."), "success")
    return redirect(url_for(".verify_queue"))


def _verified_message(transfer) -> str:
    if transfer is not None and transfer.status is TransferStatus.POSTED:
        return _("Verified: %(points)s points were posted at once.", points=transfer.amount)
    return _("Verified: the award now waits for committee approval.")
