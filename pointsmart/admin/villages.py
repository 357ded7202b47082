"""The town's villages, groups and households, and the logins of household members.

A new login or a reset PIN is shown once, on a printable slip rendered straight from the POST
response and never stored: the PIN exists in clear only in that response.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import (
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import force_locale, format_date
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import Length

from ..auth import role_required
from ..extensions import db
from ..models import Household, Member, Role, Shop, User, Village, VillagerGroup
from ..services import admin as admin_service
from ..services.errors import DomainError
from ..timeutil import local_today
from . import bp
from .scope import (
    group_or_404,
    household_or_404,
    member_or_404,
    my_town_ids,
    my_towns,
    page_of,
    submitted,
    town_or_404,
    village_or_404,
)

#: The session remembers the keys of the last slips shown, so a refresh shows no PIN again.
SLIP_KEYS = "pin_slips"
SLIP_MEMORY = 20


class NameForm(FlaskForm):
    # The service checks the name and says what is wrong in a message of its own.
    name = StringField(_l("Name"), validators=[Length(max=200)])


class LoginForm(FlaskForm):
    phone = StringField(
        _l("Mobile number"),
        validators=[Length(max=30)],
        render_kw={"inputmode": "tel", "autocomplete": "off"},
    )
    #: A fresh key per rendered form: the same form sent again shows no PIN.
    key = HiddenField(validators=[Length(max=64)])


class PinForm(FlaskForm):
    key = HiddenField(validators=[Length(max=64)])


def apply(change, done):
    """Run a service call and commit, flashing ``done(result)``; on a refusal roll back and
    flash why. Return the result, or None when refused."""
    try:
        result = change()
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was changed: %(reason)s", reason=error.message), "error")
        return None
    db.session.commit()
    flash(done(result), "success")
    return result


# --- villages ----------------------------------------------------------------------------


def _counts(village_ids: list[int]) -> dict[int, tuple[int, int]]:
    rows = db.session.execute(
        sa.select(
            VillagerGroup.village_id,
            sa.func.count(sa.distinct(VillagerGroup.id)),
            sa.func.count(Household.id),
        )
        .join(Household, Household.group_id == VillagerGroup.id, isouter=True)
        .where(VillagerGroup.village_id.in_(village_ids))
        .group_by(VillagerGroup.village_id)
    )
    return {village_id: (groups, households) for village_id, groups, households in rows}


@bp.get("/villages/")
@role_required(Role.ADMIN)
def villages():
    """List the villages of the administrator's towns, with a form to add one."""
    pagination = page_of(
        sa.select(Village)
        .where(Village.town_id.in_(my_town_ids()))
        .order_by(Village.town_id, Village.name, Village.id)
    )
    return render_template(
        "admin/villages.html",
        towns=my_towns(),
        pagination=pagination,
        counts=_counts([v.id for v in pagination.items]),
        form=NameForm(formdata=None),
    )


@bp.post("/towns/<int:town_id>/villages")
@role_required(Role.ADMIN)
def new_village(town_id: int):
    """Add a village (with its points accounts) to the town."""
    town = town_or_404(town_id)
    form = NameForm()
    created = None
    if submitted(form):
        created = apply(
            lambda: admin_service.create_village(current_user, town, form.name.data),
            lambda v: _("Village added: %(name)s.", name=v.name),
        )
    if created is None:
        return redirect(url_for(".villages"))
    return redirect(url_for(".village", village_id=created.id))


@bp.get("/villages/<int:village_id>")
@role_required(Role.ADMIN)
def village(village_id: int):
    """Show a village: its groups with their households, its shops, rename and add a group."""
    place = village_or_404(village_id)
    pagination = page_of(
        sa.select(VillagerGroup)
        .where(VillagerGroup.village_id == place.id)
        .order_by(VillagerGroup.name, VillagerGroup.id)
    )
    households = dict(
        db.session.execute(
            sa.select(Household.group_id, sa.func.count(Household.id))
            .where(Household.group_id.in_([g.id for g in pagination.items]))
            .group_by(Household.group_id)
        ).all()
    )
    shops = db.session.scalars(
        sa.select(Shop)
        .where(Shop.town_id == place.town_id)
        .where(sa.or_(Shop.village_id == place.id, Shop.village_id.is_(None)))
        .order_by(Shop.village_id.is_(None), Shop.name)
    ).all()
    return render_template(
        "admin/village.html",
        village=place,
        pagination=pagination,
        households=households,
        shops=shops,
        rename_form=NameForm(formdata=None, name=place.name),
        group_form=NameForm(formdata=None),
    )


@bp.post("/villages/<int:village_id>/rename")
@role_required(Role.ADMIN)
def rename_village(village_id: int):
    """Rename a village."""
    place = village_or_404(village_id)
    form = NameForm()
    before = place.name
    if submitted(form):
        apply(
            lambda: admin_service.rename_village(current_user, place, form.name.data),
            lambda v: _("Village renamed: %(before)s → %(after)s.", before=before, after=v.name),
        )
    return redirect(url_for(".village", village_id=place.id))


@bp.post("/villages/<int:village_id>/groups")
@role_required(Role.ADMIN)
def new_group(village_id: int):
    """Add a villager group to a village."""
    place = village_or_404(village_id)
    form = NameForm()
    if submitted(form):
        apply(
            lambda: admin_service.create_group(current_user, place, form.name.data),
            lambda g: _("Group added: %(name)s.", name=g.name),
        )
    return redirect(url_for(".village", village_id=place.id))


# --- groups and households ---------------------------------------------------------------


@bp.get("/groups/<int:group_id>")
@role_required(Role.ADMIN)
def group(group_id: int):
    """Show a group's households (searchable by name, house number or phone) and rename it."""
    place = group_or_404(group_id)
    search = request.args.get("q", "").strip()[:40]
    query = sa.select(Household).where(Household.group_id == place.id)
    if search:
        pattern = f"%{search}%"
        members = sa.select(Member.household_id).where(
            sa.or_(Member.name.like(pattern), Member.phone.like(pattern))
        )
        query = query.where(
            sa.or_(
                Household.name.like(pattern),
                Household.house_number == search,
                Household.id.in_(members),
            )
        )
    # House numbers are text; "2" before "10" as painted on the doors.
    query = query.order_by(
        sa.func.length(Household.house_number), Household.house_number, Household.id
    )
    return render_template(
        "admin/group.html",
        group=place,
        search=search,
        pagination=page_of(query),
        rename_form=NameForm(formdata=None, name=place.name),
    )


@bp.post("/groups/<int:group_id>/rename")
@role_required(Role.ADMIN)
def rename_group(group_id: int):
    """Rename a villager group."""
    place = group_or_404(group_id)
    form = NameForm()
    before = place.name
    if submitted(form):
        apply(
            lambda: admin_service.rename_group(current_user, place, form.name.data),
            lambda g: _("Group renamed: %(before)s → %(after)s.", before=before, after=g.name),
        )
    return redirect(url_for(".group", group_id=place.id))


@bp.get("/households/<int:household_id>")
@role_required(Role.ADMIN)
def household(household_id: int):
    """Show a household's members, each with a "create login" or "reset PIN" button."""
    place = household_or_404(household_id)
    members = place.members
    logins = {
        user.member_id: user
        for user in db.session.scalars(
            sa.select(User).where(User.member_id.in_([m.id for m in members]))
        )
    }
    rows = []
    for member in members:
        login = logins.get(member.id)
        if login is None:
            form = LoginForm(formdata=None, phone=member.phone or "", key=uuid.uuid4().hex)
        else:
            form = PinForm(formdata=None, key=uuid.uuid4().hex)
        rows.append({"member": member, "login": login, "form": form})
    from .tokens import HouseholdTokenForm  # here: tokens imports this module

    return render_template(
        "admin/household.html",
        household=place,
        rows=rows,
        token_form=HouseholdTokenForm(formdata=None),
    )


# --- villager logins and the one-time slip -------------------------------------------------


def _slip_shown(key: str) -> bool:
    return key in session.get(SLIP_KEYS, [])


def _remember_slip(key: str) -> None:
    session[SLIP_KEYS] = [*session.get(SLIP_KEYS, [])[-(SLIP_MEMORY - 1) :], key]


def _slip_response(slip: admin_service.Slip, created: bool):
    """Render the slip from this POST's response only: no-store, so no cache shows it again."""
    member = slip.member
    # The slip is for the villager: in Chinese, whatever language the administrator reads.
    with force_locale(current_app.config["BABEL_DEFAULT_LOCALE"]):
        sheet = render_template(
            "admin/_slip.html",
            member=member,
            phone=slip.user.phone,
            pin=slip.pin,
            today=format_date(local_today(), "long"),
            login_url=url_for("auth.login", _external=True),
        )
    response = make_response(
        render_template(
            "admin/slip.html",
            member=member,
            sheet=sheet,
            created=created,
            back_url=url_for(".household", household_id=member.household_id),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _slip_view(member: Member, form: FlaskForm, make_slip, created: bool):
    back = url_for(".household", household_id=member.household_id)
    key = form.key.data if form.validate_on_submit() else None
    if not key:
        flash(_("Nothing was changed: the form was incomplete. Please try again."), "error")
        return redirect(back)
    if _slip_shown(key):
        # A refresh or a second tap sends the same form again: the PIN is never shown twice.
        flash(
            _(
                "This slip was already shown and its PIN is not shown again. "
                "If the slip was lost, reset the PIN to print a new one."
            ),
            "info",
        )
        return redirect(back)
    try:
        slip = make_slip()
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was changed: %(reason)s", reason=error.message), "error")
        return redirect(back)
    db.session.commit()
    _remember_slip(key)
    return _slip_response(slip, created)


@bp.post("/members/<int:member_id>/login")
@role_required(Role.ADMIN)
def create_login(member_id: int):
    """Create a member's login with a new random PIN, and show the slip once."""
    member = member_or_404(member_id)
    form = LoginForm()
    return _slip_view(
        member,
        form,
        lambda: admin_service.create_villager_login(current_user, member, form.phone.data),
        created=True,
    )


@bp.post("/members/<int:member_id>/pin")
@role_required(Role.ADMIN)
def reset_pin(member_id: int):
    """Give a member a new random PIN (old sessions end), and show the slip once."""
    member = member_or_404(member_id)
    form = PinForm()
    return _slip_view(
        member, form, lambda: admin_service.reset_pin(current_user, member), created=False
    )
