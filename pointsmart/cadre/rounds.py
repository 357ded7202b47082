"""Inspection rounds in the field: open a round for a group, mark every household on one
phone page, submit once; a submitted round shows what it recorded."""

from __future__ import annotations

from collections import Counter

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import InputRequired, Length

from .. import access
from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..models import InspectionRound, Mark, RoundStatus, User, VillagerGroup
from ..services import rounds, rules
from ..services.errors import DomainError, InvalidInput
from . import bp
from .record import coerce_id, rule_label


class OpenRoundForm(FlaskForm):
    title = StringField(
        _l("Title"),
        validators=[InputRequired(_l("Please give the round a title.")), Length(max=60)],
        render_kw={"maxlength": rounds.MAX_TITLE_LENGTH},
    )
    pass_rule = SelectField(_l("Rule for pass (合格)"), coerce=coerce_id, validate_choice=False)
    fail_rule = SelectField(_l("Rule for fail (不合格)"), coerce=coerce_id, validate_choice=False)


def _in_village(user: User, village_id: int) -> bool:
    """Return whether one of the user's recorder grants lies in (or above) this village."""
    for grant in user.grants:
        if grant.role not in access.RECORDERS:
            continue
        if grant.village_id == village_id or (
            grant.group is not None and grant.group.village_id == village_id
        ):
            return True
        if grant.household is not None and grant.household.group.village_id == village_id:
            return True
    return False


def _refuse(group: VillagerGroup):
    """Answer for a group the user does not cover: say so within their village, else 404."""
    if not _in_village(current_user, group.village_id):
        abort(404)  # another village: not even its existence is told
    message = _("You do not cover %(group)s; only its own cadres can inspect it.", group=group.name)
    return render_template("error.html", title=_("Not allowed"), message=message), 403


def _rule_or_none(rule_id, village, label):
    if rule_id is None:
        if request.form.get(label):
            raise InvalidInput(_l("There is no such rule in this village's catalogue."))
        return None
    return rules.get_village_rule(rule_id, village)


@bp.get("/rounds/")
@role_required(*access.RECORDERS)
def rounds_list():
    """List the user's groups, their open rounds and the rounds submitted lately."""
    open_rounds, recent = rounds.rounds_for(current_user)
    return render_template(
        "cadre/rounds/list.html",
        groups=rounds.groups_for(current_user),
        open_rounds=open_rounds,
        recent=recent,
    )


@bp.route("/groups/<int:group_id>/rounds/new", methods=["GET", "POST"])
@role_required(*access.RECORDERS)
def new_round(group_id: int):
    """Open an inspection round for a group: a title and the rules for pass and fail."""
    group = db.session.get(VillagerGroup, group_id)
    if group is None:
        abort(404)
    if not rounds.covers(current_user, group):
        return _refuse(group)
    village = group.village
    usable = rounds.usable_rules(village)
    form = OpenRoundForm()
    form.pass_rule.choices = [("", _("None"))] + [
        (r.id, rule_label(r)) for r in usable if not r.is_deduction
    ]
    form.fail_rule.choices = [("", _("None"))] + [
        (r.id, rule_label(r)) for r in usable if r.is_deduction
    ]
    if form.validate_on_submit():
        try:
            round_ = rounds.open_round(
                group,
                current_user,
                form.title.data,
                pass_rule=_rule_or_none(form.pass_rule.data, village, form.pass_rule.name),
                fail_rule=_rule_or_none(form.fail_rule.data, village, form.fail_rule.name),
            )
            db.session.commit()
            return redirect(url_for(".inspection_round", inspection_round_id=round_.id))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template("cadre/rounds/new.html", group=group, form=form)


@bp.route("/rounds/<int:inspection_round_id>", methods=["GET", "POST"])
@role_required(*access.RECORDERS)
def inspection_round(inspection_round_id: int):
    """Mark every household of an open round and submit once; or show a submitted round."""
    round_ = db.session.get(InspectionRound, inspection_round_id)
    if round_ is None:
        abort(404)
    if not rounds.covers(current_user, round_.group):
        return _refuse(round_.group)
    refused_id = None
    if request.method == "POST" and round_.status is RoundStatus.SUBMITTED:
        flash(_already_message(round_), "info")
        return redirect(url_for(".inspection_round", inspection_round_id=round_.id))
    if request.method == "POST" and EmptyForm().validate_on_submit():
        try:
            choices = rounds.parse_choices(round_, request.form)
            round_, submitted_now = rounds.submit(round_, current_user, choices)
        except rounds.RowRefused as error:
            db.session.rollback()
            refused_id = error.household.id
            flash(str(error.message), "error")
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
        else:
            if submitted_now:
                db.session.commit()
                flash(_summary_message(round_), "success")
            else:
                db.session.rollback()
                flash(_already_message(round_), "info")
            return redirect(url_for(".inspection_round", inspection_round_id=round_.id))
    if round_.status is RoundStatus.SUBMITTED:
        results = rounds.results(round_)
        return render_template(
            "cadre/rounds/result.html",
            round=round_,
            results=results,
            counts=Counter(row.outcome for row in results),
        )
    usable = rounds.usable_rules(round_.group.village)
    return render_template(
        "cadre/rounds/round.html",
        round=round_,
        households=rounds.households_of(round_),
        award_rules=[r for r in usable if not r.is_deduction],
        deduction_rules=[r for r in usable if r.is_deduction],
        rule_label=rule_label,
        form=EmptyForm(),
        chosen=request.form if request.method == "POST" else {},
        refused_id=refused_id,
        field_name=rounds.field_name,
        rule_field_name=rounds.rule_field_name,
        Mark=Mark,
    )


def _summary_message(round_: InspectionRound) -> str:
    counts = Counter(row.outcome for row in rounds.results(round_))
    return _(
        "Round submitted: %(awarded)s awarded, %(deducted)s deducted, %(warned)s warned, "
        "%(absent)s not at home. Awards and deductions wait for approval unless auto-approved.",
        awarded=counts["awarded"],
        deducted=counts["deducted"],
        warned=counts["warning"],
        absent=counts["absent"],
    )


def _already_message(round_: InspectionRound) -> str:
    return _(
        "This round was already submitted by %(name)s; nothing was recorded twice.",
        name=round_.submitted_by.display_name,
    )
