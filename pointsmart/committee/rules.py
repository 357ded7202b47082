"""The village's scoring-rule catalogue (积分细则) for its committee: list, add, edit, withdraw.

The form and the templates serve the town administrators' templates too (admin/rules.py).
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional, StopValidation

from .. import access
from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..labels import category_label
from ..models import Category, LimitPeriod, Role, ScoringRule, Transfer
from ..services import rules as rule_service
from ..services.errors import DomainError
from ..services.rules import RuleData
from . import MAX_ID, bp, get_village_or_404, member_villages

_PERIOD = {
    LimitPeriod.NONE: _l("No limit"),
    LimitPeriod.DAY: _l("per day"),
    LimitPeriod.WEEK: _l("per week"),
    LimitPeriod.MONTH: _l("per month"),
    LimitPeriod.QUARTER: _l("per quarter"),
    LimitPeriod.YEAR: _l("per year"),
}


def limit_text(rule: ScoringRule) -> str:
    """Return a rule's limit in words, e.g. '1 time(s) per day', or 'No limit'."""
    if rule.limit_period is LimitPeriod.NONE:
        return str(_PERIOD[LimitPeriod.NONE])
    return _("%(n)s time(s) %(period)s", n=rule.limit_count, period=str(_PERIOD[rule.limit_period]))


class WholeNumberField(IntegerField):
    """An optional whole number in digits (full-width digits too), with a message of our own."""

    def process_formdata(self, valuelist):
        text = valuelist[0].strip() if valuelist and valuelist[0] else ""
        self.data = None
        if not text:
            return
        if not re.fullmatch(r"[+-]?\d{1,9}", text):
            raise ValueError(_("Please enter a whole number in digits, for example 5."))
        self.data = int(text)

    def pre_validate(self, form):
        if self.process_errors:  # not a number: no range message on top
            raise StopValidation()


class RuleForm(FlaskForm):
    name = StringField(
        _l("Name of the rule"),
        validators=[InputRequired(_l("Please give the rule a name.")), Length(max=60)],
        render_kw={"placeholder": _l("e.g. Waste sorted correctly")},
    )
    kind = RadioField(
        _l("Kind"),
        choices=[
            SelectChoice("award", _l("Award: the household earns points")),
            SelectChoice("deduction", _l("Deduction: the household loses points")),
        ],
        default="award",
        validators=[InputRequired(_l("Please choose award or deduction."))],
    )
    points = WholeNumberField(
        _l("Points"),
        validators=[
            InputRequired(_l("Please enter the points.")),
            NumberRange(
                min=1,
                max=rule_service.MAX_RULE_POINTS,
                message=_l("Points must be a whole number from %(min)s to %(max)s."),
            ),
        ],
        render_kw={"inputmode": "numeric"},
    )
    category = SelectField(
        _l("Category"),
        choices=[SelectChoice(c.value, category_label(c)) for c in Category],
        default=Category.WASTE_SORTING.value,
    )
    limit_count = WholeNumberField(
        _l("Number of times"),
        validators=[
            Optional(),
            NumberRange(
                min=1,
                max=rule_service.MAX_LIMIT_COUNT,
                message=_l("The limit must be between %(min)s and %(max)s times per period."),
            ),
        ],
        render_kw={"inputmode": "numeric"},
    )
    limit_period = SelectField(
        _l("Limit period"),
        choices=[SelectChoice(p.value, _PERIOD[p]) for p in LimitPeriod],
        default=LimitPeriod.NONE.value,
    )
    photo_required = BooleanField(_l("A photo is required as evidence"))
    warning_first = BooleanField(
        _l("Deductions: the first offence in a limit period is a warning only")
    )
    active_from = DateField(_l("In force from (empty: always)"), validators=[Optional()])
    active_until = DateField(_l("In force until (empty: no end)"), validators=[Optional()])

    def fill(self, rule: ScoringRule) -> None:
        """Prefill the form with a rule version's values."""
        self.name.data = rule.name
        self.kind.data = "deduction" if rule.is_deduction else "award"
        self.points.data = abs(rule.points)
        self.category.data = rule.category.value
        self.limit_count.data = rule.limit_count
        self.limit_period.data = rule.limit_period.value
        self.photo_required.data = rule.photo_required
        self.warning_first.data = rule.warning_first
        self.active_from.data = rule.active_from
        self.active_until.data = rule.active_until

    def rule_data(self) -> RuleData:
        """Return what the form says, for the rule service to check and save."""
        sign = -1 if self.kind.data == "deduction" else 1
        return RuleData(
            name=self.name.data or "",
            category=Category(self.category.data),
            points=sign * self.points.data,
            limit_count=self.limit_count.data,
            limit_period=LimitPeriod(self.limit_period.data),
            photo_required=bool(self.photo_required.data),
            warning_first=bool(self.warning_first.data),
            active_from=self.active_from.data,
            active_until=self.active_until.data,
        )


def split(rules: list[ScoringRule]) -> tuple[list[ScoringRule], list[ScoringRule]]:
    """Return (awards, deductions) of a catalogue."""
    return [r for r in rules if r.points > 0], [r for r in rules if r.points < 0]


def usage(rules: list[ScoringRule]) -> dict[int, int]:
    """Return how many records (any status) were given under each rule version."""
    if not rules:
        return {}
    rows = db.session.execute(
        sa.select(Transfer.rule_id, sa.func.count())
        .where(Transfer.rule_id.in_([r.id for r in rules]))
        .group_by(Transfer.rule_id)
    )
    return dict(rows.all())


def get_rule_or_404(rule_id: int) -> ScoringRule:
    """Return a rule version of one of the member's villages; 404 for any other (or a template)."""
    rule = db.session.get(ScoringRule, rule_id) if rule_id <= MAX_ID else None
    if (
        rule is None
        or rule.village is None
        or not access.covers_village(current_user, rule.village, Role.COMMITTEE)
    ):
        abort(404)
    return rule


def rule_url(action: str, rule: ScoringRule) -> str:
    """Return the committee's URL of a rule page: history, edit or withdraw."""
    return url_for(f"committee.{RULE_ENDPOINTS[action]}", rule_id=rule.id)


RULE_ENDPOINTS = {"history": "rule_history", "edit": "edit_rule", "withdraw": "withdraw_rule"}


@bp.get("/rules/")
@role_required(Role.COMMITTEE)
def rules():
    """List the current rules of each of the member's villages: awards first, then deductions."""
    sections = []
    for village in member_villages():
        awards, deductions = split(rule_service.catalogue(village=village))
        sections.append(
            {
                "owner": village,
                "title": _("Scoring rules of %(village)s", village=village.name),
                "awards": awards,
                "deductions": deductions,
                "withdrawn": rule_service.withdrawn(village=village),
                "new_url": url_for(".new_rule", village_id=village.id),
                "copy_url": url_for(".copy_rule_templates", village_id=village.id),
                "templates": len(rule_service.catalogue(town=village.town)),
            }
        )
    return render_template(
        "committee/rules/list.html",
        title=_("Scoring rules"),
        sections=sections,
        rule_url=rule_url,
        limit_text=limit_text,
    )


@bp.route("/villages/<int:village_id>/rules/new", methods=["GET", "POST"])
@role_required(Role.COMMITTEE)
def new_rule(village_id: int):
    """Add a rule to a village's catalogue."""
    village = get_village_or_404(village_id)
    form = RuleForm()
    if form.validate_on_submit():
        try:
            rule = rule_service.create(form.rule_data(), current_user, village=village)
            db.session.commit()
            flash(_("Rule added: %(name)s.", name=rule.name), "success")
            return redirect(url_for(".rules"))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "committee/rules/form.html",
        form=form,
        title=_("New rule for %(owner)s", owner=village.name),
        back_url=url_for(".rules"),
    )


@bp.get("/rules/<int:rule_id>")
@role_required(Role.COMMITTEE)
def rule_history(rule_id: int):
    """Show every version of a rule, with how many records each was given for."""
    rule = get_rule_or_404(rule_id)
    versions = rule_service.versions(rule)
    return render_template(
        "committee/rules/history.html",
        rule=rule,
        versions=versions,
        newest=versions[0],
        used=usage(versions),
        rule_url=rule_url,
        limit_text=limit_text,
        back_url=url_for(".rules"),
        owner_name=rule.village.name,
    )


@bp.route("/rules/<int:rule_id>/edit", methods=["GET", "POST"])
@role_required(Role.COMMITTEE)
def edit_rule(rule_id: int):
    """Publish a new version of a rule; records already given keep their version."""
    rule = get_rule_or_404(rule_id)
    return edit_rule_view(rule, rule_url)


def edit_rule_view(rule: ScoringRule, links):
    """Show and save the edit form of a rule; ``links`` is the audience's rule_url."""
    form = RuleForm()
    if not form.is_submitted():
        form.fill(rule)
    if form.validate_on_submit():
        try:
            new = rule_service.revise(rule, form.rule_data(), current_user)
            db.session.commit()
            if new.id == rule.id:
                flash(_("Nothing was changed."), "info")
            else:
                flash(
                    _(
                        "Saved as version %(version)s of %(name)s.",
                        version=new.version,
                        name=new.name,
                    ),
                    "success",
                )
            return redirect(links("history", new))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "committee/rules/form.html",
        form=form,
        rule=rule,
        title=_("Edit %(name)s", name=rule.name),
        back_url=links("history", rule),
    )


@bp.post("/rules/<int:rule_id>/withdraw")
@role_required(Role.COMMITTEE)
def withdraw_rule(rule_id: int):
    """Take a rule out of the catalogue; records already given under it stay."""
    rule = get_rule_or_404(rule_id)
    return withdraw_rule_view(rule, rule_url)


def withdraw_rule_view(rule: ScoringRule, links):
    """Withdraw a rule on a one-button form; ``links`` is the audience's rule_url."""
    if EmptyForm().validate_on_submit():
        try:
            rule_service.withdraw(rule, current_user)
            db.session.commit()
            flash(_("Rule withdrawn: %(name)s.", name=rule.name), "success")
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return redirect(links("history", rule))


@bp.post("/villages/<int:village_id>/rules/copy-templates")
@role_required(Role.COMMITTEE)
def copy_rule_templates(village_id: int):
    """Copy the town's rule templates into the village's catalogue, skipping names it has."""
    village = get_village_or_404(village_id)
    if EmptyForm().validate_on_submit():
        try:
            offered = len(rule_service.catalogue(town=village.town))
            copied = rule_service.copy_templates(village.town, village, current_user)
            db.session.commit()
            if not offered:
                flash(_("The town has not published any rule templates yet."), "info")
            else:
                flash(
                    _(
                        "Copied %(copied)s rule(s) from the town's templates; %(skipped)s were skipped because the catalogue already has a rule of that name.",
                        copied=len(copied),
                        skipped=offered - len(copied),
                    ),
                    "success",
                )
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return redirect(url_for(".rules"))
