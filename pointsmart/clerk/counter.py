"""The counter: identify a household by card or name, build a cart, redeem, print, void.

The household a cart is for is named in the URL, but the clerk reaches it only by scanning or
typing a card, or by a lookup confirmed in person; the card and the way the household was
identified are kept in the session for the redemption's record. Every write is a POST with a
CSRF token and an idempotency key; the services re-check scope, stock and points.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import joinedload
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from ..auth import role_required
from ..cadre.record import coerce_id
from ..extensions import db
from ..models import (
    Card,
    Household,
    Identification,
    Member,
    Role,
    Shop,
    Village,
    VillagerGroup,
)
from ..services import cards, catalogue, ledger, redemptions
from ..services.errors import DomainError, IdempotencyConflict
from ..timeutil import local_today
from . import bp, counter_shop_or_404, mask_phone, redemption_or_404

LOOKUP_LIMIT = 20


class CardForm(FlaskForm):
    code = StringField(
        _l("Card code"),
        validators=[InputRequired(_l("Scan the card or type the code printed under the QR code."))],
        render_kw={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"},
    )


class CheckoutForm(FlaskForm):
    #: A fresh uuid per review page: a double tap or a resent page redeems once.
    key = HiddenField(validators=[InputRequired(), Length(max=120)])
    total = HiddenField()
    member = SelectField(_l("Who collects the goods"), coerce=coerce_id, validate_choice=False)


class VoidForm(FlaskForm):
    key = HiddenField(validators=[InputRequired(), Length(max=120)])
    reason = TextAreaField(
        _l("Reason"),
        validators=[InputRequired(_l("Please give a reason.")), Length(max=200)],
        render_kw={"rows": 2, "maxlength": 200},
    )


def _served_households(shop: Shop):
    """Return a SQL condition selecting the households a shop serves."""
    if shop.village_id is not None:
        return VillagerGroup.village_id == shop.village_id
    return VillagerGroup.village_id.in_(
        sa.select(Village.id).where(Village.town_id == shop.town_id)
    )


def household_or_404(shop: Shop, household_id: int) -> Household:
    """Return a household this shop serves; 404 for any other."""
    # With its group and village, which serving it and the checkout's audit entry read.
    household = db.session.get(
        Household,
        household_id,
        options=[joinedload(Household.group).joinedload(VillagerGroup.village)],
    )
    if household is None or not shop.serves(household):
        abort(404)
    return household


def _identified(shop: Shop, household: Household) -> tuple[Identification, Card | None]:
    """Return how the clerk identified the household at this counter (kept in the session)."""
    state = session.get("counter") or {}
    if state.get("shop") == shop.id and state.get("household") == household.id:
        card = db.session.get(Card, state["card"]) if state.get("card") else None
        try:
            return Identification(state.get("via")), card
        except ValueError:
            pass
    return Identification.LOOKUP, None


def _remember(shop: Shop, household: Household, via: Identification, card: Card | None) -> None:
    session["counter"] = {
        "shop": shop.id,
        "household": household.id,
        "via": via.value,
        "card": card.id if card else None,
    }


@bp.route("/shops/<int:shop_id>/counter", methods=["GET", "POST"])
@role_required(Role.CLERK)
def counter(shop_id: int):
    """Show the counter: scan or type a card, or look a household up."""
    shop = counter_shop_or_404(shop_id)
    form = CardForm()
    if form.validate_on_submit():
        try:
            card = cards.resolve(form.code.data)
            household = card.household
            redemptions.check_counter(current_user, shop, household)
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
            form.code.data = ""
        else:
            via = (
                Identification.QR
                if len(cards.normalise(form.code.data)) == cards.TOKEN_LENGTH
                else Identification.CODE
            )
            _remember(shop, household, via, card)
            return redirect(url_for(".cart", shop_id=shop.id, household_id=household.id))
    elif request.method == "POST":
        for error in form.code.errors:
            flash(str(error), "error")
    summary = redemptions.day_summary(shop, local_today())
    low = [i for i in shop.items if i.is_low]
    return render_template(
        "clerk/counter.html",
        shop=shop,
        form=form,
        summary=summary,
        low=low,
        is_open=catalogue.is_open(shop),
        window=catalogue.describe_window(shop),
    )


@bp.get("/shops/<int:shop_id>/lookup")
@role_required(Role.CLERK)
def lookup(shop_id: int):
    """Find a household the shop serves by name, house number or phone (a forgotten card)."""
    shop = counter_shop_or_404(shop_id)
    query = (request.args.get("q") or "").strip()[:40]
    rows = []
    if query:
        like = f"%{query}%"
        rows = db.session.scalars(
            sa.select(Household)
            .join(VillagerGroup, Household.group_id == VillagerGroup.id)
            .where(
                _served_households(shop),
                Household.is_active.is_(True),
                sa.or_(
                    Household.name.like(like),
                    Household.house_number == query,
                    Household.id.in_(
                        sa.select(Member.household_id).where(
                            sa.or_(Member.name.like(like), Member.phone.like(f"%{query}"))
                        )
                    ),
                ),
            )
            .order_by(VillagerGroup.name, Household.house_number)
            .limit(LOOKUP_LIMIT + 1)
        ).all()
    return render_template(
        "clerk/lookup.html",
        shop=shop,
        query=query,
        rows=rows[:LOOKUP_LIMIT],
        more=len(rows) > LOOKUP_LIMIT,
        mask_phone=mask_phone,
    )


@bp.route("/shops/<int:shop_id>/households/<int:household_id>", methods=["GET", "POST"])
@role_required(Role.CLERK)
def confirm_household(shop_id: int, household_id: int):
    """Show who a looked-up household is, so the clerk can check in person, then open its cart."""
    shop = counter_shop_or_404(shop_id)
    household = household_or_404(shop, household_id)
    from ..auth.forms import EmptyForm

    form = EmptyForm()
    if form.validate_on_submit():
        _remember(shop, household, Identification.LOOKUP, None)
        return redirect(url_for(".cart", shop_id=shop.id, household_id=household.id))
    return render_template(
        "clerk/confirm.html",
        shop=shop,
        household=household,
        form=form,
        balance=ledger.balance_of(household),
        mask_phone=mask_phone,
    )


def _posted_cart() -> dict[int, str]:
    """Return {item id: typed quantity} from the qty-<id> fields of the form."""
    cart = {}
    for name, value in request.form.items():
        if name.startswith("qty-") and name[4:].isdigit() and len(name) < 20:
            cart[int(name[4:])] = value
    return cart


def _cart_page(shop: Shop, household: Household, typed: dict[int, str], status: int = 200):
    items = [i for i in shop.items if i.is_active]
    via, card = _identified(shop, household)
    return (
        render_template(
            "clerk/cart.html",
            shop=shop,
            household=household,
            items=items,
            typed=typed,
            balance=ledger.balance_of(household),
            via=via,
            card=card,
            is_open=catalogue.is_open(shop),
            window=catalogue.describe_window(shop),
        ),
        status,
    )


@bp.route("/shops/<int:shop_id>/households/<int:household_id>/cart", methods=["GET", "POST"])
@role_required(Role.CLERK)
def cart(shop_id: int, household_id: int):
    """Build a cart (GET); check it and show it for confirmation (POST, nothing is saved)."""
    shop = counter_shop_or_404(shop_id)
    household = household_or_404(shop, household_id)
    if request.method == "GET":
        return _cart_page(shop, household, {})
    from ..auth.forms import EmptyForm

    if not EmptyForm().validate_on_submit():
        abort(400)
    typed = _posted_cart()
    if request.form.get("edit"):  # back from the review to change quantities
        return _cart_page(shop, household, typed)
    try:
        redemptions.check_counter(current_user, shop, household)
        catalogue.require_open(shop)
        priced = redemptions.price(shop, redemptions.parse_cart(typed.items()))
        redemptions.precheck(shop, household, priced)
    except DomainError as error:
        db.session.rollback()
        flash(str(error.message), "error")
        return _cart_page(shop, household, typed, status=422)
    form = CheckoutForm(key=uuid.uuid4().hex, total=str(priced.total))
    form.member.choices = [SelectChoice("", _("Not noted"))] + [
        SelectChoice(m.id, m.name) for m in household.members if m.is_active
    ]
    balance = ledger.balance_of(household)
    return render_template(
        "clerk/review.html",
        shop=shop,
        household=household,
        priced=priced,
        balance=balance,
        form=form,
    )


@bp.post("/shops/<int:shop_id>/households/<int:household_id>/checkout")
@role_required(Role.CLERK)
def checkout(shop_id: int, household_id: int):
    """Redeem the confirmed cart in one transaction and show the receipt."""
    shop = counter_shop_or_404(shop_id)
    household = household_or_404(shop, household_id)
    form = CheckoutForm()
    if not form.validate_on_submit():
        flash(_("The page had expired; please check the cart again."), "error")
        return redirect(url_for(".cart", shop_id=shop.id, household_id=household.id))
    typed = _posted_cart()
    via, card = _identified(shop, household)
    member = db.session.get(Member, form.member.data) if form.member.data else None
    try:
        cart = redemptions.parse_cart(typed.items())
        total = form.total.data
        redemption, created = redemptions.checkout(
            shop=shop,
            household=household,
            cart=cart,
            clerk=current_user,
            key=form.key.data,
            identified_by=via,
            card=card,
            member=member,
            expected_total=int(total) if total and total.isdigit() else None,
        )
    except DomainError as error:
        db.session.rollback()
        if isinstance(error, IdempotencyConflict):
            flash(_("This page was already used for another cart. Please confirm again."), "error")
        else:
            flash(_("Nothing was redeemed: %(reason)s", reason=error.message), "error")
        return _cart_page(shop, household, typed, status=409 if error.status == 409 else 422)
    # Read before the commit expires them: nothing is loaded again after it.
    redemption_id, points, left = redemption.id, redemption.total_points, redemption.balance_after
    name = household.name
    db.session.commit()
    session.pop("counter", None)
    if created:
        flash(
            _(
                "Redeemed %(points)s points for %(household)s. %(left)s points left.",
                points=points,
                household=name,
                left=left,
            ),
            "success",
        )
    else:
        flash(_("Already redeemed, nothing added: this is the same redemption."), "info")
    return redirect(url_for(".redemption", redemption_id=redemption_id))


@bp.get("/redemptions/<int:redemption_id>")
@role_required(Role.CLERK, Role.COMMITTEE)
def redemption(redemption_id: int):
    """Show a redemption with its lines and voids, and the form to void some or all of it."""
    redemption = redemption_or_404(redemption_id)
    form = VoidForm(key=uuid.uuid4().hex)
    return render_template(
        "clerk/redemption.html",
        redemption=redemption,
        form=form,
        can_void=redemptions.can_void(current_user, redemption),
        is_clerk=current_user.has_role(Role.CLERK),
    )


@bp.get("/redemptions/<int:redemption_id>/receipt")
@role_required(Role.CLERK, Role.COMMITTEE)
def receipt(redemption_id: int):
    """Show the receipt for a 58 mm thermal printer (or A4 with ?paper=a4)."""
    redemption = redemption_or_404(redemption_id)
    paper = "a4" if request.args.get("paper") == "a4" else "58mm"
    return render_template(
        "clerk/receipt.html", redemption=redemption, paper=paper, mask_phone=mask_phone
    )


@bp.post("/redemptions/<int:redemption_id>/void")
@role_required(Role.CLERK, Role.COMMITTEE)
def void(redemption_id: int):
    """Take back some or all units of a redemption, with a reason; points and goods go back."""
    redemption = redemption_or_404(redemption_id)
    form = VoidForm()
    back = redirect(url_for(".redemption", redemption_id=redemption.id))
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
        return back
    if request.form.get("all"):
        quantities = None
    else:
        quantities = {
            name[5:]: value
            for name, value in request.form.items()
            if name.startswith("void-") and len(name) < 25
        }
    try:
        record, created = redemptions.void(
            redemption,
            current_user,
            reason=form.reason.data,
            key=form.key.data,
            quantities=quantities,
        )
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was voided: %(reason)s", reason=error.message), "error")
        return back
    db.session.commit()
    if created:
        flash(
            _(
                "Voided: %(points)s points given back and the goods put back on the shelf.",
                points=record.points,
            ),
            "success",
        )
    else:
        flash(_("Already voided, nothing changed."), "info")
    return back
