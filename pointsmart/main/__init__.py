"""The landing page: send each person to their own home page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required

from ..templating import ROLE_HOMES

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def home():
    """Redirect to the home page of the user's first role."""
    for role, endpoint in ROLE_HOMES.items():
        if current_user.has_role(role):
            return redirect(url_for(endpoint))
    return render_template("main/no_role.html")


# Views in their own modules; imported last, they register on bp.
from . import rankings, statement  # noqa: E402, F401
