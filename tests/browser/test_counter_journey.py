"""The counter in a real browser: a clerk redeems a cart, prints the receipt, voids a line, and the
villager sees both on a phone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from pointsmart.extensions import db
from pointsmart.models import Role
from pointsmart.services import cards, catalogue, places
from tests.browser.test_journeys import (
    PASSWORD,
    PIN,
    no_sideways_scrolling,
    staff,
    villager_logs_in,
)

pytestmark = pytest.mark.browser


def staff_logs_in(page, username: str) -> None:
    page.goto("/login/staff")
    page.get_by_label("用户名", exact=True).fill(username)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="登录", exact=True).click()


def test_clerk_redeems_prints_and_voids_a_line_and_the_villager_sees_both(open_page, make):
    village = make.village(name="石桥村")
    group = make.group(village, "桥头组")
    household = places.create_household(group, "8", "王秀英", head_phone="13611112222")
    places.add_member(household, "王小军")
    shop = make.shop(village)
    clerk = staff("dianyuan9", "超市管理员 周海燕", Role.CLERK, shop)
    powder = catalogue.create_item(shop, catalogue.ItemData("洗衣粉", "清洁用品", 30), clerk)
    oil = catalogue.create_item(shop, catalogue.ItemData("食用油", "粮油", 120), clerk)
    catalogue.receive(powder, clerk, quantity_=10, key="journey-powder")
    catalogue.receive(oil, clerk, quantity_=2, key="journey-oil")
    make.funded(household, 200)
    make.villager(household, phone="13611112222", pin=PIN)
    code = cards.current_card(household).display_code
    shop_id = shop.id
    db.session.commit()  # and no ORM access after it: on SQLite it would hold the write lock

    counter = open_page()
    staff_logs_in(counter, "dianyuan9")
    expect(counter).to_have_url(re.compile(rf"/clerk/shops/{shop_id}/counter$"))
    # A handheld scanner types the code and presses Enter; a person may type it in lower case.
    counter.locator("#card-code").fill(code.lower())
    counter.locator("#card-code").press("Enter")
    expect(counter).to_have_url(re.compile(r"/cart$"))
    expect(counter.locator("#spendable")).to_have_text("200")
    expect(counter.get_by_text("王小军")).to_be_visible()

    powder_line = counter.locator(".cart-line", has_text="洗衣粉")
    oil_line = counter.locator(".cart-line", has_text="食用油")
    powder_line.get_by_role("button", name="加一").click()
    powder_line.get_by_role("button", name="加一").click()
    oil_line.get_by_role("button", name="加一").click()
    expect(counter.locator("[data-cart-total]")).to_have_text("180")
    expect(counter.locator("[data-cart-remaining]")).to_have_text("20")
    oil_line.get_by_role("button", name="加一").click()  # 420 > 200: refused before the review
    expect(counter.locator("[data-cart-over]")).to_be_visible()
    expect(counter.locator("[data-cart-submit]")).to_be_disabled()
    oil_line.get_by_role("button", name="减一").click()
    counter.get_by_role("button", name="核对清单").click()

    expect(counter.locator("#review-total")).to_have_text("180")
    expect(counter.locator("#review-remaining")).to_have_text("20")
    counter.get_by_role("button", name="确认：兑换 180 积分").click()
    expect(counter).to_have_url(re.compile(r"/clerk/redemptions/\d+$"))
    expect(counter.locator(".flash-success")).to_contain_text("剩余 20 积分")

    # The receipt fits a 58 mm roll when printed.
    counter.get_by_role("link", name="打印小票（58 毫米）").click()
    expect(counter.locator(".slip")).to_contain_text("洗衣粉")
    expect(counter.locator(".slip")).to_contain_text("积分兑换小票")
    counter.emulate_media(media="print")
    width = counter.evaluate("document.querySelector('.slip').getBoundingClientRect().width")
    assert width <= 58 / 25.4 * 96 + 1, f"the receipt is {width}px wide, wider than 58 mm"
    expect(counter.locator("nav")).to_be_hidden()
    counter.emulate_media(media="screen")
    counter.get_by_role("link", name="返回").click()

    # One of the two bags of washing powder was a mistake: take it back.
    counter.get_by_label("“洗衣粉”退回数量").fill("1")
    counter.get_by_label("原因").fill("多拿了一袋")
    counter.get_by_role("button", name="作废上面填写的数量").click()
    expect(counter.locator(".flash-success")).to_contain_text("退还 30 积分")
    expect(counter.locator("table.redemption-lines")).to_contain_text("已退回 1 件")

    phone = open_page(phone=True)
    villager_logs_in(phone, "13611112222")
    expect(phone.locator("#spendable")).to_have_text("50")
    history = phone.locator("ul.entries > li")
    sale = history.filter(has_text="洗衣粉×2、食用油×1").filter(has_not_text="多拿了一袋")
    expect(sale).to_contain_text("-180")
    refund = history.filter(has_text="多拿了一袋")
    expect(refund).to_contain_text("+30")
    expect(refund).to_contain_text("退回商品")
    assert no_sideways_scrolling(phone)


def test_the_cart_fits_a_phone(open_page, make):
    village = make.village(name="柳树村")
    household = make.household(make.group(village, "一组"), name="李建国")
    shop = make.shop(village)
    clerk = staff("dianyuan8", "超市管理员 孙丽", Role.CLERK, shop)
    item = catalogue.create_item(
        shop, catalogue.ItemData("一个名字很长的商品：大桶装食用植物调和油", "粮油", 10), clerk
    )
    catalogue.receive(item, clerk, quantity_=5, key="journey-long")
    make.funded(household, 50)
    cart = f"/clerk/shops/{shop.id}/households/{household.id}/cart"
    counter = f"/clerk/shops/{shop.id}/counter"
    db.session.commit()

    page = open_page(phone=True)
    staff_logs_in(page, "dianyuan8")
    page.goto(cart)
    expect(page.locator(".cart-line")).to_have_count(1)
    assert no_sideways_scrolling(page), "the cart scrolls sideways at 360 px"
    page.goto(counter)
    assert no_sideways_scrolling(page), "the counter scrolls sideways at 360 px"
