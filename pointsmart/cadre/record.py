"""A household's page for cadres and committee members: who lives there, their points, and a
form to record an award or a deduction under a rule, on a phone, in the field."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, MultipleFileField, SelectField, TextAreaField
from wtforms.validators import InputRequired, Length, Optional

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import (
    Household,
    LimitPeriod,
    Member,
    Role,
    RuleWarning,
    ScoringRule,
    Transfer,
    TransferStatus,
)
from ..services import awards, ledger, rules
from ..services import photos as photo_service
from ..services.errors import DomainError, IdempotencyConflict, InvalidInput
from ..timeutil import local_today
from . import bp

RECENT = 20


def coerce_id(value):
    """Coerce a posted id; anything that is not a small whole number becomes None."""
    if isinstance(value, int):
        return value
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) <= 12 else None


class RecordForm(FlaskForm):
    rule = SelectField(
        _l("Rule"),
        coerce=coerce_id,
        validate_choice=False,  # the service says which rule is wrong, in words
        validators=[InputRequired(_l("Please choose a rule."))],
    )
    member = SelectField(
        _l("Who did it (or who offended)"), coerce=coerce_id, validate_choice=False
    )
    note = TextAreaField(
        _l("Note"),
        validators=[Optional(), Length(max=awards.MAX_NOTE_LENGTH)],
        render_kw={"rows": 2, "maxlength": awards.MAX_NOTE_LENGTH},
    )
    photos = MultipleFileField(
        _l("Photos (up to 4)"), render_kw={"accept": "image/jpeg,image/png,image/webp"}
    )
    #: A fresh uuid per rendered form: a double tap or a resent page records once.
    key = HiddenField(validators=[InputRequired(), Length(max=120)])


def get_household_or_404(household_id: int) -> Household:
    """Return a household the user records for; 404 for any other, giving nothing away."""
    household = db.session.get(Household, household_id)
    if household is None or not access.covers_household(current_user, household, access.RECORDERS):
        abort(404)
    return household


def usable_rules(household: Household) -> tuple[list[ScoringRule], list[ScoringRule]]:
    """Return the village's rules in force today: (awards, deductions)."""
    today = local_today()
    current = [r for r in rules.catalogue(village=household.group.village) if r.is_active_on(today)]
    return [r for r in current if not r.is_deduction], [r for r in current if r.is_deduction]


_LIMIT = {
    LimitPeriod.DAY: _l("%(n)s× a day"),
    LimitPeriod.WEEK: _l("%(n)s× a week"),
    LimitPeriod.MONTH: _l("%(n)s× a month"),
    LimitPeriod.QUARTER: _l("%(n)s× a quarter"),
    LimitPeriod.YEAR: _l("%(n)s× a year"),
}


def rule_label(rule: ScoringRule) -> str:
    """Return how a rule reads in a select: name, points, limit, photo and warning notes."""
    parts = [f"{rule.name} {rule.points:+d}"]
    if rule.limit_period is not LimitPeriod.NONE:
        parts.append(str(_LIMIT[rule.limit_period]) % {"n": rule.limit_count})
    if rule.photo_required:
        parts.append(_("photo required"))
    if rule.warning_first:
        parts.append(_("first time a warning"))
    return " · ".join(parts)


def outcome_message(result: Transfer | RuleWarning) -> str:
    """Say in one sentence what a record did to the household's points."""
    if isinstance(result, RuleWarning):
        return _(
            "First offence: a warning was recorded for %(household)s under “%(rule)s”; "
            "no points were deducted.",
            household=result.household.name,
            rule=result.rule.name,
        )
    values = dict(
        points=f"{result.signed_points:+d}", household=result.household.name, rule=result.reason
    )
    if result.status is TransferStatus.POSTED and result.approved_by_id is None:
        return _("Posted: %(points)s points for %(household)s (%(rule)s), auto-approved.", **values)
    if result.status is TransferStatus.POSTED:
        return _("Posted: %(points)s points for %(household)s (%(rule)s).", **values)
    if result.status is TransferStatus.VOIDED:
        return _("Rejected: %(points)s points for %(household)s (%(rule)s).", **values)
    return _(
        "Recorded: %(points)s points for %(household)s (%(rule)s), waiting for approval.", **values
    )


def _member(member_id, household: Household) -> Member | None:
    if member_id is None:
        if request.form.get("member"):
            raise InvalidInput(_l("That person is not a member of this household."))
        return None
    member = db.session.get(Member, member_id)
    if member is None:
        raise InvalidInput(_l("That person is not a member of this household."))
    return member  # the service refuses a member of another household


def _same_request(existing: Transfer | RuleWarning, form: RecordForm, household) -> bool:
    """Return whether a record made under the form's key is what the form asks for again."""
    note = (form.note.data or "").strip()[: awards.MAX_NOTE_LENGTH] or None
    return (
        existing.household_id == household.id
        and existing.rule_id == form.rule.data
        and existing.member_id == form.member.data
        and existing.note == note
    )


def _record(form: RecordForm, household: Household) -> bool:
    """Record what the form says; flash the outcome. Return False to show the form again."""
    village = household.group.village
    key = form.key.data
    existing = awards.find(key)
    if existing is not None and _same_request(existing, form, household):
        flash(_("Already saved, nothing added: %(what)s", what=outcome_message(existing)), "info")
        return True
    try:
        rule = rules.get_village_rule(form.rule.data, village)
        member = _member(form.member.data, household)
        uploads = [u for u in request.files.getlist(form.photos.name) if u and u.filename]
        awards.check_rule(rule, village, len(uploads))  # before any photo is stored
        stored = photo_service.store_many(
            uploads, uploader=current_user, village=village, limit=awards.MAX_PHOTOS
        )
        result, created = awards.record_once(
            household=household,
            rule=rule,
            recorded_by=current_user,
            key=key,
            member=member,
            note=form.note.data,
            photos=stored,
        )
    except DomainError as error:
        db.session.rollback()  # photo files already written stay unreferenced, never served
        if isinstance(error, IdempotencyConflict):
            form.key.data = uuid.uuid4().hex  # an old page sent again, changed: start afresh
        flash(_("Nothing was recorded: %(reason)s", reason=error.message), "error")
        return False
    if not created:  # a twin request got there first: keep its record, drop our photos
        db.session.rollback()
        flash(_("Already saved, nothing added: %(what)s", what=outcome_message(result)), "info")
        return True
    db.session.commit()
    flash(outcome_message(result), "warning" if isinstance(result, RuleWarning) else "success")
    return True


@bp.route("/households/<int:household_id>", methods=["GET", "POST"])
@role_required(*access.RECORDERS)
def household(household_id: int):
    """Show a household and record an award or a deduction for it."""
    household = get_household_or_404(household_id)
    members = [m for m in household.members if m.is_active]
    form = RecordForm()
    form.member.choices = [("", _("The household"))] + [(m.id, m.name) for m in members]
    if request.method == "POST":
        if not household.is_active:
            flash(_("This household is no longer active."), "error")
        elif form.validate_on_submit():
            if _record(form, household):
                return redirect(url_for(".household", household_id=household.id))
        else:
            flash(_("Nothing was recorded: please check the form."), "error")
    if not form.key.data:
        form.key.data = uuid.uuid4().hex
    award_rules, deduction_rules = usable_rules(household)
    transfers = db.session.scalars(
        sa.select(Transfer)
        .where(Transfer.household_id == household.id)
        .order_by(Transfer.created_at.desc(), Transfer.id.desc())
        .limit(RECENT)
    ).all()
    warnings = db.session.scalars(
        sa.select(RuleWarning)
        .where(RuleWarning.household_id == household.id)
        .order_by(RuleWarning.created_at.desc(), RuleWarning.id.desc())
        .limit(RECENT)
    ).all()
    return render_template(
        "cadre/record/household.html",
        household=household,
        members=members,
        balance=ledger.balance_of(household),
        transfers=transfers,
        warnings=warnings,
        award_rules=award_rules,
        deduction_rules=deduction_rules,
        evidence=photo_service.evidence_for(transfers),
        rule_label=rule_label,
        form=form,
        back_url=url_for(".home") if current_user.has_role(Role.CADRE) else url_for("main.home"),
        # Committee members void old shop redemptions from their receipts.
        is_committee=access.covers_village(current_user, household.group.village, Role.COMMITTEE),
    )
