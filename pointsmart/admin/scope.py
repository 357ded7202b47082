"""What a town administrator may reach: the towns they administer and the places inside them.

Everything outside answers 404, so an administrator of another town learns nothing, not even
that a record exists.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, request
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectChoice

from ..committee import MAX_ID, parse_id
from ..extensions import db
from ..models import Household, Member, RoleGrant, Shop, Town, User, Village, VillagerGroup
from ..services import admin as admin_service
from . import bp

#: Rows on one page of a list.
PER_PAGE = 30

#: How a place is named in a form's value, e.g. "village:12".
PLACE_KINDS = {"town": Town, "village": Village, "group": VillagerGroup, "shop": Shop}


def my_town_ids() -> set[int]:
    """Return the ids of the towns the current user administers."""
    return admin_service.town_ids(current_user)


def my_towns() -> list[Town]:
    """Return the towns the current user administers, by name."""
    return list(
        db.session.scalars(
            sa.select(Town).where(Town.id.in_(my_town_ids())).order_by(Town.name, Town.id)
        )
    )


def _in_scope_or_404(model, object_id: int, place=lambda obj: obj):
    obj = db.session.get(model, object_id) if 0 < object_id <= MAX_ID else None
    if obj is None or not admin_service.administers(current_user, place(obj)):
        abort(404)
    return obj


def town_or_404(town_id: int) -> Town:
    """Return a town the user administers; 404 for any other."""
    return _in_scope_or_404(Town, town_id)


def village_or_404(village_id: int) -> Village:
    """Return a village of the user's towns; 404 for any other."""
    return _in_scope_or_404(Village, village_id)


def group_or_404(group_id: int) -> VillagerGroup:
    """Return a villager group of the user's towns; 404 for any other."""
    return _in_scope_or_404(VillagerGroup, group_id)


def household_or_404(household_id: int) -> Household:
    """Return a household of the user's towns; 404 for any other."""
    return _in_scope_or_404(Household, household_id)


def member_or_404(member_id: int) -> Member:
    """Return a household member of the user's towns; 404 for any other."""
    return _in_scope_or_404(Member, member_id, lambda member: member.household)


def shop_or_404(shop_id: int) -> Shop:
    """Return a shop of the user's towns; 404 for any other."""
    return _in_scope_or_404(Shop, shop_id)


def staff_or_404(user_id: int) -> User:
    """Return a staff account holding a role in the user's towns; 404 for any other."""
    user = db.session.get(User, user_id) if 0 < user_id <= MAX_ID else None
    if user is None or not admin_service.sees_account(current_user, user):
        abort(404)
    return user


def grant_or_404(user: User, grant_id: int) -> RoleGrant:
    """Return one of the account's roles; 404 for any other."""
    grant = next((g for g in user.grants if g.id == grant_id), None)
    if grant is None:
        abort(404)
    return grant


def page_of(query: sa.Select, per_page: int = PER_PAGE):
    """Return the page of ``query`` that ?page= asks for (past the end: the last page)."""
    page = request.args.get("page", 1, type=int)
    pagination = db.paginate(query, page=max(page, 1), per_page=per_page, error_out=False)
    if pagination.page > 1 and pagination.page > pagination.pages:
        pagination = db.paginate(query, page=pagination.pages, per_page=per_page)
    return pagination


def place_value(place) -> str:
    """Return a place as a form value, e.g. "village:12"."""
    kind = next(k for k, model in PLACE_KINDS.items() if isinstance(place, model))
    return f"{kind}:{place.id}"


def parse_place(value: str | None):
    """Return the place a form value names, or None (its scope is the service's to check)."""
    kind, _sep, raw = (value or "").partition(":")
    model = PLACE_KINDS.get(kind)
    object_id = parse_id(raw)
    if model is None or object_id is None:
        return None
    return db.session.get(model, object_id)


def place_choices(towns: list[Town], kinds=("town", "village", "group", "shop")):
    """Return select choices for the places of the towns, one option group per town."""
    choices = []
    for town in towns:
        if "town" in kinds:
            choices.append(SelectChoice(place_value(town), town.name, optgroup=town.name))
        for village in town.villages:
            if "village" in kinds:
                choices.append(SelectChoice(place_value(village), village.name, optgroup=town.name))
            if "group" in kinds:
                choices.extend(
                    SelectChoice(place_value(g), f"{village.name} · {g.name}", optgroup=town.name)
                    for g in village.groups
                )
        if "shop" in kinds:
            shops = db.session.scalars(
                sa.select(Shop).where(Shop.town_id == town.id).order_by(Shop.name)
            )
            choices.extend(SelectChoice(place_value(s), s.name, optgroup=town.name) for s in shops)
    return choices


def place_label(place) -> str:
    """Name a place so it reads alone: a group with its village, e.g. "青山村 · 一组"."""
    if isinstance(place, VillagerGroup):
        return f"{place.village.name} · {place.name}"
    if isinstance(place, Household):
        return f"{place.group.village.name} · {place.group.name} · {place.name}"
    return place.name


def flash_form_errors(form: FlaskForm) -> None:
    """Flash each field's first validation message."""
    for name, errors in form.errors.items():
        if name == "csrf_token":
            flash(str(errors[0]), "error")
            continue
        label = getattr(form, name).label.text
        flash(f"{label}: {errors[0]}", "error")


def submitted(form: FlaskForm) -> bool:
    """Return whether a POST-only form validated; flash what is wrong when it did not."""
    if form.validate_on_submit():
        return True
    flash_form_errors(form)
    return False


@bp.context_processor
def admin_helpers():
    return {
        "place_label": place_label,
        "place_town": lambda grant: admin_service.town_of(grant.place).id,
    }
