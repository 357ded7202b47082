"""Template filters and globals shared by every page."""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_babel import format_datetime, get_locale
from flask_login import current_user

from .models import Role

ROLE_HOMES = {
    Role.ADMIN: "admin.home",
    Role.COMMITTEE: "committee.home",
    Role.CADRE: "cadre.home",
    Role.CLERK: "clerk.home",
    Role.VILLAGER: "villager.home",
}


def init_app(app: Flask) -> None:
    from .auth.forms import EmptyForm
    from .labels import category_label, role_label, status_label, transfer_kind_label

    # Globals (not context) so that imported macros see them too.
    app.jinja_env.globals.update(
        empty_form=EmptyForm,
        role_label=role_label,
        category_label=category_label,
        status_label=status_label,
        transfer_kind_label=transfer_kind_label,
    )

    @app.context_processor
    def globals_():
        roles = current_user.roles if current_user.is_authenticated else set()
        # Babel expands zh_CN to zh_Hans_CN; templates compare with the LANGUAGES codes.
        locale = get_locale()
        return {
            "languages": current_app.config["LANGUAGES"],
            "locale": "_".join(filter(None, (locale.language, locale.territory))),
            "role_homes": [(r, ROLE_HOMES[r]) for r in ROLE_HOMES if r in roles],
            "request_path": request.full_path.rstrip("?") if request else "/",
        }

    @app.template_filter("localtime")
    def localtime(value, fmt="yyyy-MM-dd HH:mm"):
        return format_datetime(value, fmt) if value else ""

    @app.template_filter("signed")
    def signed(value: int) -> str:
        return f"+{value}" if value > 0 else str(value)
