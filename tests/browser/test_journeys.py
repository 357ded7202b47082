"""Journeys in a real browser: a villager on a phone, a committee member at a desk, the language."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from pointsmart.extensions import db
from pointsmart.models import Category, Role, Transfer, TransferKind, TransferStatus
from pointsmart.services import accounts, ledger

pytestmark = pytest.mark.browser

PIN = "135790"
PASSWORD = "a long staff password"


def staff(username: str, name: str, role: Role, place):
    user = accounts.create_staff(username, name, PASSWORD)
    accounts.grant(user, role, place)
    return user


def award(household, points, reason, category, recorder, approver=None, kind=TransferKind.AWARD):
    """Record an award or deduction; post it when an approver is given."""
    transfer = ledger.record(
        kind=kind,
        household=household,
        points=points,
        reason=reason,
        category=category,
        recorded_by=recorder,
        key=f"journey-{household.id}-{reason}",
    )
    return ledger.post(transfer, approver) if approver else transfer


def villager_logs_in(page, phone: str, pin: str = PIN) -> None:
    page.goto("/login")
    page.get_by_label("手机号", exact=True).fill(phone)
    page.get_by_label("密码（6位数字）", exact=True).fill(pin)
    page.get_by_role("button", name="登录", exact=True).click()
    expect(page).to_have_url(re.compile(r"/me/$"))


def no_sideways_scrolling(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_villager_on_a_phone_sees_both_balances_and_why(open_page, make, screenshot):
    village = make.village(name="青山村")
    group = make.group(village, "一组")
    household = make.household(group, name="王秀英")
    cadre = staff("ganbu", "村干部 陈明德", Role.CADRE, village)
    committee = staff("weiyuan", "村委 赵丽华", Role.COMMITTEE, village)
    shop = make.shop(village)
    clerk = staff("dianyuan", "超市管理员 周海燕", Role.CLERK, shop)
    award(household, 40, "垃圾分类合格", Category.WASTE_SORTING, cadre, committee)
    award(household, 30, "门前三包、义务保洁", Category.SANITATION, cadre, committee)
    award(household, 50, "美丽庭院四星", Category.COURTYARD, cadre, committee)
    award(household, 15, "植树造林", Category.TREE_PLANTING, cadre)  # still pending
    ledger.redeem(
        household=household,
        shop=shop,
        points=100,
        clerk=clerk,
        key="journey-fan",
        reason="兑换电风扇",
    )
    make.villager(household, phone="13912345678", pin=PIN)
    db.session.commit()

    page = open_page(phone=True)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("heading", name="村民登录")).to_be_visible()
    villager_logs_in(page, "13912345678")

    expect(page.get_by_role("heading", name="王秀英")).to_be_visible()
    # Spending lowered the spendable points; honour points keep everything earned.
    expect(page.locator("#spendable")).to_have_text("20")
    expect(page.locator("#honour")).to_have_text("120")
    expect(page.get_by_text("兑换积分", exact=True)).to_be_visible()
    expect(page.get_by_text("荣誉积分", exact=True)).to_be_visible()
    history = page.locator("ul.entries > li")
    expect(history).to_have_count(5)
    for reason in ("垃圾分类合格", "门前三包、义务保洁", "美丽庭院四星", "兑换电风扇"):
        expect(history.filter(has_text=reason)).to_have_count(1)
    expect(history.filter(has_text="兑换电风扇")).to_contain_text("-100")
    expect(history.filter(has_text="植树造林")).to_contain_text("待审核")
    assert no_sideways_scrolling(page), "the phone page scrolls sideways at 360 px"
    screenshot(page, "villager-phone.png")


def test_committee_approves_an_award_and_the_villager_sees_it(open_page, make, screenshot):
    village = make.village(name="柳溪村")
    group = make.group(village, "东组")
    lee = make.household(group, name="李建国")
    zhang = make.household(group, name="张桂兰")
    liu = make.household(group, name="刘志强")
    cadre = staff("ganbu2", "村干部 黄永福", Role.CADRE, village)
    approver = staff("weiyuan2", "村委 孙淑珍", Role.COMMITTEE, village)
    other_member = staff("weiyuan3", "村委 马德胜", Role.COMMITTEE, village)
    award(lee, 25, "垃圾分类合格", Category.WASTE_SORTING, cadre, other_member)
    award(lee, 10, "门前三包、义务保洁", Category.SANITATION, cadre)
    award(zhang, 20, "美丽庭院四星", Category.COURTYARD, cadre)
    award(liu, 10, "乱倒垃圾", Category.SANITATION, cadre, kind=TransferKind.DEDUCTION)
    make.villager(lee, phone="13700001111", pin=PIN)
    db.session.commit()

    desk = open_page()
    desk.goto("/login/staff")
    desk.get_by_label("用户名", exact=True).fill("weiyuan2")
    desk.get_by_label("密码", exact=True).fill(PASSWORD)
    desk.get_by_role("button", name="登录", exact=True).click()
    expect(desk).to_have_url(re.compile(r"/committee/$"))
    pending = desk.locator("ul.entries > li")
    expect(pending).to_have_count(3)
    screenshot(desk, "committee-desktop.png")

    pending.filter(has_text="李建国").get_by_role("button", name="通过", exact=True).click()
    expect(desk).to_have_url(re.compile(r"/committee/$"))
    expect(desk.get_by_role("alert")).to_contain_text("李建国")
    expect(desk.get_by_role("alert")).to_contain_text("门前三包、义务保洁")
    expect(pending).to_have_count(2)
    expect(pending.filter(has_text="李建国")).to_have_count(0)

    phone = open_page(phone=True)
    villager_logs_in(phone, "13700001111")
    expect(phone.locator("#spendable")).to_have_text("35")
    expect(phone.locator("#honour")).to_have_text("35")
    approved = phone.locator("ul.entries > li").filter(has_text="门前三包、义务保洁")
    expect(approved).to_contain_text("+10")
    expect(approved).to_contain_text("孙淑珍")  # who approved it
    expect(approved).not_to_contain_text("待审核")

    # The browser's click went through the ledger: posted once, by that member.
    transfer = db.session.scalars(
        sa.select(Transfer).where(Transfer.reason == "门前三包、义务保洁")
    ).one()
    assert transfer.status is TransferStatus.POSTED
    assert transfer.approved_by_id == approver.id
    assert ledger.balance_of(lee).spendable == 35
    assert ledger.balance_of(zhang).spendable == 0  # the other awards still wait


def test_switching_to_english_and_back(open_page, make):
    household = make.household(name="吴春花")
    make.funded(household, 30)
    make.villager(household, phone="13600002222", pin=PIN)
    db.session.commit()

    page = open_page(phone=True)
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Villager login")).to_be_visible()

    # The choice survives logging in.
    page.get_by_label("Mobile number").fill("13600002222")
    page.get_by_label("PIN (6 digits)").fill(PIN)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/me/$"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_text("Spendable points", exact=True)).to_be_visible()
    expect(page.get_by_text("Honour points", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()

    page.get_by_role("button", name="简体中文").click()
    expect(page).to_have_url(re.compile(r"/me/$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_text("兑换积分", exact=True)).to_be_visible()
    expect(page.get_by_text("Spendable points")).to_have_count(0)
    expect(page.locator("#spendable")).to_have_text("30")
