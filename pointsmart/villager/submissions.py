"""A villager's claims ("I did this") and reports (举报 / 随手拍), and what became of them."""

from __future__ import annotations

import uuid

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    MultipleFileField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length

from ..auth import role_required
from ..extensions import db
from ..models import Role
from ..services import rules as rule_service
from ..services import submissions
from ..services.errors import DomainError
from ..services.photos import MAX_PHOTOS
from ..timeutil import local_today
from . import bp, my_household

PHOTO_INPUT = {"accept": "image/jpeg,image/png,image/webp", "multiple": True}


class ClaimForm(FlaskForm):
    description = TextAreaField(
        _l("What did you do?"),
        validators=[
            DataRequired(_l("Please describe what you did.")),
            Length(max=submissions.MAX_DESCRIPTION),
        ],
        render_kw={
            "rows": 3,
            "placeholder": _l("For example: I swept the lane by the pond today."),
        },
    )
    rule = SelectField(_l("Which rule is it? (if you know)"), coerce=int, choices=[], default=0)
    photos = MultipleFileField(_l("Photos (up to 4)"), render_kw=PHOTO_INPUT)
    key = HiddenField()


class ReportForm(FlaskForm):
    what = TextAreaField(
        _l("What did you see?"),
        validators=[
            DataRequired(_l("Please describe what you saw.")),
            Length(max=submissions.MAX_DESCRIPTION),
        ],
        render_kw={"rows": 3, "placeholder": _l("For example: rubbish dumped by the river.")},
    )
    where = StringField(
        _l("Where?"),
        validators=[
            DataRequired(_l("Please say where it was.")),
            Length(max=submissions.MAX_LOCATION),
        ],
    )
    photos = MultipleFileField(_l("Photos (up to 4)"), render_kw=PHOTO_INPUT)
    anonymous = BooleanField(_l("Do not tell other villagers that I reported this"))
    key = HiddenField()


def _with_key(form: FlaskForm) -> FlaskForm:
    # A fresh key per form page: a double tap or a retry submits the same claim once.
    if not form.key.data:
        form.key.data = str(uuid.uuid4())
    return form


@bp.route("/claims/new", methods=["GET", "POST"])
@role_required(Role.VILLAGER)
def new_claim():
    """Claim points for something the household did, with photos."""
    village = my_household().group.village
    form = ClaimForm()
    today = local_today()
    form.rule.choices = [(0, _("I don't know"))] + [
        (r.id, f"{r.name} (+{r.points})")
        for r in rule_service.catalogue(village=village)
        if not r.is_deduction and r.is_active_on(today)
    ]
    if form.validate_on_submit():
        try:
            rule = (
                rule_service.get_village_rule(form.rule.data, village) if form.rule.data else None
            )
            submissions.submit_claim(
                current_user,
                form.description.data,
                request.files.getlist(form.photos.name),
                key=form.key.data,
                rule=rule,
            )
            db.session.commit()
            flash(_("Sent. A village cadre will check your claim."), "success")
            return redirect(url_for(".submissions"))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "villager/submissions/claim.html", form=_with_key(form), max_photos=MAX_PHOTOS
    )


@bp.route("/reports/new", methods=["GET", "POST"])
@role_required(Role.VILLAGER)
def new_report():
    """Report a violation seen in the village (随手拍), optionally anonymously."""
    form = ReportForm()
    if form.validate_on_submit():
        try:
            submissions.submit_report(
                current_user,
                form.what.data,
                form.where.data,
                request.files.getlist(form.photos.name),
                anonymous=form.anonymous.data,
                key=form.key.data,
            )
            db.session.commit()
            flash(_("Sent. A village cadre will check your report."), "success")
            return redirect(url_for(".submissions"))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "villager/submissions/report.html", form=_with_key(form), max_photos=MAX_PHOTOS
    )


@bp.get("/submissions", endpoint="submissions")
@role_required(Role.VILLAGER)
def submissions_list():
    """Show the household's claims and reports with their status and resulting awards."""
    claims, reports = submissions.of_household(my_household())
    return render_template("villager/submissions/list.html", claims=claims, reports=reports)
