"""Card sheets: which cards a user may print, and the PDF: pages, codes and a true QR drawing."""

from __future__ import annotations

import math
import re
import zlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask import session
from flask_babel import gettext

from pointsmart.extensions import db
from pointsmart.models import Card, Role
from pointsmart.services import card_sheets, cards, places
from pointsmart.timeutil import local_today, utcnow


@pytest.fixture
def w(make):
    village = make.village(name="青山村")
    group, other_group = make.group(village, "一组"), make.group(village, "二组")
    far = make.village(village.town, "柳溪村")
    far_group = make.group(far, "远组")
    world = SimpleNamespace(
        village=village,
        group=group,
        other_group=other_group,
        far=far,
        # Created out of order: a sheet lists them by house number, 2 before 10.
        ten=places.create_household(group, "10", "张十"),
        two=places.create_household(group, "2", "张二"),
        other=places.create_household(other_group, "1", "李一"),
        far_household=places.create_household(far_group, "1", "王一"),
        cadre=make.staff(Role.CADRE, village),
        group_cadre=make.staff(Role.CADRE, group),
        admin=make.staff(Role.ADMIN, village.town),
        clerk=make.staff(Role.CLERK, make.shop(village)),
    )
    db.session.commit()
    return world


def names(found: list[Card]) -> list[str]:
    return [card.household.name for card in found]


def test_a_village_cadre_gets_the_village_by_group_and_house_number(w):
    assert names(card_sheets.sheet_cards(w.cadre)) == ["张二", "张十", "李一"]
    assert names(card_sheets.sheet_cards(w.cadre, group=w.group)) == ["张二", "张十"]
    assert names(card_sheets.sheet_cards(w.cadre, village=w.village)) == ["张二", "张十", "李一"]
    assert names(card_sheets.sheet_cards(w.cadre, household=w.other)) == ["李一"]


def test_groups_come_in_numeral_order(make):
    village = make.village()
    for name in ("十组", "三组", "二组", "第十二村民小组", "第二村民小组", "东组"):
        places.create_household(make.group(village, name), "1", f"{name}户")
    cadre = make.staff(Role.CADRE, village)
    db.session.commit()
    assert [card.household.group.name for card in card_sheets.sheet_cards(cadre)] == [
        "二组",
        "三组",
        "十组",
        "东组",
        "第二村民小组",
        "第十二村民小组",
    ]


def test_a_group_cadre_gets_only_their_group_whatever_they_ask(w):
    assert names(card_sheets.sheet_cards(w.group_cadre)) == ["张二", "张十"]
    assert card_sheets.sheet_cards(w.group_cadre, group=w.other_group) == []
    assert names(card_sheets.sheet_cards(w.group_cadre, village=w.village)) == ["张二", "张十"]
    assert card_sheets.sheet_cards(w.cadre, village=w.far) == []


def test_the_town_admin_gets_every_village_and_others_get_nothing(w):
    # Villages in name order: 柳溪村 before 青山村.
    assert names(card_sheets.sheet_cards(w.admin)) == ["王一", "张二", "张十", "李一"]
    assert card_sheets.sheet_cards(w.clerk) == []


def test_only_cards_in_force_of_active_households(w):
    old = cards.current_card(w.two)
    new = cards.reissue(w.two, w.cadre, "丢失")
    w.ten.is_active = False
    db.session.commit()
    found = card_sheets.sheet_cards(w.cadre, group=w.group)
    assert [card.id for card in found] == [new.id]
    assert old.id not in [card.id for card in card_sheets.sheet_cards(w.admin)]


def test_since_keeps_cards_issued_on_or_after_that_day(w):
    long_ago = utcnow() - timedelta(days=40)
    db.session.execute(sa.update(Card).values(issued_at=long_ago))
    newcomer = places.create_household(w.other_group, "7", "新户")
    db.session.commit()
    assert names(card_sheets.sheet_cards(w.cadre, since=local_today())) == ["新户"]
    earlier = (long_ago - timedelta(days=1)).date()
    assert len(card_sheets.sheet_cards(w.cadre, since=earlier)) == 4
    assert card_sheets.sheet_cards(w.group_cadre, since=local_today()) == []
    assert newcomer.is_active


def test_printable_groups_and_villages_count_cards_in_scope(w):
    groups = card_sheets.printable_groups(w.cadre)
    assert [(g.name, n) for g, n in groups] == [("一组", 2), ("二组", 1)]
    assert [(v.name, n) for v, n in card_sheets.printable_villages(w.cadre, groups)] == [
        ("青山村", 3)
    ]
    mine = card_sheets.printable_groups(w.group_cadre)
    assert [(g.name, n) for g, n in mine] == [("一组", 2)]
    assert card_sheets.printable_villages(w.group_cadre, mine) == []  # not the whole village


# --- the PDF ----------------------------------------------------------------------------------


def page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?!s)", pdf))


def page_streams(pdf: bytes) -> list[bytes]:
    """Return the PDF's streams, decompressed (they are read by their /Length)."""
    out = []
    for match in re.finditer(rb"/Length (\d+)\s*>>\s*stream\r?\n", pdf):
        data = pdf[match.end() : match.end() + int(match.group(1))]
        try:
            out.append(zlib.decompress(data))
        except zlib.error:  # not compressed
            out.append(data)
    return out


def _unescape(literal: bytes) -> bytes:
    def one(match: re.Match) -> bytes:
        escaped = match.group(1)
        return bytes([int(escaped, 8)]) if escaped[:1].isdigit() else escaped

    return re.sub(rb"\\([0-7]{1,3}|.)", one, literal, flags=re.S)


def drawn_strings(pdf: bytes) -> list[bytes]:
    """Return the byte strings of every text-showing operator (Tj) of every page."""
    found = []
    for stream in page_streams(pdf):
        for literal in re.findall(rb"\(((?:[^\\)]|\\.)*)\) Tj", stream, re.S):
            found.append(_unescape(literal))
    return found


@pytest.mark.parametrize("count", [1, 10, 11, 23])
def test_the_pdf_has_ten_cards_a_page(w, make, count):
    group = make.group(w.village)
    for n in range(count):
        places.create_household(group, str(n + 1), f"户{n + 1}")
    db.session.commit()
    found = card_sheets.sheet_cards(w.cadre, group=group)
    assert len(found) == count
    pdf = card_sheets.render_pdf(found)
    assert pdf.startswith(b"%PDF")
    assert page_count(pdf) == math.ceil(count / 10)
    strings = drawn_strings(pdf)
    for card in found:
        assert card.display_code.encode() in strings
        assert card.household.name.encode("utf-16-be") in strings  # the CID font's encoding


def test_nothing_to_print_is_refused():
    with pytest.raises(ValueError):
        card_sheets.render_pdf([])


def test_dark_runs_rebuild_the_matrix_exactly(w):
    matrix = cards.qr_matrix(cards.current_card(w.two))
    rebuilt = [[False] * len(row) for row in matrix]
    runs = card_sheets.dark_runs(matrix)
    for row, start, length in runs:
        assert length > 0
        for column in range(start, start + length):
            assert not rebuilt[row][column], "runs overlap"
            rebuilt[row][column] = True
    assert rebuilt == matrix
    # Merging is what keeps the sheet small: fewer rectangles than dark modules.
    assert len(runs) < sum(map(sum, matrix))


def test_the_pdf_draws_the_cards_own_qr_code(w):
    card = cards.current_card(w.two)
    content = b"".join(page_streams(card_sheets.render_pdf([card])))
    rects = re.findall(rb"(\d+) (\d+) (\d+) 1 re", content)
    matrix = cards.qr_matrix(card)
    drawn = [[False] * len(row) for row in matrix]
    for start, row, length in ((int(a), int(b), int(c)) for a, b, c in rects):
        for column in range(start, start + length):
            drawn[row][column] = True
    assert drawn == matrix


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_the_pdf_speaks_the_users_language(app, w, locale):
    card = cards.current_card(w.two)
    with app.test_request_context():
        session["locale"] = locale
        title = gettext("Love supermarket points card")
        hint = gettext("Type this code if the QR cannot be scanned")
        strings = drawn_strings(card_sheets.render_pdf([card]))
    assert title.encode("utf-16-be") in strings
    # The hint may wrap over lines: compare without the spaces it was wrapped at.
    texts = "".join(s.decode("utf-16-be", "replace") for s in strings if len(s) % 2 == 0)
    assert hint.replace(" ", "") in texts.replace(" ", "")
