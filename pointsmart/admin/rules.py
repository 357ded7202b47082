"""The town's scoring-rule templates, kept by town administrators for villages to copy."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..auth import role_required
from ..committee import MAX_ID
from ..committee.rules import (
    RuleForm,
    edit_rule_view,
    limit_text,
    split,
    usage,
    withdraw_rule_view,
)
from ..extensions import db
from ..models import Role, ScoringRule, Town
from ..services import rules as rule_service
from ..services.errors import DomainError
from . import bp

RULE_ENDPOINTS = {
    "history": "rule_template",
    "edit": "edit_rule_template",
    "withdraw": "withdraw_rule_template",
}


def rule_url(action: str, rule: ScoringRule) -> str:
    """Return the administrator's URL of a template page: history, edit or withdraw."""
    return url_for(f"admin.{RULE_ENDPOINTS[action]}", template_id=rule.id)


def admin_towns() -> list[Town]:
    town_ids = [g.town_id for g in current_user.grants if g.role is Role.ADMIN and g.town_id]
    return list(
        db.session.scalars(sa.select(Town).where(Town.id.in_(town_ids)).order_by(Town.name))
    )


def get_town_or_404(town_id: int) -> Town:
    """Return a town the user administers; 404 for any other."""
    town = db.session.get(Town, town_id) if town_id <= MAX_ID else None
    if town is None or not rule_service.can_edit_templates(current_user, town):
        abort(404)
    return town


def get_template_or_404(template_id: int) -> ScoringRule:
    """Return a template of a town the user administers; 404 for any other or a village rule."""
    rule = db.session.get(ScoringRule, template_id) if template_id <= MAX_ID else None
    if (
        rule is None
        or rule.town is None
        or not rule_service.can_edit_templates(current_user, rule.town)
    ):
        abort(404)
    return rule


@bp.get("/rules/")
@role_required(Role.ADMIN)
def rule_templates():
    """List the rule templates of the administrator's towns: awards first, then deductions."""
    sections = []
    for town in admin_towns():
        awards, deductions = split(rule_service.catalogue(town=town))
        sections.append(
            {
                "owner": town,
                "title": _("Rule templates of %(town)s", town=town.name),
                "awards": awards,
                "deductions": deductions,
                "withdrawn": rule_service.withdrawn(town=town),
                "new_url": url_for(".new_rule_template", town_id=town.id),
                "copy_url": None,
                "templates": 0,
            }
        )
    return render_template(
        "committee/rules/list.html",
        title=_("Rule templates"),
        sections=sections,
        rule_url=rule_url,
        limit_text=limit_text,
    )


@bp.route("/towns/<int:town_id>/rules/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_rule_template(town_id: int):
    """Add a rule template to the town, for its villages to copy."""
    town = get_town_or_404(town_id)
    form = RuleForm()
    if form.validate_on_submit():
        try:
            rule = rule_service.create(form.rule_data(), current_user, town=town)
            db.session.commit()
            flash(_("Template added: %(name)s.", name=rule.name), "success")
            return redirect(url_for(".rule_templates"))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "committee/rules/form.html",
        form=form,
        title=_("New rule template for %(owner)s", owner=town.name),
        back_url=url_for(".rule_templates"),
    )


@bp.get("/rules/<int:template_id>")
@role_required(Role.ADMIN)
def rule_template(template_id: int):
    """Show every version of a template."""
    rule = get_template_or_404(template_id)
    versions = rule_service.versions(rule)
    return render_template(
        "committee/rules/history.html",
        rule=rule,
        versions=versions,
        newest=versions[0],
        used=usage(versions),
        rule_url=rule_url,
        limit_text=limit_text,
        back_url=url_for(".rule_templates"),
        owner_name=rule.town.name,
    )


@bp.route("/rules/<int:template_id>/edit", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit_rule_template(template_id: int):
    """Publish a new version of a template; copies villages made earlier stay as they are."""
    return edit_rule_view(get_template_or_404(template_id), rule_url)


@bp.post("/rules/<int:template_id>/withdraw")
@role_required(Role.ADMIN)
def withdraw_rule_template(template_id: int):
    """Withdraw a template; villages keep the copies they made."""
    return withdraw_rule_view(get_template_or_404(template_id), rule_url)
