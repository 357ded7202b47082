"""Points cards for cadres, committee members and town administrators: print card sheets for
a group, a village or newly added households (a PDF or a print-ready page), and reissue a
household's lost card, which stops the old one at once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

import sqlalchemy as sa
from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from wtforms import HiddenField, StringField
from wtforms.validators import InputRequired, Length

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import Card, Household, Role, Village, VillagerGroup
from ..services import card_sheets, cards
from ..services.errors import DomainError
from ..services.ledger import MAX_REASON_LENGTH
from ..timeutil import local_today
from . import bp

log = logging.getLogger(__name__)


class ReissueForm(FlaskForm):
    reason = StringField(
        _l("Why is the card replaced?"),
        validators=[
            InputRequired(_l("Please give a reason.")),
            Length(max=MAX_REASON_LENGTH),
        ],
        render_kw={
            "maxlength": MAX_REASON_LENGTH,
            "placeholder": _l("For example: lost at the market"),
        },
    )
    #: The card this form replaces: a double tap or a resent form replaces it once.
    card_id = HiddenField()


class BadSelection(Exception):
    """The query asks for something that cannot be printed; the message says why."""


@dataclass
class Selection:
    """What a card sheet holds: a group, a village, a household, and/or cards since a day."""

    group: VillagerGroup | None = None
    village: Village | None = None
    household: Household | None = None
    since: date | None = None

    @property
    def empty(self) -> bool:
        return not (self.group or self.village or self.household or self.since)

    def args(self) -> dict:
        """Return the query arguments that select the same cards again."""
        args = {}
        if self.group:
            args["group_id"] = self.group.id
        if self.village:
            args["village_id"] = self.village.id
        if self.household:
            args["household_id"] = self.household.id
        if self.since:
            args["since"] = self.since.isoformat()
        return args

    def title(self) -> str:
        """Return a heading that says which cards these are."""
        parts = []
        if self.household:
            parts.append(_("Card of %(household)s", household=self.household.name))
        elif self.group:
            place = f"{self.group.village.name} {self.group.name}"
            parts.append(_("Cards of %(place)s", place=place))
        elif self.village:
            parts.append(_("Cards of %(place)s", place=self.village.name))
        if self.since and parts:
            parts.append(_("issued on or after %(day)s", day=self.since.isoformat()))
        elif self.since:
            parts.append(_("Cards issued on or after %(day)s", day=self.since.isoformat()))
        return " · ".join(parts)

    def filenames(self) -> tuple[str, str]:
        """Return the PDF's file name in the user's language and a plain ASCII fallback."""
        if self.household:
            label = f"{self.household.name}{self.household.house_number}"
            plain = f"household-{self.household.id}"
        elif self.group:
            label, plain = f"{self.group.village.name}{self.group.name}", f"group-{self.group.id}"
        elif self.village:
            label, plain = self.village.name, f"village-{self.village.id}"
        else:
            label, plain = "", "new"
        if self.since:
            label = "-".join(filter(None, [label, self.since.isoformat()]))
            plain = f"{plain}-{self.since.isoformat()}"
        # No path separators, quotes or other characters that file systems refuse.
        label = re.sub(r'[\\/:*?"<>|\s\x00-\x1f]+', "", label)
        title = _("Points cards")  # outside the f-string, where the extractor finds it
        return f"{title}-{label}.pdf", f"points-cards-{plain}.pdf"


def _id_arg(name: str) -> int | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 12:
        abort(404)
    return int(value)


def _in_scope_or_404(model, object_id: int | None, covers):
    if object_id is None:
        return None
    found = db.session.get(model, object_id)
    if found is None or not covers(found):
        abort(404)  # outside the user's places: not even its existence is told
    return found


def _since_arg() -> date | None:
    value = request.args.get("since", "").strip()
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadSelection(
            _("“%(value)s” is not a date: choose a day like 2026-11-30.", value=value[:20])
        ) from None
    if day > local_today():
        raise BadSelection(_("%(day)s is in the future: choose today or an earlier day.", day=day))
    return day


def selection_from_request() -> Selection:
    """Return what the query asks to print, 404 for anything outside the user's places.

    Raises BadSelection for a date that is not one or lies in the future.
    """
    user, roles = current_user, cards.CARD_ROLES
    return Selection(
        group=_in_scope_or_404(
            VillagerGroup, _id_arg("group_id"), lambda g: access.covers_group(user, g, roles)
        ),
        village=_in_scope_or_404(
            Village, _id_arg("village_id"), lambda v: access.covers_village(user, v, roles)
        ),
        household=_in_scope_or_404(
            Household, _id_arg("household_id"), lambda h: cards.can_manage(user, h)
        ),
        since=_since_arg(),
    )


def private(body, status: int = 200):
    """Return a response that no browser or proxy keeps: card pages hold live card secrets."""
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


# Endpoint cadre.cards; the function has another name so as not to hide the cards service.
@bp.get("/cards", endpoint="cards")
@role_required(*cards.CARD_ROLES)
def cards_page():
    """Choose which cards to print: a group, a whole village, or cards issued since a day."""
    groups = card_sheets.printable_groups(current_user)
    return render_template(
        "cards/choose.html",
        groups=groups,
        villages=card_sheets.printable_villages(current_user, groups),
        today=local_today(),
    )


@bp.get("/cards/sheet")
@role_required(*cards.CARD_ROLES)
def card_sheet():
    """Show the chosen cards as a print-ready A4 page, or send them as a PDF."""
    try:
        selection = selection_from_request()
    except BadSelection as error:
        flash(str(error), "error")
        return redirect(url_for(".cards"))
    if selection.empty:
        return redirect(url_for(".cards"))
    found = card_sheets.sheet_cards(
        current_user,
        group=selection.group,
        village=selection.village,
        household=selection.household,
        since=selection.since,
    )
    if found and request.args.get("format") == "pdf":
        # A sheet carries live card secrets: say who took which.
        log.info(
            "user %s printed %s cards as PDF: %s", current_user.id, len(found), selection.args()
        )
        response = private(card_sheets.render_pdf(found))
        name, plain = selection.filenames()
        response.headers["Content-Type"] = "application/pdf"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"
        )
        return response
    if found:
        log.info(
            "user %s opened a sheet of %s cards: %s", current_user.id, len(found), selection.args()
        )
    return private(
        render_template(
            "cards/sheet.html",
            cards=found,
            selection=selection,
            title=selection.title(),
            qr=card_sheets.inline_qr,
            per_page=card_sheets.PER_PAGE,
        )
    )


@bp.route("/households/<int:household_id>/card", methods=["GET", "POST"])
@role_required(*cards.CARD_ROLES)
def household_card(household_id: int):
    """Show a household's card and its replaced cards; reissue a lost or damaged card."""
    household = db.session.get(Household, household_id)
    if household is None or not cards.can_manage(current_user, household):
        abort(404)
    current = cards.current_card(household)
    form = ReissueForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            flash(_("Nothing was changed: please check the form."), "error")
        elif form.card_id.data != (str(current.id) if current else ""):
            flash(_("This card was replaced a moment ago; this is the card in force."), "info")
            return redirect(url_for(".household_card", household_id=household.id))
        else:
            try:
                new = cards.reissue(household, current_user, form.reason.data)
                db.session.commit()
            except DomainError as error:
                db.session.rollback()
                flash(_("Nothing was changed: %(reason)s", reason=error.message), "error")
            except IntegrityError:  # a colleague reissued the same card at the same moment
                db.session.rollback()
                flash(_("This card was replaced a moment ago; this is the card in force."), "info")
                return redirect(url_for(".household_card", household_id=household.id))
            else:
                flash(
                    _(
                        "A new card %(code)s was issued for %(household)s; the old card no "
                        "longer works. Print the new card and hand it over.",
                        code=new.display_code,
                        household=household.name,
                    ),
                    "success",
                )
                return redirect(url_for(".household_card", household_id=household.id))
    form.card_id.data = str(current.id) if current else ""
    replaced = db.session.scalars(
        sa.select(Card)
        .where(Card.household_id == household.id, Card.revoked_at.is_not(None))
        .order_by(Card.revoked_at.desc(), Card.id.desc())
        .options(selectinload(Card.revoked_by), selectinload(Card.issued_by))
    ).all()
    if current_user.has_role(Role.CADRE) or current_user.has_role(Role.COMMITTEE):
        back_url = url_for(".household", household_id=household.id)
    else:
        back_url = url_for(".cards")
    return private(
        render_template(
            "cards/household.html",
            household=household,
            card=current,
            replaced=replaced,
            form=form,
            qr=card_sheets.inline_qr,
            back_url=back_url,
        )
    )
