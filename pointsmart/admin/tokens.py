"""API tokens: issue one to a person or a device, see who holds which, revoke one.

A token's secret appears once, in the response to the POST that issued it (logged-in pages are
never cached), and is stored only as a hash; a lost secret is replaced by revoking the token
and issuing a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import selectinload
from wtforms import SelectChoice, SelectField, StringField
from wtforms.validators import Length

from ..auth import role_required
from ..auth.forms import EmptyForm
from ..committee import MAX_ID
from ..extensions import db
from ..labels import role_label
from ..models import ApiToken, Role, User
from ..services import api_tokens
from ..services.errors import DomainError, InvalidInput
from . import bp
from .scope import (
    household_or_404,
    my_town_ids,
    my_towns,
    page_of,
    parse_place,
    place_choices,
    submitted,
)
from .staff import CHOOSE
from .villages import apply

#: The roles a token may carry from the tokens page; a household's token is issued from its page.
TOKEN_ROLES = (Role.CLERK, Role.COMMITTEE, Role.CADRE, Role.ADMIN)

#: Where each role serves, as the form's place kinds.
_PLACE_KIND = {
    Role.CLERK: ("shop",),
    Role.COMMITTEE: ("village",),
    Role.CADRE: ("village", "group"),
    Role.ADMIN: ("town",),
}


class TokenForm(FlaskForm):
    name = StringField(
        _l("What or who the token is for"),
        validators=[Length(max=200)],
        render_kw={"autocomplete": "off"},
    )
    role = SelectField(_l("Role"), validate_choice=False)
    #: "town:<id>", "village:<id>", "group:<id>" or "shop:<id>"; checked against the role.
    place = SelectField(_l("Where"), validate_choice=False)

    def fill_choices(self) -> TokenForm:
        self.role.choices = [CHOOSE] + [SelectChoice(r.value, role_label(r)) for r in TOKEN_ROLES]
        self.place.choices = [CHOOSE, *place_choices(my_towns())]
        return self

    def role_and_place(self) -> tuple[Role, object]:
        """Return the chosen role and place. Raises InvalidInput when they do not fit."""
        try:
            role = Role(self.role.data)
        except ValueError:
            role = None
        if role not in TOKEN_ROLES:
            raise InvalidInput(_l("Choose the token's role."))
        place = parse_place(self.place.data)
        kind = (self.place.data or "").partition(":")[0]
        if place is None or kind not in _PLACE_KIND[role]:
            raise InvalidInput(
                _l(
                    "A clerk's token serves a shop, a committee's a village, a cadre's a village "
                    "or a group, an administrator's the town."
                )
            )
        return role, place


class HouseholdTokenForm(FlaskForm):
    name = StringField(
        _l("What or who the token is for"),
        validators=[Length(max=200)],
        render_kw={"autocomplete": "off"},
    )


def _token_or_404(token_id: int) -> ApiToken:
    token = db.session.get(ApiToken, token_id) if 0 < token_id <= MAX_ID else None
    if token is None or token.town_id not in my_town_ids():
        abort(404)
    return token


def _list(form: TokenForm):
    pagination = page_of(
        sa.select(ApiToken)
        .where(ApiToken.town_id.in_(my_town_ids()))
        .options(
            selectinload(ApiToken.user).selectinload(User.grants),
            selectinload(ApiToken.created_by),
        )
        .order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc(), ApiToken.id.desc())
    )
    return render_template(
        "admin/tokens.html", pagination=pagination, form=form, action=EmptyForm()
    )


@bp.get("/tokens/")
@role_required(Role.ADMIN)
def tokens():
    """List the API tokens of the administrator's towns, with a form to issue one."""
    return _list(TokenForm(formdata=None).fill_choices())


def _issued(issue):
    """Issue a token and show its secret, once; on a refusal show why, having saved nothing."""
    try:
        issued = issue()
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was saved: %(reason)s", reason=error.message), "error")
        return None
    db.session.commit()
    return render_template(
        "admin/token_issued.html",
        token=issued.token,
        secret=issued.secret,
        grant=api_tokens.scope_of(issued.token),
    )


@bp.post("/tokens/new")
@role_required(Role.ADMIN)
def new_token():
    """Issue a token with one role over one place; its secret is shown on this response only."""
    form = TokenForm().fill_choices()
    if not submitted(form):
        return _list(form)

    def issue():
        role, place = form.role_and_place()
        return api_tokens.issue(current_user, form.name.data, role, place)

    return _issued(issue) or _list(form)


@bp.post("/households/<int:household_id>/tokens")
@role_required(Role.ADMIN)
def new_household_token(household_id: int):
    """Issue a household's token (a mini-program acting as its villagers)."""
    household = household_or_404(household_id)
    form = HouseholdTokenForm()
    if submitted(form):
        page = _issued(
            lambda: api_tokens.issue(current_user, form.name.data, Role.VILLAGER, household)
        )
        if page:
            return page
    return redirect(url_for(".household", household_id=household.id))


@bp.post("/tokens/<int:token_id>/revoke")
@role_required(Role.ADMIN)
def revoke_token(token_id: int):
    """Revoke a token: every call with it is refused from now on."""
    token = _token_or_404(token_id)
    if submitted(EmptyForm()):
        apply(
            lambda: api_tokens.revoke(token, current_user),
            lambda t: _("Token %(name)s revoked: it no longer works.", name=t.name),
        )
    return redirect(url_for(".tokens"))
