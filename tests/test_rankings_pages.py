"""The rankings page and the villager's own month: who sees which places, what they see, and
clear answers to bad input. Expected rankings are worked out by hand and written literally."""

from __future__ import annotations

import html
import re
from datetime import date, datetime

import pytest
from flask_babel import force_locale, gettext

from pointsmart.extensions import db
from pointsmart.models import Role, TransferKind
from pointsmart.services import accounts, ledger, monthly, places, rankings
from pointsmart.timeutil import LOCAL_TZ
from tests.conftest import PASSWORD, login

TAG = re.compile(r"<[^>]+>")
ROW = re.compile(r"<tr[^>]*>(.*?)</tr>", re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def section(page: str, section_id: str) -> str:
    """Return the HTML of the <section> with that id ('' when there is none)."""
    found = re.search(rf'<section[^>]*id="{section_id}"[^>]*>(.*?)</section>', page, re.S)
    return found.group(1) if found else ""


def rows(page: str, section_id: str) -> list[list[str]]:
    """Return the cell texts of the body rows of a section's table, spaces collapsed."""
    return [
        [" ".join(TAG.sub(" ", cell).split()) for cell in CELL.findall(row)]
        for row in ROW.findall(section(page, section_id))
        if "<td" in row
    ]


def heading(page: str) -> str:
    return " ".join(TAG.sub(" ", re.search(r"<h1>(.*?)</h1>", page, re.S).group(1)).split())


def translated(app, message: str, locale: str, **values) -> str:
    with app.test_request_context(), force_locale(locale):
        return gettext(message, **values)


def months_before(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 - n
    return date(index // 12, index % 12 + 1, 1)


# --- the world ------------------------------------------------------------------------------------


@pytest.fixture
def world(make):
    """青山镇 with 东村 (1组, 2组) and 西村, and 别镇 with 外村; everything posted this month.

    东村 1组: 赵一 +30 · 钱二 (no. 2) +20 · 孙三 (no. 3) +20
    东村 2组: 李四 +40 · 周五 −5 (a deduction only) · 王八 nothing
    西村 1组: 吴六 +25          外村 1组: 郑七 +99
    """
    town, far_town = make.town("青山镇"), make.town("别镇")
    east = make.village(town, "东村", allow_negative_balance=True)
    west = make.village(town, "西村")
    far = make.village(far_town, "外村")
    e1, e2 = places.create_group(east, "1组"), places.create_group(east, "2组")
    w1, f1 = places.create_group(west, "1组"), places.create_group(far, "1组")
    h = {
        name: places.create_household(group, number, name)
        for group, number, name in [
            (e1, "1", "赵一"),
            (e1, "2", "钱二"),
            (e1, "3", "孙三"),
            (e2, "1", "李四"),
            (e2, "2", "周五"),
            (e2, "3", "王八"),
            (w1, "1", "吴六"),
            (f1, "1", "郑七"),
        ]
    }
    staff = {}
    for village in (east, west, far):
        staff[village.id] = (make.staff(Role.CADRE, village), make.staff(Role.COMMITTEE, village))
    for name, points in [("赵一", 30), ("钱二", 20), ("孙三", 20), ("李四", 40), ("吴六", 25)]:
        cadre, committee = staff[h[name].group.village_id]
        make.funded(h[name], points, recorder=cadre, approver=committee)
    cadre, committee = staff[far.id]
    make.funded(h["郑七"], 99, recorder=cadre, approver=committee)
    cadre, committee = staff[east.id]
    deduction = ledger.record(
        kind=TransferKind.DEDUCTION,
        household=h["周五"],
        points=5,
        reason="乱倒垃圾",
        recorded_by=cadre,
        key="pages-deduction",
    )
    ledger.post(deduction, committee)
    east_shop, town_shop = make.shop(east), make.shop(town=town)
    users = {
        "villager": make.villager(h["钱二"]),
        "villager 2组": make.villager(h["周五"]),
        "cadre": staff[east.id][0],
        "committee": staff[east.id][1],
        "group cadre": make.staff(Role.CADRE, e2),
        "admin": make.staff(Role.ADMIN, town),
        "clerk": make.staff(Role.CLERK, east_shop),
        "town clerk": make.staff(Role.CLERK, town_shop),
        "admin of another town": make.staff(Role.ADMIN, far_town),
        "cadre of another town": staff[far.id][0],
    }
    db.session.commit()
    return {
        "town": town,
        "far_town": far_town,
        "east": east,
        "west": west,
        "far": far,
        "e1": e1,
        "e2": e2,
        "w1": w1,
        "f1": f1,
        "users": users,
        "staff": staff,
        **h,
    }


def open_as(client, user, url: str, locale: str = "en"):
    login(client, user)
    with client.session_transaction() as flask_session:
        flask_session["locale"] = locale
    return client.get(url)


# --- what each role may open ----------------------------------------------------------------------

#: (user, scope, place) → status. Places: group e1/e2 of 东村, w1 of 西村, f1 of 外村 (another town).
ACCESS = [
    # A villager of 东村 1组: their group, village and town only.
    ("villager", "group", "e1", 200),
    ("villager", "village", "east", 200),
    ("villager", "town", "town", 200),
    ("villager", "group", "e2", 404),
    ("villager", "village", "west", 404),
    ("villager", "group", "w1", 404),
    ("villager", "town", "far_town", 404),
    ("villager", "village", "far", 404),
    # A cadre and a committee member of 东村: its groups, the village, their town.
    ("cadre", "group", "e1", 200),
    ("cadre", "group", "e2", 200),
    ("cadre", "village", "east", 200),
    ("cadre", "town", "town", 200),
    ("cadre", "village", "west", 404),
    ("cadre", "group", "w1", 404),
    ("cadre", "town", "far_town", 404),
    ("committee", "group", "e2", 200),
    ("committee", "town", "town", 200),
    ("committee", "village", "west", 404),
    # A grid officer of 东村 2组: that group, and like its villagers the village and town.
    ("group cadre", "group", "e2", 200),
    ("group cadre", "village", "east", 200),
    ("group cadre", "town", "town", 200),
    ("group cadre", "group", "e1", 404),
    ("group cadre", "village", "west", 404),
    # The town's administrator: the town and everything in it.
    ("admin", "town", "town", 200),
    ("admin", "village", "west", 200),
    ("admin", "group", "w1", 200),
    ("admin", "group", "e1", 200),
    ("admin", "town", "far_town", 404),
    ("admin", "village", "far", 404),
    # A clerk: the villages their shop serves (and their groups), nothing above.
    ("clerk", "village", "east", 200),
    ("clerk", "group", "e1", 200),
    ("clerk", "town", "town", 404),
    ("clerk", "village", "west", 404),
    ("town clerk", "town", "town", 200),
    ("town clerk", "village", "west", 200),
    ("town clerk", "village", "far", 404),
    # Staff of another town see nothing of this one.
    ("admin of another town", "town", "town", 404),
    ("admin of another town", "village", "east", 404),
    ("cadre of another town", "village", "east", 404),
    ("cadre of another town", "group", "e1", 404),
    ("cadre of another town", "village", "far", 200),
]


@pytest.mark.parametrize(("who", "kind", "place", "status"), ACCESS)
def test_each_role_opens_its_own_places_and_nothing_else(app, world, who, kind, place, status):
    client = app.test_client()
    response = open_as(client, world["users"][who], f"/rankings?scope={kind}&id={world[place].id}")
    assert response.status_code == status
    if status == 404:  # nothing given away: not the place's name, not a ranking
        text = page_text(response)
        assert world[place].name not in text
        assert 'class="ranking"' not in text


def test_an_unknown_place_answers_like_a_forbidden_one(app, world):
    client = app.test_client()
    for url in (
        "/rankings?scope=village&id=987654",
        "/rankings?scope=village&id=abc",
        f"/rankings?scope=town&id={world['far_town'].id}",
    ):
        response = open_as(client, world["users"]["villager"], url)
        assert response.status_code == 404, url
        assert "Traceback" not in page_text(response)


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("villager", "Rankings · 东村"),
        ("villager 2组", "Rankings · 东村"),
        ("cadre", "Rankings · 东村"),
        ("committee", "Rankings · 东村"),
        ("group cadre", "Rankings · 东村"),
        ("admin", "Rankings · 青山镇"),
        ("clerk", "Rankings · 东村"),
        ("town clerk", "Rankings · 青山镇"),
    ],
)
def test_without_arguments_each_role_sees_its_own_place(app, world, who, expected):
    response = open_as(app.test_client(), world["users"][who], "/rankings")
    assert response.status_code == 200
    assert heading(page_text(response)) == expected


def test_scope_without_an_id_means_the_users_own_place(app, world):
    client = app.test_client()
    response = open_as(client, world["users"]["villager"], "/rankings?scope=group")
    assert heading(page_text(response)) == "Rankings · 东村1组"
    response = client.get("/rankings?scope=town")
    assert heading(page_text(response)) == "Rankings · 青山镇"


def test_an_account_without_a_place_has_no_rankings(app, world):
    nobody = accounts.create_staff("nobody", "无角色", PASSWORD)
    db.session.commit()
    assert open_as(app.test_client(), nobody, "/rankings").status_code == 404


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get("/rankings")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


# --- what the page shows --------------------------------------------------------------------------


def test_a_village_shows_its_households_ranked_and_its_groups_both_ways(app, world):
    response = open_as(app.test_client(), world["users"]["villager"], "/rankings")
    page = page_text(response)
    # rank, household, group and house number, points, awarded, deducted
    assert rows(page, "households") == [
        ["1", "李四", "2组 No. 1", "40", "40", "0"],
        ["2", "赵一", "1组 No. 1", "30", "30", "0"],
        ["3", "钱二 my household", "1组 No. 2", "20", "20", "0"],
        ["3", "孙三", "1组 No. 3", "20", "20", "0"],
        ["5", "王八", "2组 No. 3", "0", "0", "0"],
        ["6", "周五", "2组 No. 2", "-5", "0", "5"],
    ]
    assert 'class="mine"' in section(page, "households")
    assert (
        "Equal points share a rank; tied households are listed by group and house number." in page
    )
    # 1组: 70 / 3 = 23.3, 3 of 3 took part; 2组: 35 / 3 = 11.7, 1 of 3.
    assert rows(page, "places-by-average") == [
        ["1", "1组", "3", "70", "23.3"],
        ["2", "2组", "3", "35", "11.7"],
    ]
    assert rows(page, "places-by-participation") == [
        ["1", "1组", "3 / 3", "100%"],
        ["2", "2组", "1 / 3", "33%"],
    ]
    # The villager may open their own group's ranking, not the other group's.
    links = section(page, "places-by-average")
    assert f"id={world['e1'].id}" in links and f"id={world['e2'].id}" not in links
    assert "6 households" in page


def test_a_town_shows_households_by_village_and_its_villages_ranked(app, world):
    url = f"/rankings?scope=town&id={world['town'].id}"
    page = page_text(open_as(app.test_client(), world["users"]["admin"], url))
    assert [r[:4] for r in rows(page, "households")] == [
        ["1", "李四", "东村 2组 No. 1", "40"],
        ["2", "赵一", "东村 1组 No. 1", "30"],
        ["3", "吴六", "西村 1组 No. 1", "25"],
        ["4", "钱二", "东村 1组 No. 2", "20"],
        ["4", "孙三", "东村 1组 No. 3", "20"],
        ["6", "王八", "东村 2组 No. 3", "0"],
        ["7", "周五", "东村 2组 No. 2", "-5"],
    ]
    assert "tied households are listed by village, group and house number" in page
    # 东村: 105 / 6 = 17.5, 4 of 6 (67 %); 西村: 25 / 1, 1 of 1.
    assert rows(page, "places-by-average") == [
        ["1", "西村", "1", "25", "25.0"],
        ["2", "东村", "6", "105", "17.5"],
    ]
    assert rows(page, "places-by-participation") == [
        ["1", "西村", "1 / 1", "100%"],
        ["2", "东村", "4 / 6", "67%"],
    ]
    assert "郑七" not in page  # another town's household


def test_a_group_shows_its_households_only(app, world):
    url = f"/rankings?scope=group&id={world['e1'].id}"
    page = page_text(open_as(app.test_client(), world["users"]["cadre"], url))
    assert [r[:4] for r in rows(page, "households")] == [
        ["1", "赵一", "1组 No. 1", "30"],
        ["2", "钱二", "1组 No. 2", "20"],
        ["2", "孙三", "1组 No. 3", "20"],
    ]
    assert section(page, "places-by-average") == ""


def test_periods_come_from_the_chooser_arguments(app, world):
    """A back-dated award shows in its month, its range and its year, not in this month."""
    last = months_before(rankings.this_month(), 1)
    cadre, committee = world["staff"][world["east"].id]
    late = ledger.record(
        kind=TransferKind.AWARD,
        household=world["王八"],
        points=7,
        reason="植树",
        recorded_by=cadre,
        key="pages-late",
    )
    ledger.post(late, committee)
    late.posted_at = datetime(last.year, last.month, 10, 12, tzinfo=LOCAL_TZ)
    monthly.rebuild()
    db.session.commit()
    client = app.test_client()
    base = f"/rankings?scope=group&id={world['e2'].id}"

    def points(url):
        response = open_as(client, world["users"]["cadre"], url)
        assert response.status_code == 200, url
        return {r[1]: r[3] for r in rows(page_text(response), "households")}

    assert points(base)["王八"] == "0"
    assert points(f"{base}&period=month&month={last:%Y-%m}") == {
        "王八": "7",
        "李四": "0",
        "周五": "0",
    }
    span = f"&period=custom&from={last:%Y-%m}&to={rankings.this_month():%Y-%m}"
    assert points(base + span) == {"李四": "40", "王八": "7", "周五": "-5"}
    assert points(f"{base}&period=year&year={last.year}")["王八"] == "7"
    quarter = (last.month + 2) // 3
    assert points(f"{base}&period=quarter&year={last.year}&quarter={quarter}")["王八"] == "7"


def test_the_page_states_its_period_and_pages_through_fifty_at_a_time(app, make):
    village = make.village(make.town(), "大村")
    group = places.create_group(village, "1组")
    households = [places.create_household(group, str(n), f"户{n}") for n in range(1, 56)]
    make.funded(households[54], 5)  # 户55 leads; the other 54 share rank 2
    cadre = make.staff(Role.CADRE, village)
    db.session.commit()
    client = app.test_client()
    first = page_text(open_as(client, cadre, "/rankings"))
    listed = rows(first, "households")
    assert len(listed) == 50
    assert listed[0][:2] == ["1", "户55"] and listed[1][:2] == ["2", "户1"]
    assert "Page 1 of 2" in first
    assert re.search(rf'id="period-label">{rankings.this_month():%Y-%m}<', first)
    url = f"/rankings?scope=village&id={village.id}&page=2"
    second = page_text(client.get(url))
    assert [r[:2] for r in rows(second, "households")] == [
        ["2", "户50"],
        ["2", "户51"],
        ["2", "户52"],
        ["2", "户53"],
        ["2", "户54"],
    ]
    assert "Page 2 of 2" in second
    # Past the end or nonsense: the nearest page, not an error.
    assert len(rows(page_text(client.get(url.replace("page=2", "page=99"))), "households")) == 5
    assert len(rows(page_text(client.get(url.replace("page=2", "page=abc"))), "households")) == 50


# --- bad input: a clear answer in the user's language, never a stack trace -----------------------


def bad_inputs(world) -> list[tuple[str, str]]:
    now = rankings.this_month()
    next_month = date(now.year + now.month // 12, now.month % 12 + 1, 1)
    v = f"scope=village&id={world['east'].id}"
    return [
        (f"{v}&period=month&month=2026-13", "The month must be a month like 2026-11."),
        (f"{v}&period=month&month=abc", "The month must be a month like 2026-11."),
        (
            f"{v}&period=month&month={next_month:%Y-%m}",
            "This period has not begun yet; choose the current month or an earlier one.",
        ),
        (
            f"{v}&period=custom&from=2016-01&to=2025-12",
            "A range may span at most 24 months; choose a shorter one.",
        ),
        (f"{v}&period=quarter&year=2025&quarter=5", "The quarter must be 1, 2, 3 or 4."),
        (f"{v}&period=year&year=20x6", "The year must be four digits, like 2026."),
        (f"{v}&period=fortnight", "Choose a month, a quarter, a year or a range of months."),
        ("scope=county&id=1", "Choose a group, a village or a town."),
    ]


def test_bad_input_answers_400_with_a_clear_message_and_the_chooser(app, world):
    client = app.test_client()
    for query, message in bad_inputs(world):
        response = open_as(client, world["users"]["cadre"], f"/rankings?{query}")
        page = page_text(response)
        assert response.status_code == 400, query
        assert re.search(r'id="ranking-error">\s*' + re.escape(message), page), query
        assert 'class="card no-print period-chooser"' in page  # so it can be put right
        assert 'class="ranking"' not in page
        assert "Traceback" not in page


def test_bad_input_is_explained_in_the_users_language(app, world):
    client = app.test_client()
    # Messages that are whole catalogue entries (composed ones are checked in English above).
    whole = [(q, m) for q, m in bad_inputs(world) if translated(app, m, "zh_CN") != m]
    assert len(whole) >= 3
    for query, message in whole[:3]:
        response = open_as(client, world["users"]["villager"], f"/rankings?{query}", "zh_CN")
        assert response.status_code == 400
        page = page_text(response)
        assert '<html lang="zh-CN">' in page
        expected = translated(app, message, "zh_CN")
        assert re.search(r'id="ranking-error">\s*' + re.escape(expected), page), query


def test_the_chooser_keeps_what_was_typed_so_it_can_be_fixed(app, world):
    response = open_as(
        app.test_client(),
        world["users"]["cadre"],
        f"/rankings?scope=village&id={world['east'].id}&period=year&year=20x6",
    )
    assert 'name="year" value="20x6"' in page_text(response)


# --- layout: one Rankings link, phone first, printing without the chooser ------------------------


def test_the_top_navigation_links_to_the_rankings_for_logged_in_users(app, world, client):
    assert 'href="/rankings"' not in page_text(client.get("/login"))
    page = page_text(open_as(client, world["users"]["admin"], "/admin/"))
    header = re.search(r'<header class="topbar">(.*?)</header>', page, re.S).group(1)
    assert '<a href="/rankings">Rankings</a>' in header


def test_the_page_prints_on_a4_without_the_chooser(app, world, client):
    page = page_text(open_as(client, world["users"]["villager"], "/rankings"))
    assert "css/rankings.css" in page
    assert 'class="card no-print period-chooser"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    with client.get("/static/css/rankings.css") as response:
        css = response.get_data(as_text=True)
    printing = css[css.index("@media print") :]
    assert "size: A4" in printing
    assert ".period-chooser" in printing.split("display: none")[0]
    assert "<script" not in section(page, "households")


# --- the villager's own month on the home page ---------------------------------------------------


def test_the_villager_home_shows_this_months_points_and_ranks(app, world, client):
    page = page_text(open_as(client, world["users"]["villager"], "/me/"))
    mine = section(page, "my-month")
    assert re.search(r'id="month-points">20<', mine)
    # 钱二: 20 points, tied second in 1组 (of 3) and tied third in 东村 (of 6).
    assert "No. 2 of 3 households" in TAG.sub("", mine)
    assert "No. 3 of 6 households" in TAG.sub("", mine)
    assert 'href="/rankings"' in mine


def test_the_villager_home_ranks_a_household_with_deductions_last(app, world, client):
    page = page_text(open_as(client, world["users"]["villager 2组"], "/me/"))
    mine = section(page, "my-month")
    assert re.search(r'id="month-points">-5<', mine)
    assert "No. 3 of 3 households" in TAG.sub("", mine)
    assert "No. 6 of 6 households" in TAG.sub("", mine)


def test_the_villager_home_ranks_read_like_the_notice_board_in_chinese(app, world, client):
    page = page_text(open_as(client, world["users"]["villager"], "/me/", "zh_CN"))
    expected = translated(app, "No. %(rank)s of %(of)s households", "zh_CN", rank=2, of=3)
    assert expected in TAG.sub("", section(page, "my-month"))
