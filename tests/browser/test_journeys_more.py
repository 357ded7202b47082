"""More journeys in a real browser, each on a phone and at a desk, in Chinese: an inspection
round approved and seen by the villager; a photo report verified, approved and rewarded; a
roster imported from a village's Excel file and the new households' cards printed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from openpyxl import Workbook
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from pointsmart.extensions import db
from pointsmart.models import (
    Card,
    Category,
    Household,
    Report,
    Role,
    SubmissionStatus,
    Transfer,
    TransferKind,
    TransferStatus,
    VillagerGroup,
)
from pointsmart.services import cards, ledger, places, rules
from pointsmart.timeutil import local_today, utcnow
from tests.browser.test_board_print import pdf_pages
from tests.browser.test_counter_journey import staff_logs_in
from tests.browser.test_journeys import PIN, no_sideways_scrolling, staff, villager_logs_in

pytestmark = pytest.mark.browser

VIEWPORTS = pytest.mark.parametrize("phone", [True, False], ids=["phone", "desktop"])


def rule(committee, village, name: str, category: Category, points: int):
    return rules.create(rules.RuleData(name, category, points), committee, village=village)


def fits(page, phone: bool) -> None:
    if phone:
        assert no_sideways_scrolling(page), f"{page.url} scrolls sideways at 360 px"


def image_loaded(page, img) -> bool:
    """Return whether an <img> was served and decoded (scrolled to, for lazy images)."""
    img.scroll_into_view_if_needed()
    handle = img.element_handle()
    page.wait_for_function("img => img.complete", arg=handle)
    return page.evaluate("img => img.naturalWidth > 0", handle)


# --- 1. inspection round → approval → villager ----------------------------------------------


@VIEWPORTS
def test_an_inspection_round_is_approved_and_the_villager_sees_why(open_page, make, phone):
    village = make.village(name="青山村")
    group = make.group(village, "一组")
    make.group(village, "二组")  # not inspected
    wang = places.create_household(group, "1", "王秀英", head_phone="13912345678")
    li = places.create_household(group, "2", "李建国")
    zhang = places.create_household(group, "3", "张桂兰")
    staff("ganbu", "村干部 陈明德", Role.CADRE, group)
    committee = staff("weiyuan", "村委 赵丽华", Role.COMMITTEE, village)
    rule(committee, village, "垃圾分类合格", Category.WASTE_SORTING, 5)
    rule(committee, village, "垃圾分类不合格", Category.WASTE_SORTING, -3)
    rule(committee, village, "义务保洁", Category.SANITATION, 8)
    make.villager(wang, phone="13912345678", pin=PIN)
    ids = {"wang": wang.id, "li": li.id, "zhang": zhang.id}
    db.session.commit()  # and no ORM access until the browser is done (SQLite's write lock)

    field = open_page(phone=phone)
    staff_logs_in(field, "ganbu")
    expect(field).to_have_url(re.compile(r"/cadre/$"))
    field.get_by_role("link", name="检查轮次").click()
    field.get_by_role("link", name=re.compile(r"^一组")).click()
    expect(field.get_by_role("heading", name="新建检查轮次")).to_be_visible()
    field.get_by_label("标题").fill("三月垃圾分类检查")
    field.get_by_label(re.compile(r"^\s*合格适用细则")).select_option(label="垃圾分类合格 +5")
    field.get_by_label(re.compile(r"^\s*不合格适用细则")).select_option(label="垃圾分类不合格 -3")
    field.get_by_role("button", name="开始检查").click()

    expect(field.get_by_role("heading", name="三月垃圾分类检查")).to_be_visible()
    rows = field.locator("fieldset.round-row")
    expect(rows).to_have_count(3)
    fits(field, phone)
    rows.filter(has_text="王秀英").get_by_label("合格", exact=True).check()
    li_row = rows.filter(has_text="李建国")
    li_row.get_by_label("细则", exact=True).check()
    li_row.get_by_label("李建国适用细则").select_option(label="义务保洁 +8")
    rows.filter(has_text="张桂兰").get_by_label("不在家").check()
    field.get_by_role("button", name="提交本轮检查（3户）").click()

    expect(field.locator(".flash-success")).to_contain_text("加分2户")
    expect(field.locator(".flash-success")).to_contain_text("不在家1户")
    expect(field.locator(".round-counts")).to_contain_text("加分：2户")
    result = field.locator("ul.round-result > li")
    expect(result.filter(has_text="王秀英")).to_contain_text("+5")
    expect(result.filter(has_text="王秀英")).to_contain_text("待审核")
    expect(result.filter(has_text="李建国")).to_contain_text("+8")
    expect(result.filter(has_text="张桂兰")).to_contain_text("不在家")

    desk = open_page(phone=phone)
    staff_logs_in(desk, "weiyuan")
    expect(desk).to_have_url(re.compile(r"/committee/$"))
    queue = desk.locator("ul.queue > li")
    expect(queue).to_have_count(2)
    expect(queue.filter(has_text="王秀英")).to_contain_text("登记人：村干部 陈明德")
    fits(desk, phone)
    desk.get_by_label("选择王秀英 · 垃圾分类合格").check()
    desk.get_by_label("选择李建国 · 义务保洁").check()
    desk.get_by_role("button", name="批准所选").click()
    expect(desk.locator(".flash-success")).to_contain_text("已批准2条记录。")
    expect(queue).to_have_count(0)
    expect(desk.get_by_text("暂无待审核记录。")).to_be_visible()

    villager = open_page(phone=phone)
    villager_logs_in(villager, "13912345678")
    expect(villager.locator("#spendable")).to_have_text("5")
    expect(villager.locator("#honour")).to_have_text("5")
    entry = villager.locator("ul.entries > li").filter(has_text="垃圾分类合格")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("+5")
    expect(entry).to_contain_text("登记人：村干部 陈明德")
    expect(entry).to_contain_text("审核人：村委 赵丽华")
    expect(entry).not_to_contain_text("待审核")
    fits(villager, phone)

    # The round went through the ledger: two posted awards from the round, none for the absent.
    posted = db.session.scalars(
        sa.select(Transfer).where(Transfer.source_type == "round").order_by(Transfer.id)
    ).all()
    assert [(t.household_id, t.signed_points, t.status) for t in posted] == [
        (ids["wang"], 5, TransferStatus.POSTED),
        (ids["li"], 8, TransferStatus.POSTED),
    ]
    assert all(t.approved_by_id == committee.id for t in posted)
    assert ledger.balance_of(db.session.get(Household, ids["zhang"])).spendable == 0


# --- 3. photo report → cadre verifies → committee approves → villager --------------------------


def photo(path) -> str:
    """Write a small real JPEG, a phone snapshot of a rubbish heap by the river."""
    image = Image.new("RGB", (640, 480), (120, 170, 210))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 300, 640, 480), fill=(90, 140, 70))
    draw.ellipse((220, 250, 420, 380), fill=(110, 90, 60))
    draw.polygon([(260, 260), (300, 200), (340, 260)], fill=(200, 40, 40))
    image.save(path, "JPEG", quality=85)
    return str(path)


@VIEWPORTS
def test_a_photo_report_is_verified_approved_and_rewarded(open_page, make, tmp_path, phone):
    village = make.village(name="柳溪村")
    group = make.group(village, "东组")
    wang = places.create_household(group, "1", "王秀英", head_phone="13700001111")
    liu = places.create_household(group, "2", "刘志强")
    cadre = staff("ganbu", "村干部 黄永福", Role.CADRE, village)
    committee = staff("weiyuan", "村委 孙淑珍", Role.COMMITTEE, village)
    reward = rule(committee, village, "举报属实奖励", Category.REPORTING, 10)
    rule(committee, village, "乱倒垃圾", Category.SANITATION, -5)
    make.funded(liu, 20, recorder=cadre, approver=committee)
    make.villager(wang, phone="13700001111", pin=PIN)
    ids = {"wang": wang.id, "liu": liu.id, "reward": reward.id}
    picture = photo(tmp_path / "河边垃圾.jpg")
    db.session.commit()

    villager = open_page(phone=phone)
    villager_logs_in(villager, "13700001111")
    villager.get_by_role("link", name="随手拍举报").click()
    expect(villager.get_by_role("heading", name="随手拍举报")).to_be_visible()
    villager.get_by_label("您看到了什么？").fill("有人往河里倒建筑垃圾")
    villager.get_by_label("在哪里？").fill("村东小河桥下")
    villager.get_by_label("照片（最多4张）").set_input_files(picture)
    fits(villager, phone)
    villager.get_by_role("button", name="提交").click()
    expect(villager).to_have_url(re.compile(r"/me/submissions$"))
    expect(villager.locator(".flash-success")).to_contain_text("村干部会核实您的举报")
    sent = villager.locator("li.submission").filter(has_text="有人往河里倒建筑垃圾")
    expect(sent).to_contain_text("村东小河桥下")
    expect(sent).to_contain_text("等待村干部核实")
    assert image_loaded(villager, sent.locator("img")), "the report's photo is not shown"

    field = open_page(phone=phone)
    staff_logs_in(field, "ganbu")
    field.get_by_role("link", name="待核实的申报和举报").click()
    field.locator("a.entry-main", has_text="有人往河里倒建筑垃圾").click()
    expect(field.get_by_role("heading", name=re.compile(r"^举报#\d+$"))).to_be_visible()
    expect(field.get_by_text("地点：村东小河桥下")).to_be_visible()
    expect(field.get_by_text("王秀英")).to_be_visible()  # the cadre sees who reported it
    assert image_loaded(field, field.locator(".gallery img")), "the cadre cannot see the photo"
    # The village's reporting reward is offered first.
    expect(field.get_by_label(re.compile(r"^\s*举报人奖励"))).to_have_value(str(ids["reward"]))
    field.get_by_label(re.compile(r"^\s*责任户（可选）")).select_option(label="东组 · 2号 · 刘志强")
    field.get_by_label(re.compile(r"^\s*对该户扣分")).select_option(label="乱倒垃圾 (-5)")
    fits(field, phone)
    field.get_by_role("button", name="核实并提交审核").click()
    expect(field).to_have_url(re.compile(r"/cadre/verify/$"))
    expect(field.locator(".flash-success")).to_contain_text("已核实：加分正等待村委会审核。")
    expect(field.get_by_text("没有待核实的举报。")).to_be_visible()

    # Checked, not yet approved: the villager sees it waiting.
    villager.reload()
    expect(sent).to_contain_text("村干部已核实")
    expect(sent).to_contain_text("积分：+10")
    expect(sent).to_contain_text("待审核")

    desk = open_page(phone=phone)
    staff_logs_in(desk, "weiyuan")
    queue = desk.locator("ul.queue > li")
    expect(queue).to_have_count(2)
    award_row = queue.filter(has_text="王秀英")
    expect(award_row).to_contain_text("举报属实奖励")
    expect(award_row).to_contain_text("照片：1张")  # the report's photo is its evidence
    expect(queue.filter(has_text="刘志强")).to_contain_text("-5")
    expect(queue.filter(has_text="刘志强")).to_contain_text("照片：1张")
    fits(desk, phone)
    award_row.get_by_role("button", name="通过", exact=True).click()
    expect(desk.locator(".flash-success")).to_contain_text("王秀英")
    queue.filter(has_text="刘志强").get_by_role("button", name="通过", exact=True).click()
    expect(desk.locator(".flash-success")).to_contain_text("刘志强")
    expect(desk.get_by_text("暂无待审核记录。")).to_be_visible()

    villager.get_by_role("link", name="返回我的积分").click()
    expect(villager.locator("#spendable")).to_have_text("10")
    entry = villager.locator("ul.entries > li").filter(has_text="举报属实奖励")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("+10")
    expect(entry).to_contain_text("审核人：村委 孙淑珍")
    expect(entry).not_to_contain_text("待审核")
    villager.goto("/me/submissions")
    expect(sent).to_contain_text("积分：+10 · 已入账")

    report = db.session.scalars(sa.select(Report)).one()
    assert report.status is SubmissionStatus.VERIFIED
    assert report.reward_transfer.status is TransferStatus.POSTED
    assert report.reward_transfer.approved_by_id == committee.id
    assert report.deduction_transfer.kind is TransferKind.DEDUCTION
    assert report.deduction_transfer.status is TransferStatus.POSTED
    assert ledger.balance_of(db.session.get(Household, ids["wang"])).spendable == 10
    assert ledger.balance_of(db.session.get(Household, ids["liu"])).spendable == 15


# --- 5. roster import → the new households' cards -----------------------------------------


def village_roster(path) -> str:
    """Write a roster as a village office keeps one: a merged title, full-width digits."""
    book = Workbook()
    sheet = book.active
    sheet.append(["青山村村民花名册（2026年3月）"])
    sheet.merge_cells("A1:G1")
    sheet.append(["组别", "门牌号", "户主", "姓名", "与户主关系", "联系电话", "身份证后四位"])
    sheet.append(["一组", 1, "王秀英", "王秀英", "户主", None, None])  # already registered
    sheet.append(["一组", "２", "李建国", "李建国", "户主", "１３８ ０００１ １１１１", "１２３４"])
    sheet.append(["一组", "２", "李建国", "张桂兰", "妻子", None, None])
    sheet.append([" 一组", 3.0, "刘志强", "刘志强", "本人", 13800002222, None])
    sheet.append([None] * 7)
    sheet.append(["二组", "１", "赵德胜", "赵德胜", "户主", "+86 138 0000 3333", "567X"])
    book.save(path)
    return str(path)


NEW = ("李建国", "刘志强", "赵德胜")


@VIEWPORTS
def test_an_imported_roster_gets_its_new_households_cards(open_page, make, tmp_path, phone):
    town = make.town("青山镇")
    village = make.village(town, "青山村")
    one = make.group(village, "一组")
    make.group(village, "二组")
    places.create_household(one, "1", "王秀英")
    # Registered long ago, as was its card; another village's new card is not this one's.
    db.session.execute(sa.update(Card).values(issued_at=utcnow() - timedelta(days=40)))
    make.household(make.group(make.village(town, "柳溪村"), "一组"), name="孙淑珍")
    staff("guanli", "镇管理员 周海燕", Role.ADMIN, town)
    village_id = village.id
    roster = village_roster(tmp_path / "青山村花名册.xlsx")
    today = local_today().isoformat()
    db.session.commit()

    desk = open_page(phone=phone)
    staff_logs_in(desk, "guanli")
    expect(desk).to_have_url(re.compile(r"/admin/$"))
    desk.get_by_role("link", name="青山村花名册").click()
    desk.get_by_label("花名册文件（.xlsx 或 .csv）").set_input_files(roster)
    desk.get_by_role("button", name="预览导入").click()

    summary = desk.locator("dl.roster-summary")
    expect(summary.locator("dt:text-is('新增户') + dd")).to_have_text("3 (4 人)")
    expect(summary.locator("dt:text-is('与文件一致的户') + dd")).to_have_text("1")
    expect(summary.locator("dt:text-is('有问题的行') + dd")).to_have_text("0")
    expect(desk.locator("form.roster-import")).to_contain_text("导入将新增 3 户、更新 0 户")
    fits(desk, phone)
    desk.get_by_role("button", name="导入花名册").click()

    expect(desk.locator(".flash-success")).to_contain_text(
        "花名册已导入：新增 3 户（4 人），更新 0 户，1 户无变化。"
    )
    expect(desk.locator("#result")).to_contain_text("青山村花名册.xlsx")
    desk.get_by_role("link", name="打印新户的积分卡").click()

    expect(desk.get_by_role("heading", level=1)).to_have_text(f"青山村的积分卡 · {today}及以后发放")
    sheet = desk.locator(".points-card")
    expect(sheet).to_have_count(3)  # one card per new household, none for the others
    expect(sheet.locator(".pc-name")).to_have_text(list(NEW))
    expect(sheet.locator(".pc-qr svg")).to_have_count(3)
    expect(desk.get_by_text("共 3 张卡，1 页 A4 纸", exact=False)).to_be_visible()
    printed_codes = sheet.locator(".pc-code").all_text_contents()
    fits(desk, phone)

    desk.emulate_media(media="print")
    expect(desk.locator(".no-print").first).to_be_hidden()
    expect(sheet.last).to_be_visible()
    assert pdf_pages(desk.pdf(format="A4")) == 1
    desk.emulate_media(media="screen")

    # The same sheet as the server's PDF, as a download.
    href = desk.get_by_role("link", name="下载 PDF").get_attribute("href")
    download = desk.request.get(href)
    assert download.ok
    assert download.headers["content-type"] == "application/pdf"
    assert pdf_pages(download.body()) == 1

    households = db.session.scalars(
        sa.select(Household)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .where(VillagerGroup.village_id == village_id, Household.name.in_(NEW))
    ).all()
    assert sorted(h.name for h in households) == sorted(NEW)
    assert sorted(printed_codes) == sorted(cards.current_card(h).display_code for h in households)
    li = next(h for h in households if h.name == "李建国")
    assert li.house_number == "2"  # the full-width ２, folded
    assert sorted(m.name for m in li.members) == ["张桂兰", "李建国"]
    assert "13800011111" in [m.phone for m in li.members]
