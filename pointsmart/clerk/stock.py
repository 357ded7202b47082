"""The shop's catalogue and stock: items, intake, write-offs, goods photos and the exchange window.

Run by the shop's clerks and by the town's administrators; every change goes through
services.catalogue, which records a stock movement for every unit that moves.
"""

from __future__ import annotations

import uuid

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    FileField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..auth import role_required
from ..extensions import db
from ..models import Funding, Item, MovementKind, Role
from ..services import catalogue
from ..services.errors import DomainError
from . import bp, managed_item_or_404, managed_shop_or_404

MANAGERS = (Role.CLERK, Role.ADMIN)

FUNDING_LABELS = {
    Funding.PURCHASED: _l("Bought by the shop"),
    Funding.DONATED: _l("Donated"),
    Funding.VILLAGE_BUDGET: _l("Village budget"),
    Funding.TOWN_BUDGET: _l("Town budget"),
    Funding.OTHER: _l("Other"),
}
MOVEMENT_LABELS = {
    MovementKind.INTAKE: _l("Intake"),
    MovementKind.REDEMPTION: _l("Redeemed"),
    MovementKind.RETURN: _l("Returned (void)"),
    MovementKind.WRITE_OFF: _l("Written off"),
}


class ItemForm(FlaskForm):
    name = StringField(_l("Name"), validators=[InputRequired(), Length(max=60)])
    category = StringField(
        _l("Category"),
        validators=[InputRequired(), Length(max=30)],
        render_kw={"list": "categories"},
    )
    points = StringField(
        _l("Price in points"),
        validators=[InputRequired()],
        render_kw={"inputmode": "numeric"},
    )
    low_stock_at = StringField(
        _l("Warn when stock falls to"),
        default="5",
        validators=[InputRequired()],
        render_kw={"inputmode": "numeric"},
    )
    is_active = BooleanField(_l("On sale"), default=True)
    photo = FileField(
        _l("Photo (optional)"), render_kw={"accept": "image/jpeg,image/png,image/webp"}
    )


class IntakeForm(FlaskForm):
    key = HiddenField(validators=[InputRequired(), Length(max=120)])
    quantity = StringField(
        _l("Units received"), validators=[InputRequired()], render_kw={"inputmode": "numeric"}
    )
    cost = StringField(
        _l("Total cost in yuan (optional)"),
        validators=[Optional(), Length(max=20)],
        render_kw={"inputmode": "decimal"},
    )
    funding = SelectField(
        _l("Paid by"),
        choices=[SelectChoice(f.value, label) for f, label in FUNDING_LABELS.items()],
    )
    donor = StringField(_l("Donor or funding source (optional)"), validators=[Length(max=60)])


class WriteOffForm(FlaskForm):
    key = HiddenField(validators=[InputRequired(), Length(max=120)])
    quantity = StringField(
        _l("Units to write off"), validators=[InputRequired()], render_kw={"inputmode": "numeric"}
    )
    reason = TextAreaField(
        _l("Reason"),
        validators=[InputRequired(_l("Please give a reason.")), Length(max=200)],
        render_kw={"rows": 2, "maxlength": 200},
    )


class WindowForm(FlaskForm):
    days = StringField(
        _l("Days of the month (empty: every day)"),
        validators=[Length(max=90)],
        render_kw={"placeholder": "10, 25", "inputmode": "numeric"},
    )
    weekdays = SelectMultipleField(
        _l("Weekdays (none ticked: every weekday)"),
        choices=[],
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
        validate_choice=False,
    )
    opens_at = TimeField(_l("Opens at (empty: all day)"), validators=[Optional()])
    closes_at = TimeField(_l("Closes at"), validators=[Optional()])


def _flash_form_errors(form: FlaskForm) -> None:
    for field_name, errors in form.errors.items():
        label = getattr(form, field_name).label.text if hasattr(form, field_name) else ""
        for error in errors:
            flash(f"{label}: {error}" if label else str(error), "error")


@bp.get("/shops/<int:shop_id>/items")
@role_required(*MANAGERS)
def items(shop_id: int):
    """List the shop's goods with their stock, low stock first."""
    shop = managed_shop_or_404(shop_id)
    ordered = sorted(shop.items, key=lambda i: (not i.is_low, not i.is_active, i.category, i.name))
    return render_template("clerk/items.html", shop=shop, items=ordered)


def _item_data(form: ItemForm) -> catalogue.ItemData:
    return catalogue.ItemData(
        name=form.name.data,
        category=form.category.data,
        points=form.points.data,
        low_stock_at=form.low_stock_at.data,
        is_active=form.is_active.data,
    )


def _save_photo(item: Item, form: ItemForm) -> None:
    upload = request.files.get(form.photo.name)
    if upload and upload.filename:
        catalogue.set_item_photo(item, upload, current_user)


@bp.route("/shops/<int:shop_id>/items/new", methods=["GET", "POST"])
@role_required(*MANAGERS)
def new_item(shop_id: int):
    """Add an item to the shop's catalogue."""
    shop = managed_shop_or_404(shop_id)
    form = ItemForm()
    if form.validate_on_submit():
        try:
            item = catalogue.create_item(shop, _item_data(form), current_user)
            _save_photo(item, form)
        except DomainError as error:
            db.session.rollback()
            flash(_("Nothing was saved: %(reason)s", reason=error.message), "error")
        else:
            db.session.commit()
            flash(
                _(
                    "“%(name)s” added. Record the first intake to put it on the shelf.",
                    name=item.name,
                ),
                "success",
            )
            return redirect(url_for(".item", item_id=item.id))
    elif request.method == "POST":
        _flash_form_errors(form)
    return render_template(
        "clerk/item_form.html",
        shop=shop,
        form=form,
        item=None,
        categories=catalogue.SUGGESTED_CATEGORIES,
    )


@bp.route("/items/<int:item_id>/edit", methods=["GET", "POST"])
@role_required(*MANAGERS)
def edit_item(item_id: int):
    """Change an item's name, price, category, warning level, photo or whether it is on sale."""
    item = managed_item_or_404(item_id)
    form = ItemForm(obj=item) if request.method == "GET" else ItemForm()
    if request.method == "GET":
        form.points.data = str(item.points)
        form.low_stock_at.data = str(item.low_stock_at)
    if form.validate_on_submit():
        try:
            catalogue.update_item(item, _item_data(form), current_user)
            _save_photo(item, form)
        except DomainError as error:
            db.session.rollback()
            flash(_("Nothing was saved: %(reason)s", reason=error.message), "error")
        else:
            db.session.commit()
            flash(_("Saved."), "success")
            return redirect(url_for(".item", item_id=item.id))
    elif request.method == "POST":
        _flash_form_errors(form)
    return render_template(
        "clerk/item_form.html",
        shop=item.shop,
        form=form,
        item=item,
        categories=catalogue.SUGGESTED_CATEGORIES,
    )


@bp.get("/items/<int:item_id>")
@role_required(*MANAGERS)
def item(item_id: int):
    """Show an item's stock and movements, with the intake and write-off forms."""
    item = managed_item_or_404(item_id)
    return render_template(
        "clerk/item.html",
        item=item,
        movements=catalogue.movements(item),
        intake=IntakeForm(key=uuid.uuid4().hex),
        write_off=WriteOffForm(key=uuid.uuid4().hex),
        funding_labels=FUNDING_LABELS,
        movement_labels=MOVEMENT_LABELS,
    )


def _record_movement(item: Item, form: FlaskForm, record, refused: str, done: str):
    """Validate a stock form, record its movement, flash the outcome, go back to the item."""
    if not form.validate_on_submit():
        _flash_form_errors(form)
    else:
        try:
            movement = record()
        except DomainError as error:
            db.session.rollback()
            flash(str(refused) % {"reason": error.message}, "error")
        else:
            db.session.commit()
            values = {"n": abs(movement.quantity), "name": item.name, "stock": item.stock}
            flash(str(done) % values, "success")
    return redirect(url_for(".item", item_id=item.id))


@bp.post("/items/<int:item_id>/intake")
@role_required(*MANAGERS)
def intake(item_id: int):
    """Record goods arriving: units, cost and who paid or donated."""
    item = managed_item_or_404(item_id)
    form = IntakeForm()
    return _record_movement(
        item,
        form,
        lambda: catalogue.receive(
            item,
            current_user,
            quantity_=form.quantity.data,
            key=form.key.data,
            cost_yuan=form.cost.data,
            funding=form.funding.data,
            donor=form.donor.data,
        ),
        refused=_l("Nothing was recorded: %(reason)s"),
        done=_l("%(n)s × “%(name)s” received; %(stock)s in stock."),
    )


@bp.post("/items/<int:item_id>/write-off")
@role_required(*MANAGERS)
def write_off(item_id: int):
    """Take spoiled, broken or lost units off the shelf, with a reason."""
    item = managed_item_or_404(item_id)
    form = WriteOffForm()
    return _record_movement(
        item,
        form,
        lambda: catalogue.write_off(
            item,
            current_user,
            quantity_=form.quantity.data,
            reason=form.reason.data,
            key=form.key.data,
        ),
        refused=_l("Nothing was written off: %(reason)s"),
        done=_l("%(n)s × “%(name)s” written off; %(stock)s in stock."),
    )


@bp.route("/shops/<int:shop_id>/settings", methods=["GET", "POST"])
@role_required(*MANAGERS)
def shop_settings(shop_id: int):
    """Set the shop's exchange window: days of the month, weekdays and opening hours."""
    shop = managed_shop_or_404(shop_id)
    form = WindowForm()
    form.weekdays.choices = [
        SelectChoice(str(n), name) for n, name in enumerate(catalogue._weekday_names(), 1)
    ]
    if request.method == "GET":
        form.days.data = (shop.exchange_days or "").replace(",", ", ")
        form.weekdays.data = list(shop.exchange_weekdays or "")
        form.opens_at.data = shop.opens_at
        form.closes_at.data = shop.closes_at
    elif form.validate_on_submit():
        try:
            catalogue.set_exchange_window(
                shop,
                current_user,
                days=form.days.data,
                weekdays=form.weekdays.data,
                opens_at=form.opens_at.data,
                closes_at=form.closes_at.data,
            )
        except DomainError as error:
            db.session.rollback()
            flash(_("Nothing was saved: %(reason)s", reason=error.message), "error")
        else:
            db.session.commit()
            flash(
                _(
                    "Saved: the shop exchanges points %(window)s.",
                    window=catalogue.describe_window(shop),
                ),
                "success",
            )
            return redirect(url_for(".shop_settings", shop_id=shop.id))
    else:
        _flash_form_errors(form)
    return render_template(
        "clerk/settings.html", shop=shop, form=form, window=catalogue.describe_window(shop)
    )


@bp.get("/goods/<goods_token>.jpg")
def goods_photo(goods_token: str):
    """Serve a goods photo (public: goods carry no personal data)."""
    token = goods_token
    if not token.replace("-", "").replace("_", "").isalnum() or len(token) > 32:
        abort(404)
    if db.session.scalar(db.select(Item.id).where(Item.photo_token == token)) is None:
        abort(404)
    try:  # small (at most 800 px); read whole so no file handle outlives the request
        data = (catalogue.item_photo_folder() / f"{token}.jpg").read_bytes()
    except FileNotFoundError:
        abort(404)
    response = Response(data, mimetype="image/jpeg")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.public = True
    response.cache_control.max_age = 86400  # a token's file never changes
    return response
