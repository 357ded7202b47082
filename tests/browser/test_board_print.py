"""Notice boards in a real browser: each prints on one A4 page; the village page fits a phone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from pointsmart.extensions import db
from pointsmart.models import Role, TransferKind
from pointsmart.services import boards, ledger, rankings, ratings

pytestmark = pytest.mark.browser

GROUPS = ("一组", "二组", "三组", "四组")
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
)
NOTE = "经核实，" + "八组陈家的植树奖励记在了邻户名下，已冲正并补记；" * 9


def pdf_pages(pdf: bytes) -> int:
    """Return the number of pages of a PDF, from its page objects."""
    assert pdf.startswith(b"%PDF")
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def village_with_households(make, n: int):
    village = make.village(make.town("青山镇"), "青山村", allow_negative_balance=True)
    groups = [make.group(village, name) for name in GROUPS]
    households = [
        make.household(
            groups[i % len(groups)], f"{SURNAMES[i]}{'建秀海'[i % 3]}{'明英国华'[i % 4]}"
        )
        for i in range(n)
    ]
    return village, households


def full_monthly_board(make):
    """Publish a board with 10 + 10 entries, then a correction of it with a long note."""
    village, households = village_with_households(make, 24)
    cadre = make.staff(Role.CADRE, village)
    committee = make.staff(Role.COMMITTEE, village)

    def post(household, points, kind, key):
        transfer = ledger.record(
            kind=kind,
            household=household,
            points=points,
            reason="垃圾分类" if kind is TransferKind.AWARD else "乱倒垃圾",
            recorded_by=cadre,
            key=key,
        )
        ledger.post(transfer, committee)

    for i, household in enumerate(households[:12]):
        post(household, 100 - 5 * i, TransferKind.AWARD, f"print-award-{i}")
    for i, household in enumerate(households[12:]):
        post(household, 5 + i, TransferKind.DEDUCTION, f"print-deduction-{i}")
    month = rankings.this_month()
    first = boards.publish_monthly(village, month, committee)
    post(households[11], 200, TransferKind.AWARD, "print-late-award")
    board = boards.publish_monthly(village, month, committee, note=NOTE[: boards.MAX_NOTE_LENGTH])
    assert len(board.content["red"]) == 10 and len(board.content["improvement"]) == 10
    return first, board


def courtyard_board(make):
    """Publish the star households of a round where about 40 households got four stars or more."""
    village, households = village_with_households(make, 44)
    cadre = make.staff(Role.CADRE, village)
    committee = make.staff(Role.COMMITTEE, village)
    # Stars that give no points need no approval: every rating is confirmed at once.
    round_ = ratings.open_round(
        village, title="2026年秋季美丽庭院评比", opener=committee, star_points=[0, 0, 0, 0, 0]
    )
    for i, household in enumerate(households):
        stars = 3 if i % 11 == 10 else 4 + i % 2
        ratings.rate(round_, household, inspector=cadre, scores={c: stars for c in round_.criteria})
    ratings.close_round(round_, committee)
    board = boards.publish_courtyard(round_, committee)
    assert len(board.content["households"]) == 40
    return board


def url(board) -> str:
    return f"/v/{board.village_id}/boards/{board.id}"


def test_a_full_monthly_board_and_its_correction_print_on_one_a4_page(open_page, make):
    first, board = full_monthly_board(make)
    first_url, board_url = url(first), url(board)
    db.session.commit()

    page = open_page()
    page.goto(board_url)
    expect(page.locator(".board-red tbody tr")).to_have_count(10)
    expect(page.locator(".board-improvement tbody tr")).to_have_count(10)
    expect(page.locator("#correction-of")).to_contain_text(NOTE[:20])
    page.emulate_media(media="print")
    # In print everything is still there, the page furniture is not.
    expect(page.locator(".board-red tbody tr").last).to_be_visible()
    expect(page.locator(".board-improvement tbody tr").last).to_be_visible()
    expect(page.locator(".tie-rule")).to_be_visible()
    expect(page.locator(".topbar")).to_be_hidden()
    expect(page.locator("[data-print]")).to_be_hidden()
    assert pdf_pages(page.pdf(format="A4")) == 1

    page.goto(first_url)  # the corrected version, with its forward link
    expect(page.locator("#corrected-by a")).to_have_attribute("href", board_url)
    assert pdf_pages(page.pdf(format="A4")) == 1


def test_a_courtyard_board_of_forty_households_prints_on_one_a4_page(open_page, make):
    board_url = url(courtyard_board(make))
    db.session.commit()

    page = open_page()
    page.goto(board_url)
    expect(page.locator(".board-stars li")).to_have_count(40)
    page.emulate_media(media="print")
    expect(page.locator(".board-stars li").last).to_be_visible()
    assert pdf_pages(page.pdf(format="A4")) == 1


def test_the_public_pages_fit_a_phone_without_logging_in(open_page, make):
    first, board = full_monthly_board(make)
    village_url, board_url = f"/v/{board.village_id}", url(board)
    db.session.commit()

    page = open_page(phone=True)
    page.goto(village_url)
    expect(page.get_by_role("heading", name="青山村")).to_be_visible()
    expect(page.locator(f'#boards a[href="{board_url}"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.locator(f'#boards a[href="{board_url}"]').click()
    expect(page.locator(".board-red tbody tr")).to_have_count(10)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
