"""A household's paper statement: who may open it, what it says, and what it never shows."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pytest
from flask_babel import force_locale, gettext

from pointsmart.extensions import db
from pointsmart.models import Category, LimitPeriod, Role, TransferKind
from pointsmart.services import awards, ledger, places, rules
from pointsmart.services.rules import RuleData
from pointsmart.timeutil import local_today
from tests.conftest import PASSWORD, login

PHONES = ("13811112222", "13833334444", "13855556666")


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    with app.test_request_context(), force_locale("zh_CN"):
        return gettext(message, **values)


@dataclass
class World:
    town: object
    village: object
    group: object
    other_group: object
    home: object
    shop: object
    town_shop: object
    cadre: object
    committee: object


@pytest.fixture
def w(make) -> World:
    town = make.town("青山镇")
    village = make.village(town, "柳溪村")
    group = make.group(village, "东组")
    home = make.household(group, name="张桂兰", phone=PHONES[0])
    home.house_number = "17"
    for name, phone in (("李大山", PHONES[1]), ("李小花", PHONES[2])):
        places.add_member(home, name, phone=phone).id_last4 = "9X12"
    world = World(
        town=town,
        village=village,
        group=group,
        other_group=make.group(village, "西组"),
        home=home,
        shop=make.shop(village),
        town_shop=make.shop(town=town),
        cadre=make.staff(Role.CADRE, village),
        committee=make.staff(Role.COMMITTEE, village),
    )
    db.session.commit()
    return world


def record(w: World, points: int, reason: str, key: str, kind=TransferKind.AWARD, post=True):
    transfer = ledger.record(
        kind=kind,
        household=w.home,
        points=points,
        reason=reason,
        category=Category.WASTE_SORTING,
        recorded_by=w.cadre,
        key=key,
    )
    return ledger.post(transfer, w.committee) if post else transfer


def statement_of(app, user, household_id: int):
    client = app.test_client()
    login(client, user)
    return client.get(f"/households/{household_id}/statement")


# --- who may open it ------------------------------------------------------------------------


def test_cadres_committee_and_serving_clerks_may_open_it(app, make, w):
    allowed = {
        "village cadre": w.cadre,
        "group cadre": make.staff(Role.CADRE, w.group),
        "committee member": w.committee,
        "clerk of the village's shop": make.staff(Role.CLERK, w.shop),
        "clerk of the town's shop": make.staff(Role.CLERK, w.town_shop),
    }
    db.session.commit()
    for label, user in allowed.items():
        response = statement_of(app, user, w.home.id)
        assert response.status_code == 200, label
        assert "张桂兰" in text(response), label
        assert "no-store" in response.headers["Cache-Control"], label


def test_everyone_else_gets_404(app, make, w):
    other_village = make.village(w.town)
    other_town = make.town()
    own_villager = make.villager(w.home, phone="13999990000")
    neighbour = make.household(w.group)
    refused = {
        "the household's own villager": own_villager,
        "a neighbour's villager": make.villager(neighbour, phone="13999990001"),
        "cadre of another group": make.staff(Role.CADRE, w.other_group),
        "cadre of another village": make.staff(Role.CADRE, other_village),
        "committee of another village": make.staff(Role.COMMITTEE, other_village),
        "clerk of another village's shop": make.staff(Role.CLERK, make.shop(other_village)),
        "clerk of another town's shop": make.staff(Role.CLERK, make.shop(town=other_town)),
        "the town's administrator": make.staff(Role.ADMIN, w.town),
    }
    db.session.commit()
    for label, user in refused.items():
        assert statement_of(app, user, w.home.id).status_code == 404, label
    assert statement_of(app, w.cadre, 999_999).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(client, w):
    response = client.get(f"/households/{w.home.id}/statement")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- what it says ---------------------------------------------------------------------------


def test_statement_shows_place_people_balances_year_and_latest_lines(app, make, w):
    clerk = make.staff(Role.CLERK, w.shop)
    for n in range(28):
        record(w, 2, f"第{n:02d}次垃圾分类", f"st-{n}")
    deduction = record(w, 6, "乱倒垃圾", "st-deduct", kind=TransferKind.DEDUCTION)
    ledger.redeem(
        household=w.home, shop=w.shop, points=10, clerk=clerk, key="st-buy", reason="兑换肥皂"
    )
    mistaken = record(w, 9, "植树造林", "st-wrong")
    ledger.reverse(mistaken, w.committee, "植树造林记错，冲正", key="st-rev")
    record(w, 15, "义务保洁", "st-pending", post=False)
    rule = rules.create(
        RuleData(
            "焚烧秸秆",
            Category.SANITATION,
            -20,
            limit_count=2,
            limit_period=LimitPeriod.YEAR,
            warning_first=True,
        ),
        w.committee,
        village=w.village,
    )
    awards.record_by_rule(household=w.home, rule=rule, recorded_by=w.cadre, key="st-warn")
    db.session.commit()
    assert deduction.status.value == "posted"
    balance = ledger.balance_of(w.home)
    assert (balance.spendable, balance.honour) == (56 - 6 - 10, 56 - 6)

    page = text(statement_of(app, w.cadre, w.home.id))
    assert "青山镇" in page and "柳溪村" in page and "东组" in page
    assert translated(app, "No. %(n)s", n="17") in page
    assert re.search(r'id="household-name">张桂兰<', page)
    members = re.search(r'id="members">([^<]*)<', page).group(1)
    assert members == "张桂兰、李大山、李小花"
    assert re.search(r'id="spendable">40<', page) and re.search(r'id="honour">50<', page)
    # This year: 56 awarded, 6 deducted; the reversed award counts for nothing.
    assert re.search(r'id="year-points">\+50<', page)
    assert translated(app, "Earned in %(year)s", year=local_today().year) in page

    rows = re.findall(r"<tr class=\"([^\"]+)\">(.*?)</tr>", page, re.S)
    assert len(rows) == 25  # one A4 page's worth, newest first
    first = [re.sub(r"\s+", " ", cells) for _cls, cells in rows[:4]]
    assert "焚烧秸秆" in first[0] and translated(app, "Warning") in first[0] and ">0<" in first[0]
    assert "义务保洁" in first[1] and "+15" in first[1]
    assert translated(app, "Pending approval") in first[1]
    assert "植树造林记错，冲正" in first[2] and "-9" in first[2]
    assert "植树造林" in first[3] and "+9" in first[3]
    assert any("兑换肥皂" in cells and "-10" in cells for _cls, cells in rows)
    assert any("乱倒垃圾" in cells and "-6" in cells for _cls, cells in rows)
    assert local_today().isoformat() in rows[0][1]
    assert "第00次垃圾分类" not in page  # the oldest do not fit
    assert translated(app, "Only the latest %(n)s records fit on this page.", n=25) in page

    assert w.cadre.display_name in page  # printed by
    assert local_today().isoformat() in page[page.index('id="printed"') :]
    assert translated(app, "If anything here looks wrong, please ask your village cadre.") in page


def test_statement_never_shows_phone_or_id_numbers(app, make, w):
    record(w, 5, "垃圾分类合格", "ph-1")
    make.villager(w.home, phone=PHONES[0])
    clerk = make.staff(Role.CLERK, w.shop)
    db.session.commit()
    for user in (w.cadre, clerk):
        page = text(statement_of(app, user, w.home.id))
        for phone in PHONES:
            assert phone not in page and f"{phone[:3]}****" not in page
        assert "9X12" not in page and "tel:" not in page


def test_cadre_household_page_and_clerk_cart_link_to_the_statement(app, make, w):
    url = f"/households/{w.home.id}/statement"
    cadre = app.test_client()
    login(cadre, w.cadre)
    assert f'href="{url}"' in text(cadre.get(f"/cadre/households/{w.home.id}"))

    clerk_user = make.staff(Role.CLERK, w.shop)
    db.session.commit()
    clerk = app.test_client()
    login(clerk, clerk_user)
    response = clerk.post(f"/clerk/shops/{w.shop.id}/households/{w.home.id}")
    assert response.status_code == 302
    cart = text(clerk.get(response.headers["Location"]))
    assert f'href="{url}"' in cart
    assert clerk.get(url).status_code == 200


def test_a_staff_login_through_the_form_reaches_it(client, w):
    client.post("/login/staff", data={"username": w.committee.username, "password": PASSWORD})
    assert client.get(f"/households/{w.home.id}/statement").status_code == 200
