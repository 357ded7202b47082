"""The town's love supermarkets: add one for a village or the whole town, open or close it.

The catalogue, stock, day report and exchange window are the clerk's pages under /clerk/,
which the town's administrators may open too; this list links to them.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField, StringField
from wtforms.validators import Length

from ..auth import role_required
from ..auth.forms import EmptyForm
from ..models import Role, Shop, Town, Village
from ..services import admin as admin_service
from ..services.errors import InvalidInput
from . import bp
from .scope import my_town_ids, my_towns, page_of, parse_place, place_value, shop_or_404, submitted
from .villages import apply


class ShopForm(FlaskForm):
    name = StringField(_l("Name of the shop"), validators=[Length(max=200)])
    #: "town:<id>" for a shop serving every village of the town, or "village:<id>".
    serves = SelectField(_l("Serves"), validate_choice=False)


def serves_choices(towns: list[Town]) -> list[SelectChoice]:
    """Return the choices of whom a new shop serves: a whole town or one of its villages."""
    choices = []
    for town in towns:
        choices.append(
            SelectChoice(
                place_value(town),
                _("Every village of %(town)s", town=town.name),
                optgroup=town.name,
            )
        )
        choices.extend(
            SelectChoice(place_value(v), v.name, optgroup=town.name) for v in town.villages
        )
    return choices


@bp.get("/shops/")
@role_required(Role.ADMIN)
def shops():
    """List the shops of the administrator's towns, with a form to add one."""
    towns = my_towns()
    form = ShopForm(formdata=None)
    form.serves.choices = serves_choices(towns)
    pagination = page_of(
        sa.select(Shop)
        .where(Shop.town_id.in_(my_town_ids()))
        .order_by(Shop.is_active.desc(), Shop.name, Shop.id)
    )
    return render_template("admin/shops.html", pagination=pagination, form=form, action=EmptyForm())


def _create(form: ShopForm) -> Shop:
    place = parse_place(form.serves.data)
    if isinstance(place, Town):
        return admin_service.create_shop(current_user, place, form.name.data)
    if isinstance(place, Village):
        return admin_service.create_shop(current_user, place.town, form.name.data, place)
    raise InvalidInput(_l("Choose which villages the shop serves."))


@bp.post("/shops/new")
@role_required(Role.ADMIN)
def new_shop():
    """Add a love supermarket (with its points account) for a village or the whole town."""
    form = ShopForm()
    if submitted(form):
        apply(lambda: _create(form), lambda shop: _("Shop added: %(name)s.", name=shop.name))
    return redirect(url_for(".shops"))


def _set_active(shop_id: int, active: bool):
    shop = shop_or_404(shop_id)
    if submitted(EmptyForm()):
        if active:
            done = _("%(shop)s is open for exchanges again.", shop=shop.name)
        else:
            done = _(
                "%(shop)s is closed: the counter no longer redeems points there. "
                "Its goods, sales and reports stay.",
                shop=shop.name,
            )
        apply(lambda: admin_service.set_shop_active(current_user, shop, active), lambda _s: done)
    return redirect(url_for(".shops"))


@bp.post("/shops/<int:shop_id>/deactivate")
@role_required(Role.ADMIN)
def deactivate_shop(shop_id: int):
    """Close a shop: no more redemptions there; everything it recorded stays."""
    return _set_active(shop_id, False)


@bp.post("/shops/<int:shop_id>/activate")
@role_required(Role.ADMIN)
def activate_shop(shop_id: int):
    """Open a closed shop again."""
    return _set_active(shop_id, True)
