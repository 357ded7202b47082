"""A villager's own points card on their phone: large, bright, and printable on its own."""

from __future__ import annotations

from flask import make_response, render_template

from ..auth import role_required
from ..models import Role
from ..services import card_sheets, cards
from . import bp, my_household


@bp.get("/card")
@role_required(Role.VILLAGER)
def card():
    """Show the household's card in force, big enough to scan from the phone's screen."""
    household = my_household()
    current = cards.current_card(household)
    response = make_response(
        render_template(
            "cards/mine.html",
            household=household,
            card=current,
            svg=card_sheets.inline_qr(current) if current else None,
        )
    )
    # The page holds the card's live token: no browser or proxy keeps a copy.
    response.headers["Cache-Control"] = "no-store"
    return response
