"""A villager's self-service in a real browser: large text that sticks, read-aloud, the statement."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from pointsmart.extensions import db
from pointsmart.models import Category, Role, TransferKind
from pointsmart.services import ledger, places
from tests.browser.test_journeys import (
    PASSWORD,
    PIN,
    no_sideways_scrolling,
    staff,
    villager_logs_in,
)

pytestmark = pytest.mark.browser

#: Replaces the browser's speech synthesis before any script runs, recording what is spoken.
SPEECH_STUB = """
window.__spoken = [];
window.__cancelled = 0;
function FakeUtterance(text) { this.text = text; this.lang = ""; this.voice = null; this.rate = 1; }
var voices = [
  {name: "English", lang: "en-US", localService: true},
  {name: "Cantonese", lang: "zh-HK", localService: true},
  {name: "Mandarin", lang: "zh-CN", localService: true}
];
Object.defineProperty(window, "SpeechSynthesisUtterance", {value: FakeUtterance, configurable: true});
Object.defineProperty(window, "speechSynthesis", {configurable: true, value: {
  speak: function (u) {
    window.__spoken.push({text: u.text, lang: u.lang, voice: u.voice && u.voice.name, rate: u.rate});
  },
  cancel: function () { window.__cancelled += 1; },
  getVoices: function () { return voices; }
}});
"""
NO_SPEECH = (
    'Object.defineProperty(window, "speechSynthesis", {value: undefined, configurable: true});'
)


def award(household, points, reason, recorder, approver, key, kind=TransferKind.AWARD):
    transfer = ledger.record(
        kind=kind,
        household=household,
        points=points,
        reason=reason,
        category=Category.WASTE_SORTING,
        recorded_by=recorder,
        key=key,
    )
    return ledger.post(transfer, approver) if approver else transfer


def a_household_with_history(make, phone: str, records: int = 3, reason_length: int = 0):
    """Commit a household with points and a villager login; return its id."""
    village = make.village(name="青山村")
    group = make.group(village, "一组")
    household = places.create_household(group, "12", "王秀英", head_phone=phone)
    for name in ("王建国", "王小军", "李桂芳", "王丽丽", "王明明", "王亮亮"):
        places.add_member(household, name)
    cadre = staff(f"ganbu{phone[-4:]}", "村干部 陈明德", Role.CADRE, village)
    committee = make.staff(Role.COMMITTEE, village)
    award(household, 300, "美丽庭院四星", cadre, committee, f"{phone}-start")
    for n in range(records):
        reason = f"垃圾分类合格第{n}次" + "，门前屋后干净整洁" * reason_length
        award(household, 5, reason[:200], cadre, committee, f"{phone}-{n}")
    award(household, 10, "乱倒垃圾", cadre, committee, f"{phone}-d", kind=TransferKind.DEDUCTION)
    award(household, 15, "义务保洁", cadre, None, f"{phone}-pending")
    make.villager(household, phone=phone, pin=PIN)
    household_id = household.id
    db.session.commit()  # and no ORM access after it: on SQLite it would hold the write lock
    return household_id


def font_size(page, selector: str) -> float:
    return page.evaluate(
        "s => parseFloat(getComputedStyle(document.querySelector(s)).fontSize)", selector
    )


def style(page, selector: str, prop: str) -> str:
    return page.evaluate(
        "([s, p]) => getComputedStyle(document.querySelector(s)).getPropertyValue(p)",
        [selector, prop],
    )


def test_large_text_enlarges_the_page_and_sticks_across_pages(open_page, make):
    a_household_with_history(make, "13712340001")
    page = open_page(phone=True)
    villager_logs_in(page, "13712340001")
    before = {s: font_size(page, s) for s in ("body", ".entry strong", ".balance .label")}
    assert before["body"] == 18

    page.locator(".display-switch button[value=large]").click()
    expect(page).to_have_url(re.compile(r"/me/$"))
    expect(page.locator("html")).to_have_class("large-display")
    for selector, size in before.items():
        assert font_size(page, selector) >= 1.4 * size, selector
    # High contrast: black text, no grey, on white; the balances on yellow.
    assert style(page, "body", "color") == "rgb(0, 0, 0)"
    assert style(page, "body", "background-color") == "rgb(255, 255, 255)"
    assert style(page, ".muted", "color") == "rgb(0, 0, 0)"
    assert style(page, ".balance", "background-color") == "rgb(255, 235, 0)"
    # A thick focus outline and big tap targets.
    page.locator("a.row-link").focus()
    assert float(style(page, "a.row-link", "outline-width").removesuffix("px")) >= 4
    box = page.locator(".big-links .button").first.bounding_box()
    assert box["height"] >= 56
    assert no_sideways_scrolling(page), "large text scrolls sideways at 360 px"

    # It sticks: another page, and the catalogue reached by its link.
    page.locator("a.row-link").click()
    expect(page).to_have_url(re.compile(r"/me/history$"))
    expect(page.locator("html")).to_have_class("large-display")
    assert font_size(page, "body") >= 1.4 * before["body"]
    page.goto("/me/shop")
    expect(page.locator("html")).to_have_class("large-display")
    assert font_size(page, "h1") > 30
    assert no_sideways_scrolling(page), "the catalogue scrolls sideways at 360 px in large text"

    # And it turns off again.
    page.locator(".display-switch button[value=normal]").click()
    expect(page.locator("html")).not_to_have_class("large-display")
    assert font_size(page, "body") == 18


def test_read_aloud_speaks_the_servers_sentence_in_chinese_and_stops(open_page, make):
    a_household_with_history(make, "13712340002")
    page = open_page(phone=True)
    page.add_init_script(SPEECH_STUB)
    villager_logs_in(page, "13712340002")

    box = page.locator(".read-aloud")
    expect(box).to_be_visible()
    sentence = box.get_attribute("data-speak-text")
    assert sentence.count("305") == 2  # spendable and honour
    stop = page.locator("[data-speak-stop]")
    expect(stop).to_be_hidden()

    page.locator("[data-speak]").click()
    spoken = page.evaluate("window.__spoken")
    assert spoken == [{"text": sentence, "lang": "zh-CN", "voice": "Mandarin", "rate": 0.9}]
    expect(stop).to_be_visible()
    cancelled = page.evaluate("window.__cancelled")
    stop.click()
    assert page.evaluate("window.__cancelled") == cancelled + 1
    expect(stop).to_be_hidden()


def test_read_aloud_stays_hidden_without_speech_synthesis(open_page, make):
    a_household_with_history(make, "13712340003")
    page = open_page(phone=True)
    page.add_init_script(NO_SPEECH)
    villager_logs_in(page, "13712340003")
    expect(page.locator("#spendable")).to_be_visible()
    expect(page.locator(".read-aloud")).to_be_hidden()


def pdf_pages(pdf: bytes) -> int:
    """Return how many pages a PDF made by Chromium has."""
    assert pdf.startswith(b"%PDF")
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def test_statement_prints_on_one_a4_page(open_page, make):
    household_id = a_household_with_history(make, "13712340004", records=40, reason_length=12)
    page = open_page()
    page.goto("/login/staff")
    page.get_by_label("用户名", exact=True).fill("ganbu0004")
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()
    expect(page).to_have_url(re.compile(r"/cadre/$"))

    page.goto(f"/cadre/households/{household_id}")
    page.locator(f'a[href="/households/{household_id}/statement"]').click()
    expect(page.locator("#household-name")).to_have_text("王秀英")
    expect(page.locator(".statement-lines tbody tr")).to_have_count(25)
    assert pdf_pages(page.pdf(format="A4")) == 1

    # Large text on screen leaves the printed page as it was.
    page.locator(".display-switch button[value=large]").click()
    expect(page.locator("html")).to_have_class("large-display")
    assert pdf_pages(page.pdf(format="A4")) == 1

    # The page-count check itself can fail: three statements' worth do not fit on one page.
    page.evaluate(
        "() => { const t = document.querySelector('.statement-lines tbody');"
        " t.innerHTML = t.innerHTML + t.innerHTML + t.innerHTML; }"
    )
    assert pdf_pages(page.pdf(format="A4")) > 1
