"""The villager's own pages: the whole history, the catalogue, large text and read-aloud."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from babel.dates import format_skeleton
from flask_babel import force_locale, gettext

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Category, LimitPeriod, Role, TransferKind
from pointsmart.services import awards, catalogue, ledger, rules
from pointsmart.services.rules import RuleData
from pointsmart.timeutil import local_today
from tests.conftest import PIN, app_config

CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
LINE_IDS = re.compile(r'<li class="entry[^"]*" id="([tw])-(\d+)"')


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, locale: str = "zh_CN", **values) -> str:
    """Return ``message`` as a page in ``locale`` shows it."""
    with app.test_request_context(), force_locale(locale):
        return gettext(message, **values)


def line_ids(page: str) -> list[tuple[str, int]]:
    """Return the history lines of a page, in order: ("t", transfer id) or ("w", warning id)."""
    return [(kind, int(i)) for kind, i in LINE_IDS.findall(page)]


def line(page: str, anchor: str) -> str:
    """Return the whole <li> of a page whose id is ``anchor``, from its opening tag."""
    start = page.rindex("<li", 0, page.index(f'id="{anchor}"'))
    return page[start : page.index("</li>", start)]


@dataclass
class World:
    village: object
    group: object
    home: object
    neighbour: object
    cadre: object
    committee: object
    villager: object
    neighbour_villager: object


@pytest.fixture
def w(make) -> World:
    village = make.village(name="青山村")
    group = make.group(village, "一组")
    home = make.household(group, name="王秀英")
    neighbour = make.household(group, name="李建国")
    world = World(
        village=village,
        group=group,
        home=home,
        neighbour=neighbour,
        cadre=make.staff(Role.CADRE, village),
        committee=make.staff(Role.COMMITTEE, village),
        villager=make.villager(home, phone="13900000001"),
        neighbour_villager=make.villager(neighbour, phone="13900000002"),
    )
    db.session.commit()
    return world


def award(w: World, household, points: int, reason: str, key: str, post: bool = True, **kw):
    """Record an award (or, with kind=, a deduction) for a household; post it unless told."""
    transfer = ledger.record(
        kind=kw.pop("kind", TransferKind.AWARD),
        household=household,
        points=points,
        reason=reason,
        category=Category.WASTE_SORTING,
        recorded_by=w.cadre,
        key=key,
        **kw,
    )
    return ledger.post(transfer, w.committee) if post else transfer


# --- the whole history ----------------------------------------------------------------------


def test_history_pages_65_records_newest_first_thirty_a_page(client, login_as, w):
    made = [award(w, w.home, 1, f"记录{n:02d}", f"h-{n}") for n in range(1, 66)]
    db.session.commit()
    newest_first = [("t", t.id) for t in reversed(made)]
    login_as(w.villager)

    first = text(client.get("/me/history"))
    assert line_ids(first) == newest_first[:30]
    assert "记录65" in first and "记录35" not in first
    assert 'href="/me/history?page=2"' in first and "page=0" not in first

    second = text(client.get("/me/history?page=2"))
    assert line_ids(second) == newest_first[30:60]
    assert 'href="/me/history?page=1"' in second and 'href="/me/history?page=3"' in second

    third = text(client.get("/me/history?page=3"))
    assert line_ids(third) == newest_first[60:]
    assert "记录01" in third and 'href="/me/history?page=4"' not in third
    assert 'href="/me/history?page=2"' in third

    # Out of range or nonsense: the nearest real page, never an error.
    assert line_ids(text(client.get("/me/history?page=99"))) == newest_first[60:]
    assert line_ids(text(client.get("/me/history?page=-3"))) == newest_first[:30]
    assert line_ids(text(client.get("/me/history?page=abc"))) == newest_first[:30]


def test_home_keeps_its_short_list_and_links_to_the_whole_history(client, login_as, w):
    for n in range(1, 13):
        award(w, w.home, n, f"垃圾分类合格第{n:02d}次", f"home-{n}")
    db.session.commit()
    login_as(w.villager)
    page = text(client.get("/me/"))
    # The ten latest, newest first; the rest are a tap away on the history page.
    listed = page[page.index('<ul class="entries">') :]
    shown = re.findall(r"<strong>垃圾分类合格第(\d\d)次", listed)
    assert shown == [f"{n:02d}" for n in range(12, 2, -1)]
    assert 'href="/me/history"' in page and 'href="/me/shop"' in page


def test_pending_awards_show_as_pending_and_reversals_link_to_what_they_reverse(
    app, client, login_as, w
):
    mistaken = award(w, w.home, 20, "植树造林（记错了）", "rev-original")
    for n in range(40):  # pushes the original onto page 2
        award(w, w.home, 1, f"门前三包{n:02d}", f"rev-filler-{n}")
    reversal = ledger.reverse(mistaken, w.committee, "记错户，更正", key="rev-1")
    pending = award(w, w.home, 15, "义务保洁", "rev-pending", post=False)
    db.session.commit()
    login_as(w.villager)

    first = text(client.get("/me/history"))
    assert line_ids(first)[:2] == [("t", pending.id), ("t", reversal.id)]
    pending_line = line(first, f"t-{pending.id}")
    assert pending_line.startswith('<li class="entry status-pending"')
    assert translated(app, "Pending approval") in pending_line and "+15" in pending_line

    # The reversal links to the original on page 2, by its anchor.
    link = f'href="/me/history?page=2#t-{mistaken.id}"'
    assert link in first
    reversal_line = line(first, f"t-{reversal.id}")
    assert link in reversal_line and "-20" in reversal_line
    assert "植树造林（记错了）" in reversal_line
    assert ("t", mistaken.id) not in line_ids(first)

    # On page 2 the original is there under that anchor and links back to its correction.
    second = text(client.get("/me/history?page=2"))
    assert ("t", mistaken.id) in line_ids(second)
    original_line = line(second, f"t-{mistaken.id}")
    assert f'href="/me/history?page=1#t-{reversal.id}"' in original_line


def test_a_reversal_on_the_same_page_links_within_the_page(client, login_as, w):
    mistaken = award(w, w.home, 8, "垃圾分类合格", "same-1")
    reversal = ledger.reverse(mistaken, w.committee, "重复记录", key="same-rev")
    db.session.commit()
    login_as(w.villager)
    page = text(client.get("/me/history"))
    assert line_ids(page) == [("t", reversal.id), ("t", mistaken.id)]
    assert f'href="#t-{mistaken.id}"' in page and f'href="#t-{reversal.id}"' in page


def test_first_offence_warnings_are_shown_as_warnings_without_points(app, client, login_as, w):
    rule = rules.create(
        RuleData(
            "乱倒垃圾",
            Category.SANITATION,
            -10,
            limit_count=3,
            limit_period=LimitPeriod.MONTH,
            warning_first=True,
        ),
        w.committee,
        village=w.village,
    )
    before = award(w, w.home, 5, "垃圾分类合格", "warn-before")
    warning = awards.record_by_rule(household=w.home, rule=rule, recorded_by=w.cadre, key="warn")
    db.session.commit()
    assert type(warning).__name__ == "RuleWarning"
    login_as(w.villager)

    page = text(client.get("/me/history"))
    assert line_ids(page) == [("w", warning.id), ("t", before.id)]
    shown = line(page, f"w-{warning.id}")
    assert "乱倒垃圾" in shown
    assert translated(app, "Warning") in shown
    assert translated(app, "A warning for a first offence: no points were deducted.") in shown
    assert translated(app, "Recorded by %(name)s", name=w.cadre.display_name) in shown
    assert '<span class="points">0</span>' in shown
    assert ledger.balance_of(w.home).spendable == 5  # and indeed nothing was deducted


def test_another_households_history_is_never_shown_whatever_the_url_says(client, login_as, w):
    award(w, w.home, 5, "我家的记录", "own-1")
    theirs = award(w, w.neighbour, 7, "邻居家的记录", "theirs-1")
    rule = rules.create(
        RuleData(
            "焚烧秸秆",
            Category.SANITATION,
            -10,
            limit_count=1,
            limit_period=LimitPeriod.YEAR,
            warning_first=True,
        ),
        w.committee,
        village=w.village,
    )
    awards.record_by_rule(household=w.neighbour, rule=rule, recorded_by=w.cadre, key="their-w")
    db.session.commit()
    login_as(w.villager)
    other = w.neighbour.id
    for url in (
        "/me/",
        "/me/history",
        f"/me/history?household_id={other}",
        f"/me/history?household={other}",
        f"/me/history?id={other}&page=1",
        f"/me/history?page=1&household_id={other}&member_id={w.neighbour.members[0].id}",
        f"/me/?household_id={other}",
        f"/me/shop?household_id={other}",
    ):
        page = text(client.get(url))
        assert "邻居家的记录" not in page and f"t-{theirs.id}" not in page, url
        assert "焚烧秸秆" not in page and 'id="w-' not in page, url
        assert "李建国" not in page, url
    assert "我家的记录" in text(client.get(f"/me/history?household_id={other}"))
    # Paths that name a household: none is the villager's to open.
    for url in (
        f"/me/history/{other}",
        f"/households/{other}/statement",
        f"/households/{w.home.id}/statement",
    ):
        assert client.get(url).status_code == 404, url


# --- the catalogue --------------------------------------------------------------------------


def stocked(shop, clerk, name: str, points: int, units: int = 5, active: bool = True):
    item = catalogue.create_item(
        shop, catalogue.ItemData(name, "日用品", points, is_active=active), clerk
    )
    if units:
        catalogue.receive(item, clerk, quantity_=units, key=f"stock-{shop.id}-{name}")
    return item


def test_catalogue_lists_served_shops_goods_affordable_first_with_the_boundary(
    app, client, login_as, make, w
):
    award(w, w.home, 120, "美丽庭院四星", "shop-fund")
    village_shop = make.shop(w.village)
    town_shop = make.shop(town=w.village.town)
    elsewhere = make.shop(make.village(w.village.town))  # another village of the town
    other_town = make.shop(town=make.town())  # town-wide, but of another town
    closed_down = make.shop(w.village)
    closed_down.is_active = False
    staff = {s.id: make.staff(Role.CLERK, s) for s in (village_shop, town_shop, elsewhere)}
    staff[other_town.id] = make.staff(Role.CLERK, other_town)
    staff[closed_down.id] = make.staff(Role.CLERK, closed_down)
    cheap = stocked(village_shop, staff[village_shop.id], "肥皂", 30)
    exact = stocked(village_shop, staff[village_shop.id], "电风扇", 120)
    dear = stocked(village_shop, staff[village_shop.id], "电饭煲", 121)
    gone = stocked(village_shop, staff[village_shop.id], "洗衣粉", 40, units=0)
    stocked(village_shop, staff[village_shop.id], "下架的毛巾", 10, active=False)
    town_goods = stocked(town_shop, staff[town_shop.id], "大米", 200)
    stocked(elsewhere, staff[elsewhere.id], "别村的酱油", 10)
    stocked(other_town, staff[other_town.id], "外镇的食用油", 10)
    stocked(closed_down, staff[closed_down.id], "关门店的牙膏", 10)
    village_shop.exchange_days = str((local_today() + timedelta(days=1)).day)  # not today
    db.session.commit()
    login_as(w.villager)

    page = text(client.get("/me/shop"))
    for name in ("肥皂", "电风扇", "电饭煲", "洗衣粉", "大米"):
        assert name in page, name
    for name in ("下架的毛巾", "别村的酱油", "外镇的食用油", "关门店的牙膏"):
        assert name not in page, name
    assert village_shop.name in page and town_shop.name in page

    def row(item) -> str:
        return line(page, f"item-{item.id}")

    # Price equal to the balance is affordable; one point more is not.
    assert "affordable" in row(exact).split(">")[0]
    assert "too-dear" in row(dear).split(">")[0]
    assert "affordable" in row(cheap).split(">")[0] and "too-dear" in row(town_goods)
    assert translated(app, "You have enough points") in row(exact)
    assert translated(app, "%(n)s more points needed", n=1) in row(dear)
    assert translated(app, "%(n)s more points needed", n=80) in row(town_goods)
    # Affordable first within the shop, and the village's own shop before the town's.
    assert page.index(f'id="item-{gone.id}"') < page.index(f'id="item-{dear.id}"')
    assert page.index(f'id="item-{exact.id}"') < page.index(f'id="item-{dear.id}"')
    assert page.index(f'id="shop-{village_shop.id}"') < page.index(f'id="shop-{town_shop.id}"')
    # Stock and photos.
    assert translated(app, "sold out") in row(gone) and "sold-out" in row(gone).split(">")[0]
    assert translated(app, "In stock now") in row(cheap)
    # The exchange window in words and whether the shop is open now.
    village_part = page[
        page.index(f'id="shop-{village_shop.id}"') : page.index(f'id="shop-{town_shop.id}"')
    ]
    with app.test_request_context():
        window = catalogue.describe_window(village_shop)
    assert window in village_part
    assert translated(app, "Closed for exchanges now") in village_part
    assert (
        translated(app, "Open for exchanges now") in page[page.index(f'id="shop-{town_shop.id}"') :]
    )


def test_catalogue_shows_goods_photos(client, login_as, make, w):
    import io

    from PIL import Image

    shop = make.shop(w.village)
    clerk = make.staff(Role.CLERK, shop)
    item = stocked(shop, clerk, "毛巾", 10)
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, "PNG")
    catalogue.set_item_photo(item, image.getvalue(), clerk)
    db.session.commit()
    login_as(w.villager)
    page = text(client.get("/me/shop"))
    photo = f"/clerk/goods/{item.photo_token}.jpg"
    assert photo in page
    assert client.get(photo).status_code == 200


def test_catalogue_says_when_no_shop_serves_the_village(app, client, login_as, w):
    login_as(w.villager)
    assert translated(app, "No shop serves your village yet.") in text(client.get("/me/shop"))


# --- large text, high contrast --------------------------------------------------------------


def display_cookie(client):
    return client.get_cookie("display")


def test_display_switch_sets_a_year_long_cookie_and_the_class(client, login_as, w):
    login_as(w.villager)
    page = text(client.get("/me/"))
    assert 'class="large-display"' not in page and "large.css" not in page
    assert 'action="/display"' in page

    response = client.post("/display", data={"mode": "large", "next": "/me/history"})
    assert response.status_code == 302 and response.headers["Location"] == "/me/history"
    header = response.headers["Set-Cookie"]
    assert header.startswith("display=large;")
    assert "Max-Age=31536000" in header and "SameSite=Lax" in header and "Path=/" in header
    page = text(client.get("/me/history"))
    assert '<html lang="zh-CN" class="large-display">' in page
    assert "/static/css/large.css" in page
    assert 'name="mode" value="normal"' in page  # the switch now turns it off

    response = client.post("/display", data={"mode": "normal", "next": "/me/"})
    assert response.status_code == 302
    assert display_cookie(client) is None
    assert 'class="large-display"' not in text(client.get("/me/"))


def test_display_survives_logging_out_and_in_again(client, w):
    client.post("/login", data={"phone": "13900000001", "pin": PIN})
    client.post("/display", data={"mode": "large", "next": "/me/"})
    client.post("/logout")
    assert 'class="large-display"' in text(client.get("/login"))
    response = client.post("/login", data={"phone": "13900000001", "pin": PIN})
    assert response.headers["Location"] == "/"
    assert 'class="large-display"' in text(client.get("/me/"))


def test_display_works_for_anonymous_visitors(client):
    page = text(client.get("/login"))
    assert 'action="/display"' in page
    response = client.post("/display", data={"mode": "large", "next": "/login"})
    assert response.headers["Location"] == "/login"
    assert 'class="large-display"' in text(client.get("/login"))


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/me/", "/\\evil.example", "http:/evil", "me/"],
)
def test_display_refuses_an_off_site_next(client, target):
    response = client.post("/display", data={"mode": "large", "next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert display_cookie(client).value == "large"


def test_display_ignores_other_modes(client):
    client.post("/display", data={"mode": "huge", "next": "/login"})
    assert display_cookie(client) is None


def test_display_needs_the_csrf_token(app):
    strict = create_app(app_config(app.config["SQLALCHEMY_DATABASE_URI"], WTF_CSRF_ENABLED=True))
    client = strict.test_client()
    with strict.app_context():
        try:
            page = client.get("/login").get_data(as_text=True)
            response = client.post("/display", data={"mode": "large", "next": "/login"})
            assert response.status_code in (302, 400)
            assert display_cookie(client) is None
            token = CSRF_INPUT.search(page).group(1)
            response = client.post(
                "/display", data={"mode": "large", "next": "/login", "csrf_token": token}
            )
            assert response.status_code == 302
            assert display_cookie(client).value == "large"
        finally:
            db.session.remove()
            db.engine.dispose()


# --- read-aloud -----------------------------------------------------------------------------


def spoken(page: str) -> tuple[str, str]:
    match = re.search(r'data-speak-text="([^"]*)" data-speak-lang="([^"]*)"', page)
    assert match, "no read-aloud box on the page"
    return match.group(1), match.group(2)


def test_read_aloud_sentence_has_the_balances_and_latest_changes_in_chinese(
    app, client, login_as, make, w
):
    award(w, w.home, 300, "美丽庭院四星", "say-1")
    shop = make.shop(w.village)
    ledger.redeem(
        household=w.home,
        shop=shop,
        points=180,
        clerk=make.staff(Role.CLERK, shop),
        key="say-spend",
        reason="兑换",
    )
    award(w, w.home, 5, "垃圾分类合格", "say-2")
    award(w, w.home, 15, "义务保洁", "say-3", post=False)
    db.session.commit()
    login_as(w.villager)

    sentence, lang = spoken(text(client.get("/me/")))
    assert lang == "zh-CN"
    balance = ledger.balance_of(w.home)
    assert (balance.spendable, balance.honour) == (125, 305)
    assert sentence.startswith(
        translated(
            app,
            "Your household now has %(spendable)s spendable points and %(honour)s honour points.",
            spendable=125,
            honour=305,
        )
    )
    today = format_skeleton("MMMMd", local_today(), locale="zh_CN")
    assert re.fullmatch(r"\d{1,2}月\d{1,2}日", today)
    assert sentence.count(today) == 3  # the three latest changes, each with its day
    assert "义务保洁" in sentence and "垃圾分类合格" in sentence and "兑换" in sentence
    assert "美丽庭院四星" not in sentence  # only the latest three
    assert (
        translated(
            app,
            "%(date)s, %(reason)s, plus %(points)s points, waiting for approval.",
            date=today,
            reason="义务保洁",
            points=15,
        )
        in sentence
    )
    assert (
        translated(
            app,
            "%(date)s, %(reason)s, minus %(points)s points.",
            date=today,
            reason="兑换",
            points=180,
        )
        in sentence
    )


def test_read_aloud_sentence_follows_the_chosen_language(app, client, login_as, w):
    award(w, w.home, 40, "垃圾分类合格", "lang-1")
    db.session.commit()
    login_as(w.villager)
    client.post("/language", data={"locale": "en", "next": "/me/"})
    sentence, lang = spoken(text(client.get("/me/")))
    assert lang == "en"
    day = local_today()
    assert sentence == (
        "Your household now has 40 spendable points and 40 honour points. Latest changes: "
        f"{format_skeleton('MMMMd', day, locale='en')}, 垃圾分类合格, plus 40 points."
    )
    assert date(2000, day.month, 1).strftime("%B") in sentence


def test_read_aloud_with_no_history_says_so(app, client, login_as, w):
    login_as(w.villager)
    sentence, _lang = spoken(text(client.get("/me/")))
    assert translated(app, "No points yet.") in sentence
    assert "0" in sentence
