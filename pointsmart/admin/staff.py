"""Staff accounts of the town: add one, give and take roles, reset a password, deactivate.

A deactivated account keeps its history and roles, cannot log in, and its open sessions end
at once; reactivating it lets it log in again.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import selectinload
from wtforms import PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import Length

from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..labels import role_label
from ..models import Role, User
from ..services import accounts
from ..services import admin as admin_service
from ..services.errors import DomainError, InvalidInput
from . import bp
from .scope import (
    flash_form_errors,
    grant_or_404,
    my_towns,
    page_of,
    parse_place,
    place_choices,
    place_label,
    staff_or_404,
    submitted,
)
from .villages import apply

#: The empty first option: nothing is chosen until the administrator chooses.
CHOOSE = SelectChoice("", _l("— choose —"))


def role_choices() -> list[SelectChoice]:
    return [CHOOSE] + [
        SelectChoice(role.value, role_label(role)) for role in admin_service.STAFF_ROLES
    ]


class GrantForm(FlaskForm):
    role = SelectField(_l("Role"), validate_choice=False)
    #: "town:<id>", "village:<id>", "group:<id>" or "shop:<id>"; the service checks it.
    place = SelectField(_l("Where"), validate_choice=False)

    def fill_choices(self) -> GrantForm:
        self.role.choices = role_choices()
        self.place.choices = [CHOOSE, *place_choices(my_towns())]
        return self

    def role_and_place(self) -> tuple[Role, object]:
        """Return the chosen role and place. Raises InvalidInput for a role that is none."""
        try:
            role = Role(self.role.data)
        except ValueError:
            raise InvalidInput(_l("Choose a staff role.")) from None
        return role, parse_place(self.place.data)


class StaffForm(GrantForm):
    username = StringField(
        _l("Username"),
        validators=[Length(max=200)],
        render_kw={"autocomplete": "off", "autocapitalize": "none"},
    )
    display_name = StringField(_l("Full name"), validators=[Length(max=200)])
    password = PasswordField(
        _l("Password (at least %(n)s characters)", n=accounts.MIN_PASSWORD),
        validators=[Length(max=200)],
        render_kw={"autocomplete": "new-password"},
    )


class PasswordForm(FlaskForm):
    password = PasswordField(
        _l("New password (at least %(n)s characters)", n=accounts.MIN_PASSWORD),
        validators=[Length(max=200)],
        render_kw={"autocomplete": "new-password"},
    )


@bp.get("/staff/")
@role_required(Role.ADMIN)
def staff():
    """List the staff accounts with a role in the administrator's towns, searchable by name."""
    search = request.args.get("q", "").strip()[:40]
    query = admin_service.staff_query(current_user, search).options(selectinload(User.grants))
    return render_template("admin/staff.html", pagination=page_of(query), search=search)


@bp.route("/staff/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_staff():
    """Create a staff account with one role over one place of the town."""
    form = StaffForm().fill_choices()
    if form.validate_on_submit():
        try:
            role, place = form.role_and_place()
            user = admin_service.create_staff(
                current_user,
                form.username.data,
                form.display_name.data,
                form.password.data,
                role,
                place,
            )
        except DomainError as error:
            db.session.rollback()
            flash(_("Nothing was saved: %(reason)s", reason=error.message), "error")
        else:
            db.session.commit()
            flash(
                _(
                    "Account %(username)s created. Give the password to %(name)s in person.",
                    username=user.username,
                    name=user.display_name,
                ),
                "success",
            )
            return redirect(url_for(".staff_account", user_id=user.id))
    elif form.is_submitted():
        flash_form_errors(form)
    return render_template("admin/staff_new.html", form=form)


@bp.get("/staff/<int:user_id>")
@role_required(Role.ADMIN)
def staff_account(user_id: int):
    """Show a staff account: its roles, add or remove one, reset the password, deactivate."""
    user = staff_or_404(user_id)
    return render_template(
        "admin/staff_account.html",
        user=user,
        manages=admin_service.manages_account(current_user, user),
        grant_form=GrantForm(formdata=None).fill_choices(),
        password_form=PasswordForm(formdata=None),
        action=EmptyForm(),
        mine=admin_service.town_ids(current_user),
    )


def _back(user: User):
    return redirect(url_for(".staff_account", user_id=user.id))


@bp.post("/staff/<int:user_id>/roles")
@role_required(Role.ADMIN)
def add_grant(user_id: int):
    """Give the account one more role over a place of the town."""
    user = staff_or_404(user_id)
    form = GrantForm().fill_choices()
    if submitted(form):

        def change():
            role, place = form.role_and_place()
            return admin_service.add_grant(current_user, user, role, place)

        apply(
            change,
            lambda g: _(
                "%(name)s is now also %(role)s of %(place)s.",
                name=user.display_name,
                role=role_label(g.role),
                place=place_label(g.place),
            ),
        )
    return _back(user)


@bp.post("/staff/<int:user_id>/roles/<int:grant_id>/remove")
@role_required(Role.ADMIN)
def remove_grant(user_id: int, grant_id: int):
    """Take one role away from the account (never its last one)."""
    user = staff_or_404(user_id)
    grant = grant_or_404(user, grant_id)
    role, place_name = grant.role, place_label(grant.place)
    if submitted(EmptyForm()):
        apply(
            lambda: admin_service.remove_grant(current_user, grant),
            lambda _u: _(
                "%(name)s is no longer %(role)s of %(place)s.",
                name=user.display_name,
                role=role_label(role),
                place=place_name,
            ),
        )
    return _back(user)


@bp.post("/staff/<int:user_id>/deactivate")
@role_required(Role.ADMIN)
def deactivate_staff(user_id: int):
    """Deactivate the account: no more logins, open sessions end now, history stays."""
    user = staff_or_404(user_id)
    if submitted(EmptyForm()):
        apply(
            lambda: admin_service.deactivate(current_user, user),
            lambda u: _(
                "%(name)s's account is deactivated: it cannot log in, and anyone logged in "
                "with it was logged out. Everything it recorded stays.",
                name=u.display_name,
            ),
        )
    return _back(user)


@bp.post("/staff/<int:user_id>/reactivate")
@role_required(Role.ADMIN)
def reactivate_staff(user_id: int):
    """Let a deactivated account log in again."""
    user = staff_or_404(user_id)
    if submitted(EmptyForm()):
        apply(
            lambda: admin_service.reactivate(current_user, user),
            lambda u: _("%(name)s's account can log in again.", name=u.display_name),
        )
    return _back(user)


@bp.post("/staff/<int:user_id>/password")
@role_required(Role.ADMIN)
def reset_password(user_id: int):
    """Set a new password for the account; its open sessions end."""
    user = staff_or_404(user_id)
    form = PasswordForm()
    if submitted(form):
        apply(
            lambda: admin_service.reset_password(current_user, user, form.password.data),
            lambda u: _(
                "New password set for %(name)s; anyone logged in with the old one was logged "
                "out. Give the new password in person.",
                name=u.display_name,
            ),
        )
    return _back(user)
