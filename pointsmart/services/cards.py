"""Household points cards: issue, reissue (revoking the old card at once) and resolve at the counter.

A card carries two secrets, never a database id: a 26-character token in the QR code (130
random bits, uppercase base32 so that handheld scanners type it on any keyboard layout) and
an 8-character code printed beneath it for typing. Both die with the card.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import secrets
import unicodedata

import qrcode
import qrcode.image.svg
import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from .. import access
from ..extensions import db
from ..models import Card, Household, Role, User
from ..timeutil import utcnow
from . import audit
from .errors import CardNotFound, CardRevoked, Forbidden, InvalidInput
from .ledger import _check_reason

log = logging.getLogger(__name__)

#: No 0/O, 1/I/L or U: nothing to misread on a printed card.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
TOKEN_LENGTH = 26
#: Who may print and reissue cards: the cadres and committee of the household's village,
#: and the town's administrators (after a roster import).
CARD_ROLES = (Role.CADRE, Role.COMMITTEE, Role.ADMIN)

#: A fixed mask: the standard lets the encoder pick any; trying all eight for the best score
#: costs ~3 ms a card, most of the time of printing a village's sheet.
MASK_PATTERN = 2

_TOKEN = re.compile(rf"[A-Z2-7]{{{TOKEN_LENGTH}}}")
_CODE = re.compile(rf"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")


def new_token() -> str:
    """Return a fresh QR token: 16 random bytes in uppercase base32."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=")


def new_code_unchecked() -> str:
    """Return a random short code, not yet checked against the codes in use."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _new_code() -> str:
    while True:
        code = new_code_unchecked()
        if db.session.scalar(sa.select(Card.id).where(Card.code == code)) is None:
            return code


def insert_unique(rows: list[dict]) -> None:
    """Insert many new cards at once, first redrawing any code already in use or drawn twice."""
    for _ in range(10):
        codes = [row["code"] for row in rows]
        taken: set[str] = set()
        for start in range(0, len(codes), 5000):  # stay under SQLite's bound-parameter limit
            chunk = codes[start : start + 5000]
            taken.update(db.session.scalars(sa.select(Card.code).where(Card.code.in_(chunk))))
        seen: set[str] = set()
        clashes = 0
        for row in rows:
            if row["code"] in taken or row["code"] in seen:
                row["code"] = new_code_unchecked()
                clashes += 1
            seen.add(row["code"])
        if not clashes:
            break
    db.session.execute(sa.insert(Card), rows)


def current_card(household: Household) -> Card | None:
    """Return the household's card in force, if any."""
    return db.session.scalar(
        sa.select(Card).where(Card.household_id == household.id, Card.revoked_at.is_(None))
    )


def issue(household: Household, actor: User | None = None) -> Card:
    """Give a household without a card in force a new one; return it."""
    card = Card(household=household, token=new_token(), code=_new_code(), issued_by=actor)
    db.session.add(card)
    db.session.flush()
    return card


def can_manage(user: User, household: Household) -> bool:
    """Return whether the user may print or reissue this household's card."""
    return access.covers_household(user, household, CARD_ROLES)


def reissue(household: Household, actor: User, reason: str) -> Card:
    """Revoke the household's card (lost, damaged) and issue a new one; return the new card.

    The old token and code stop working as soon as this commits.
    Raises Forbidden, InvalidInput.
    """
    reason = _check_reason(reason)
    if not can_manage(actor, household):
        raise Forbidden()
    if not household.is_active:
        raise InvalidInput(_l("This household is no longer active."))
    # Revoke by guarded UPDATE: two reissues at once revoke one card, and the unique index on
    # the card in force lets only one new card stand.
    db.session.execute(
        sa.update(Card)
        .where(Card.household_id == household.id, Card.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_by_id=actor.id, revoke_reason=reason)
        .execution_options(synchronize_session=False)
    )
    db.session.expire_all()
    card = issue(household, actor)
    audit.record("card.reissue", actor, household, summary=f"{household.name}: {reason}")
    log.info("user %s reissued the card of household %s: %s", actor.id, household.id, reason)
    return card


def normalise(text: str) -> str:
    """Return what a scanner or a person typed, without spaces, dashes and full-width forms."""
    text = unicodedata.normalize("NFKC", text or "").upper()
    return re.sub(r"[\s\-_.·。]", "", text)[:80]


def resolve(text: str) -> Card:
    """Return the card in force for a scanned QR token or a typed short code.

    Raises InvalidInput (not a card code at all), CardNotFound, CardRevoked.
    """
    value = normalise(text)
    if not value:
        raise InvalidInput(_l("Scan the card or type the code printed under the QR code."))
    if _TOKEN.fullmatch(value):
        card = db.session.scalar(sa.select(Card).where(Card.token == value))
    elif _CODE.fullmatch(value):
        card = db.session.scalar(sa.select(Card).where(Card.code == value))
    else:
        raise InvalidInput(
            _l(
                "This is not a points card code: a card code has 8 letters and digits, "
                "like 7KQ2-M9XD."
            )
        )
    if card is None:
        raise CardNotFound()
    if card.revoked_at is not None:
        raise CardRevoked()
    return card


def qr_svg(card: Card, box_size: int = 10) -> str:
    """Return the card's QR code as an SVG document (crisp at any print size)."""
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=box_size,
        border=2,
        mask_pattern=MASK_PATTERN,
    )
    qr.add_data(card.token, optimize=0)
    qr.make(fit=True)
    image = qr.make_image(image_factory=qrcode.image.svg.SvgPathFillImage)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue().decode()


def qr_matrix(card: Card) -> list[list[bool]]:
    """Return the card's QR modules (with a two-module quiet zone) for drawing into a PDF."""
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M, border=2, mask_pattern=MASK_PATTERN
    )
    qr.add_data(card.token, optimize=0)
    qr.make(fit=True)
    return qr.get_matrix()
