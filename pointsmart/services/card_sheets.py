"""Card sheets: which cards a cadre may print, and an A4 PDF of them, ten cards a page.

Cards are ID-1 size (85.6 × 54 mm), two columns by five rows, with dashed cut lines between
them and crop marks in the margin. The QR code is drawn as vector rectangles, one per run of
dark modules in a row, so a sheet of a thousand cards stays small and renders in seconds.
Chinese text uses reportlab's built-in CID font STSong-Light: no font file to ship.
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time

import sqlalchemy as sa
from flask_babel import gettext as _
from markupsafe import Markup
from reportlab import rl_config
from reportlab.lib.colors import Color
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas
from sqlalchemy.orm import contains_eager, selectinload

from .. import access
from ..extensions import db
from ..models import Card, Household, User, Village, VillagerGroup
from ..timeutil import LOCAL_TZ
from . import cards

#: Card and sheet geometry, in PDF points.
CARD_W, CARD_H = 85.6 * mm, 54 * mm
COLUMNS, ROWS = 2, 5
PER_PAGE = COLUMNS * ROWS
PAGE_W, PAGE_H = A4
GRID_X = (PAGE_W - COLUMNS * CARD_W) / 2
GRID_Y = (PAGE_H - ROWS * CARD_H) / 2
PAD = 3 * mm
#: The QR code (quiet zone included) sits in the card's lower left corner.
QR_SIZE = 36 * mm
QR_X, QR_Y = 2 * mm, 2 * mm
TEXT_X = QR_X + QR_SIZE + 2 * mm
TEXT_W = CARD_W - TEXT_X - PAD

CJK_FONT = "STSong-Light"
CODE_FONT = "Courier-Bold"
ACCENT = Color(0.70, 0.15, 0.12)
MUTED = Color(0.25, 0.25, 0.25)
CUT = Color(0.6, 0.6, 0.6)


_CN_DIGITS = dict(
    zip("零〇一二两三四五六七八九", (0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True)
)
_NUMBER_PARTS = re.compile(
    r"\d+|[零〇一二两三四五六七八九十百]+|[^\d零〇一二两三四五六七八九十百]+"
)


def _chinese_number(text: str) -> int:
    """Return the value of a Chinese numeral such as 三, 十二 or 一百零五."""
    total = digit = 0
    for char in text:
        if char == "十":
            total, digit = total + (digit or 1) * 10, 0
        elif char == "百":
            total, digit = total + (digit or 1) * 100, 0
        else:
            digit = _CN_DIGITS[char]
    return total + digit


def _natural(text: str) -> tuple:
    """Return a sort key that puts 2 before 10 and 二组 before 三组 before 十组."""
    key = []
    for part in _NUMBER_PARTS.findall(text):
        if part.isdigit():
            key.append((0, int(part), ""))
        elif part[0] in _CN_DIGITS or part[0] in "十百":
            key.append((0, _chinese_number(part), ""))
        else:
            key.append((1, 0, part))
    return tuple(key)


def sheet_cards(
    user: User,
    *,
    group: VillagerGroup | None = None,
    village: Village | None = None,
    since: date | None = None,
    household: Household | None = None,
) -> list[Card]:
    """Return the cards in force of active households in the user's card scope, filtered.

    ``since`` keeps cards issued on or after that day (village time), e.g. after a roster
    import. Cards come ordered by village, group and house number, as they are handed out.
    """
    stmt = (
        sa.select(Card)
        .join(Household, Card.household_id == Household.id)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .where(
            Card.revoked_at.is_(None),
            Household.is_active.is_(True),
            access.household_filter(user, cards.CARD_ROLES),
        )
        .options(
            contains_eager(Card.household)
            .contains_eager(Household.group)
            .selectinload(VillagerGroup.village)
        )
    )
    if group is not None:
        stmt = stmt.where(Household.group_id == group.id)
    if village is not None:
        stmt = stmt.where(VillagerGroup.village_id == village.id)
    if household is not None:
        stmt = stmt.where(Household.id == household.id)
    if since is not None:
        start = datetime.combine(since, time.min, tzinfo=LOCAL_TZ).astimezone(UTC)
        stmt = stmt.where(Card.issued_at >= start)
    found = db.session.scalars(stmt).unique().all()
    return sorted(found, key=_order)


def _order(card: Card) -> tuple:
    group = card.household.group
    return (
        group.village.name,
        group.village_id,
        _natural(group.name),
        group.id,
        _natural(card.household.house_number),
        card.household_id,
    )


def printable_groups(user: User) -> list[tuple[VillagerGroup, int]]:
    """Return the groups with cards the user may print, each with its number of cards."""
    rows = db.session.execute(
        sa.select(VillagerGroup, sa.func.count(Card.id))
        .join(Household, Household.group_id == VillagerGroup.id)
        .join(Card, sa.and_(Card.household_id == Household.id, Card.revoked_at.is_(None)))
        .where(Household.is_active.is_(True), access.household_filter(user, cards.CARD_ROLES))
        .group_by(VillagerGroup.id)
        .options(selectinload(VillagerGroup.village))
    ).all()
    return sorted(
        ((group, count) for group, count in rows),
        key=lambda row: (row[0].village.name, row[0].village_id, _natural(row[0].name)),
    )


def printable_villages(
    user: User, groups: Iterable[tuple[VillagerGroup, int]]
) -> list[tuple[Village, int]]:
    """Return the villages the user covers whole among ``groups``, with their numbers of cards."""
    totals: dict[Village, int] = {}
    for group, count in groups:
        totals[group.village] = totals.get(group.village, 0) + count
    return [
        (village, count)
        for village, count in totals.items()
        if access.covers_village(user, village, cards.CARD_ROLES)
    ]


def inline_qr(card: Card) -> Markup:
    """Return the card's QR code as an SVG element to put inside an HTML page."""
    svg = cards.qr_svg(card)
    svg = svg[svg.index("<svg") :]  # drop the XML declaration
    # Ten cards share a page: their paths must not share an id.
    svg = svg.replace(' id="qr-path"', "")
    # Our own markup from a base32 token: nothing a user typed.
    return Markup(svg.replace("<svg ", '<svg role="img" aria-hidden="true" ', 1))


def dark_runs(matrix: Sequence[Sequence[bool]]) -> list[tuple[int, int, int]]:
    """Return (row, first column, length) of each horizontal run of dark modules."""
    runs = []
    for row, modules in enumerate(matrix):
        start = None
        for column, dark in enumerate(modules):
            if dark and start is None:
                start = column
            elif not dark and start is not None:
                runs.append((row, start, column - start))
                start = None
        if start is not None:
            runs.append((row, start, len(modules) - start))
    return runs


@functools.cache
def _set_up_reportlab() -> None:
    pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
    # Binary page streams: ASCII85 only serves 7-bit channels, and costs a third more
    # bytes and most of the time spent writing a large sheet.
    rl_config.useA85 = 0


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Split text into lines that fit ``width``: at spaces for words, anywhere for Chinese."""
    lines: list[str] = []
    line = ""
    for char in text:
        if pdfmetrics.stringWidth(line + char, font, size) <= width or not line:
            line += char
            continue
        cut = line.rfind(" ")
        if cut > 0 and char != " ":
            lines.append(line[:cut])
            line = line[cut + 1 :] + char
        else:
            lines.append(line.rstrip())
            line = char.lstrip()
    if line:
        lines.append(line)
    return lines


def _fit(text: str, font: str, size: float, smallest: float, width: float) -> tuple[str, float]:
    """Return text and a font size that fit ``width``: shrink, then cut with an ellipsis."""
    wide = pdfmetrics.stringWidth(text, font, size)
    if wide <= width:
        return text, size
    size = max(smallest, size * width / wide)
    while len(text) > 1 and pdfmetrics.stringWidth(text, font, size) > width:
        text = text[:-2] + "…"
    return text, size


class _Sheet:
    """Draw cards onto a reportlab canvas; the texts that every card shares are laid out once."""

    def __init__(self, canvas: Canvas) -> None:
        self.c = canvas
        self.title = _("Love supermarket points card")
        self.title_size = _fit(self.title, CJK_FONT, 10, 7, CARD_W - 2 * PAD)[1]
        self.hint = _wrap(_("Type this code if the QR cannot be scanned"), CJK_FONT, 6.5, TEXT_W)[
            :3
        ]

    def cut_lines(self, count: int) -> None:
        """Draw dashed cut lines around the used rows and crop marks in the margins."""
        c = self.c
        rows = math.ceil(count / COLUMNS)
        top = GRID_Y + ROWS * CARD_H
        bottom = top - rows * CARD_H
        right = GRID_X + COLUMNS * CARD_W
        xs = [GRID_X + k * CARD_W for k in range(COLUMNS + 1)]
        ys = [top - k * CARD_H for k in range(rows + 1)]
        c.saveState()
        c.setStrokeColor(CUT)
        c.setLineWidth(0.3)
        c.setDash(2, 2)
        for x in xs:
            c.line(x, bottom, x, top)
        for y in ys:
            c.line(GRID_X, y, right, y)
        c.setDash()
        c.setStrokeColor(Color(0, 0, 0))
        c.setLineWidth(0.5)
        gap, mark = 2 * mm, 6 * mm
        for x in xs:
            c.line(x, top + gap, x, top + gap + mark)
            c.line(x, bottom - gap, x, bottom - gap - mark)
        for y in ys:
            c.line(GRID_X - gap, y, GRID_X - gap - mark, y)
            c.line(right + gap, y, right + gap + mark, y)
        c.restoreState()

    def card(self, card: Card, x: float, y: float) -> None:
        """Draw one card with its lower left corner at (x, y)."""
        c = self.c
        household = card.household
        group = household.group
        c.setFillColor(ACCENT)
        c.setFont(CJK_FONT, self.title_size)
        c.drawString(x + PAD, y + CARD_H - PAD - 3.4 * mm, self.title)
        c.setFillColor(MUTED)
        place, size = _fit(f"{group.village.name} {group.name}", CJK_FONT, 8, 6, CARD_W - 2 * PAD)
        c.setFont(CJK_FONT, size)
        c.drawString(x + PAD, y + CARD_H - PAD - 7.6 * mm, place)

        c.setFillColor(Color(0, 0, 0))
        self.qr(cards.qr_matrix(card), x + QR_X, y + QR_Y, QR_SIZE)

        left = x + TEXT_X
        name, size = _fit(household.name, CJK_FONT, 16, 8, TEXT_W)
        c.setFont(CJK_FONT, size)
        c.drawString(left, y + 31 * mm, name)
        number, size = _fit(_("No. %(n)s", n=household.house_number), CJK_FONT, 9, 6, TEXT_W)
        c.setFont(CJK_FONT, size)
        c.drawString(left, y + 24.5 * mm, number)
        code, size = _fit(card.display_code, CODE_FONT, 17, 10, TEXT_W)
        c.setFont(CODE_FONT, size)
        c.drawString(left, y + 15 * mm, code)
        c.setFillColor(MUTED)
        c.setFont(CJK_FONT, 6.5)
        for n, line in enumerate(self.hint):
            c.drawString(left, y + 10.5 * mm - n * 2.8 * mm, line)

    def qr(self, matrix: Sequence[Sequence[bool]], x: float, y: float, size: float) -> None:
        """Fill the dark modules as one path of rectangles, one per horizontal run."""
        module = size / len(matrix)
        # In module units with y downwards, every rectangle is four small integers: written
        # straight into the page, they cost a fraction of reportlab's float formatting.
        rects = " ".join(f"{start} {row} {length} 1 re" for row, start, length in dark_runs(matrix))
        self.c.addLiteral(
            f"q 1 0 0 1 {x:.2f} {y + size:.2f} cm {module:.4f} 0 0 {-module:.4f} 0 0 cm"
        )
        self.c.addLiteral(f"{rects} f Q")


def render_pdf(cards_to_print: Sequence[Card]) -> bytes:
    """Return an A4 PDF of the cards, ten a page with cut lines, in the current language.

    Raises ValueError when there is no card to print.
    """
    if not cards_to_print:
        raise ValueError("no cards to print")
    _set_up_reportlab()
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, pageCompression=1)
    canvas.setTitle(_("Love supermarket points card"))
    canvas.setCreator("PointSmart")
    sheet = _Sheet(canvas)
    for first in range(0, len(cards_to_print), PER_PAGE):
        page = cards_to_print[first : first + PER_PAGE]
        sheet.cut_lines(len(page))
        for index, card in enumerate(page):
            column, row = index % COLUMNS, index // COLUMNS
            sheet.card(card, GRID_X + column * CARD_W, GRID_Y + (ROWS - 1 - row) * CARD_H)
        canvas.showPage()
    canvas.save()
    return out.getvalue()
