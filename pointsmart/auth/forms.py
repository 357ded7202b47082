from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired, Length


class VillagerLoginForm(FlaskForm):
    phone = StringField(
        _l("Mobile number"),
        validators=[InputRequired(), Length(max=20)],
        render_kw={"inputmode": "tel", "autocomplete": "tel"},
    )
    pin = PasswordField(
        _l("PIN (6 digits)"),
        validators=[InputRequired(), Length(max=20)],
        render_kw={"inputmode": "numeric", "autocomplete": "current-password"},
    )
    next = HiddenField()


class StaffLoginForm(FlaskForm):
    username = StringField(
        _l("Username"),
        validators=[InputRequired(), Length(max=40)],
        render_kw={"autocomplete": "username", "autocapitalize": "none"},
    )
    password = PasswordField(
        _l("Password"),
        validators=[InputRequired(), Length(max=200)],
        render_kw={"autocomplete": "current-password"},
    )
    next = HiddenField()


class EmptyForm(FlaskForm):
    """A one-button action (log out, approve, void): only the CSRF token."""
