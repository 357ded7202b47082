"""Each role's home page shows that role's data, and only the data of its scope."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_babel import gettext

from pointsmart.extensions import db
from pointsmart.models import Role, Transfer, TransferKind, TransferStatus
from pointsmart.services import ledger, places
from pointsmart.timeutil import utcnow

ROW = re.compile(r"<tr>(.*?)</tr>", re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
TAG = re.compile(r"<[^>]+>")
ENTRY = re.compile(r'<li class="entry[^"]*">(.*?)</li>', re.S)


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    with app.app_context(), app.test_request_context():
        return gettext(message, **values)


def table_rows(page: str) -> list[list[str]]:
    """Return the body rows of the page's tables as lists of cell texts (links unwrapped)."""
    return [
        [TAG.sub("", cell).strip() for cell in CELL.findall(row)]
        for row in ROW.findall(page)
        if "<td" in row
    ]


def entries(page: str) -> list[str]:
    return ENTRY.findall(page)


def award(household, recorder, points=10, reason="垃圾分类", key=None):
    return ledger.record(
        kind=TransferKind.AWARD,
        household=household,
        points=points,
        reason=reason,
        recorded_by=recorder,
        key=key or f"award-{reason}-{household.id}-{points}",
    )


# --- villager ---------------------------------------------------------------------------------


def test_villager_sees_balances_and_why_they_changed(make, client, login_as):
    village = make.village()
    household = make.household(make.group(village))
    cadre = make.staff(Role.CADRE, village)
    cadre.display_name = "李网格"
    committee = make.staff(Role.COMMITTEE, village)
    committee.display_name = "王主任"
    make.funded(household, 30, recorder=cadre, approver=committee)
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    ledger.redeem(
        household=household, shop=shop, points=12, clerk=clerk, key="sale-1", reason="兑换洗衣粉"
    )
    neighbour = make.household(household.group)
    make.funded(neighbour, 7, recorder=cadre, approver=committee)
    award(neighbour, cadre, reason="邻居的植树")
    user = make.villager(household)
    db.session.commit()

    login_as(user)
    response = client.get("/me/")
    assert response.status_code == 200
    page = text(response)
    assert re.search(r'id="spendable">\s*18\s*<', page)
    assert re.search(r'id="honour">\s*30\s*<', page)
    assert household.name in page

    lines = entries(page)
    earned = [line for line in lines if "垃圾分类" in line]
    assert len(earned) == 1
    assert "李网格" in earned[0] and "王主任" in earned[0] and "+30" in earned[0]
    spent = [line for line in lines if "兑换洗衣粉" in line]
    assert len(spent) == 1 and "-12" in spent[0]
    assert "邻居的植树" not in page
    assert len(lines) == 2


# --- cadre ------------------------------------------------------------------------------------


@pytest.fixture
def cadre_world(make):
    """Village A with two groups, village B elsewhere; households with telling names."""
    village = make.village(name="青山村")
    east, west = make.group(village, "东组"), make.group(village, "西组")
    other_village = make.village(name="柳溪村")
    far = make.group(other_village, "远组")
    world = {
        "east": places.create_household(east, "E-101", "张建国", head_phone="13811112222"),
        "east2": places.create_household(east, "E-102", "赵秀英"),
        "west": places.create_household(west, "W-201", "王桂兰"),
        "far": places.create_household(far, "F-301", "刘德胜", head_phone="13899990000"),
        "village": village,
        "east_group": east,
    }
    make.funded(world["east"], 25)
    db.session.commit()
    return world


def households_listed(client, query: str = "") -> set[str]:
    response = client.get("/cadre/", query_string={"q": query} if query else None)
    assert response.status_code == 200
    return {row[2] for row in table_rows(text(response))}


def test_village_cadre_sees_only_their_village(make, client, login_as, cadre_world):
    login_as(make.staff(Role.CADRE, cadre_world["village"]))
    assert households_listed(client) == {"张建国", "赵秀英", "王桂兰"}
    rows = table_rows(text(client.get("/cadre/")))
    assert ["东组", "E-101", "张建国", "25"] in rows


def test_group_cadre_sees_only_their_group(make, client, login_as, cadre_world):
    login_as(make.staff(Role.CADRE, cadre_world["east_group"]))
    assert households_listed(client) == {"张建国", "赵秀英"}


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("张建国", {"张建国"}),  # household name
        ("建国", {"张建国"}),  # part of a name
        ("1381111", {"张建国"}),  # part of a member's phone
        ("W-201", {"王桂兰"}),  # house number
        ("东组", {"张建国", "赵秀英"}),  # group
        ("刘德胜", set()),  # exists, but in another village
        ("13899990000", set()),
        ("没有这个人", set()),
    ],
)
def test_cadre_search(make, client, login_as, cadre_world, query, found):
    login_as(make.staff(Role.CADRE, cadre_world["village"]))
    assert households_listed(client, query) == found


def test_cadre_search_finds_other_members_by_name(make, client, login_as, cadre_world):
    places.add_member(cadre_world["west"], "王小明", phone="13700001111")
    db.session.commit()
    login_as(make.staff(Role.CADRE, cadre_world["village"]))
    assert households_listed(client, "王小明") == {"王桂兰"}
    assert households_listed(client, "13700001111") == {"王桂兰"}


# --- committee --------------------------------------------------------------------------------


@pytest.fixture
def approvals(make):
    """A pending award in our village and one in another village."""
    village = make.village()
    household = make.household(make.group(village))
    cadre = make.staff(Role.CADRE, village)
    committee = make.staff(Role.COMMITTEE, village)
    other_village = make.village()
    other_household = make.household(make.group(other_village))
    ours = award(household, cadre, points=15, reason="义务保洁")
    theirs = award(other_household, make.staff(Role.CADRE, other_village), reason="外村的植树")
    db.session.commit()
    return {
        "village": village,
        "household": household,
        "committee": committee,
        "ours": ours,
        "theirs": theirs,
    }


def status_of(transfer) -> TransferStatus:
    db.session.expire_all()
    return db.session.get(Transfer, transfer.id).status


def test_committee_sees_pending_awards_of_their_village_only(client, login_as, approvals):
    login_as(approvals["committee"])
    response = client.get("/committee/")
    assert response.status_code == 200
    page = text(response)
    assert "义务保洁" in page
    assert "外村的植树" not in page
    assert f'action="/committee/transfers/{approvals["ours"].id}/approve"' in page
    assert f"/committee/transfers/{approvals['theirs'].id}/" not in page


def test_committee_approves_and_the_balance_moves(app, client, login_as, approvals):
    household = approvals["household"]
    login_as(approvals["committee"])
    response = client.post(
        f"/committee/transfers/{approvals['ours'].id}/approve", follow_redirects=True
    )
    assert response.status_code == 200
    assert response.request.path == "/committee/"
    assert translated(
        app, "Approved: %(reason)s for %(household)s.", reason="义务保洁", household=household.name
    ) in text(response)
    assert status_of(approvals["ours"]) is TransferStatus.POSTED
    assert ledger.balance_of(household) == ledger.Balance(spendable=15, honour=15)
    assert "义务保洁" not in text(client.get("/committee/"))


def test_committee_rejects_with_a_reason(client, login_as, approvals):
    login_as(approvals["committee"])
    response = client.post(
        f"/committee/transfers/{approvals['ours'].id}/reject",
        data={"reason": "照片看不清"},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert status_of(approvals["ours"]) is TransferStatus.VOIDED
    assert db.session.get(Transfer, approvals["ours"].id).void_reason == "照片看不清"
    assert ledger.balance_of(approvals["household"]) == ledger.Balance(0, 0)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_rejecting_without_a_reason_changes_nothing(app, client, login_as, approvals, reason):
    login_as(approvals["committee"])
    data = {} if reason is None else {"reason": reason}
    response = client.post(
        f"/committee/transfers/{approvals['ours'].id}/reject", data=data, follow_redirects=True
    )
    assert response.status_code == 200
    page = text(response)
    assert (
        translated(app, "Please give a reason for rejection.") in page
        or translated(app, "Please give a reason.") in page
    )
    assert status_of(approvals["ours"]) is TransferStatus.PENDING


def test_committee_cannot_approve_their_own_record(app, client, login_as, approvals):
    committee = approvals["committee"]
    own = award(approvals["household"], committee, points=40, reason="自己记的分")
    db.session.commit()
    login_as(committee)
    page = text(client.get("/committee/"))
    assert "自己记的分" in page
    assert f'action="/committee/transfers/{own.id}/approve"' not in page
    assert f'action="/committee/transfers/{own.id}/reject"' in page

    response = client.post(f"/committee/transfers/{own.id}/approve", follow_redirects=True)
    assert response.status_code == 200
    assert translated(
        app, "You recorded this yourself; another committee member must approve it."
    ) in text(response)
    assert status_of(own) is TransferStatus.PENDING
    assert ledger.balance_of(approvals["household"]) == ledger.Balance(0, 0)


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_another_villages_transfer_is_not_found(client, login_as, approvals, action):
    login_as(approvals["committee"])
    theirs = approvals["theirs"].id
    response = client.post(f"/committee/transfers/{theirs}/{action}", data={"reason": "不对"})
    assert response.status_code == 404
    assert status_of(approvals["theirs"]) is TransferStatus.PENDING
    missing = client.post(f"/committee/transfers/{theirs + 1000}/{action}", data={"reason": "x"})
    assert missing.status_code == 404


# --- clerk ------------------------------------------------------------------------------------


def test_clerk_sees_todays_redemptions_of_their_shop_only(make, client, login_as):
    from pointsmart.models import Redemption
    from pointsmart.services import catalogue, redemptions

    village = make.village()
    household = make.household(make.group(village))
    make.funded(household, 100)
    mine, other = make.shop(village), make.shop(village)
    clerk, other_clerk = make.staff(Role.CLERK, mine), make.staff(Role.CLERK, other)

    def sell(shop, who, name, points=5):
        item = catalogue.create_item(shop, catalogue.ItemData(name, "日用品", points), who)
        catalogue.receive(item, who, quantity_=10, key=f"in-{name}")
        redemption, _ = redemptions.checkout(
            shop=shop, household=household, cart={item.id: 1}, clerk=who, key=name
        )
        return redemption

    sell(mine, clerk, "肥皂")
    sell(other, other_clerk, "毛巾")
    old = sell(mine, clerk, "食用油")
    db.session.execute(
        sa.update(Redemption)
        .where(Redemption.id == old.id)
        .values(created_at=utcnow() - timedelta(days=1, hours=1))
    )
    db.session.commit()

    login_as(clerk)
    response = client.get("/clerk/", follow_redirects=True)
    assert response.status_code == 200
    page = text(response)
    assert mine.name in page
    lines = entries(page)
    assert len(lines) == 1
    assert "肥皂×1" in lines[0] and household.name in lines[0] and "−5" in lines[0]
    assert "毛巾" not in page
    assert "食用油" not in page


# --- admin ------------------------------------------------------------------------------------


def test_admin_sees_villages_with_group_and_household_counts(make, client, login_as):
    town = make.town("清水镇")
    busy = make.village(town, "青山村")
    for name, households in (("一组", 2), ("二组", 1)):
        group = make.group(busy, name)
        for _ in range(households):
            make.household(group)
    make.group(make.village(town, "柳溪村"), "空组")
    make.village(town, "石桥村")
    elsewhere = make.village(make.town("别的镇"), "外镇村")
    make.household(make.group(elsewhere))
    admin = make.staff(Role.ADMIN, town)
    db.session.commit()

    login_as(admin)
    response = client.get("/admin/")
    assert response.status_code == 200
    page = text(response)
    assert "清水镇" in page
    # The first three columns; the last links each village's roster page.
    assert sorted(row[:3] for row in table_rows(page)) == sorted(
        [["青山村", "2", "3"], ["柳溪村", "1", "0"], ["石桥村", "0", "0"]]
    )
    assert "外镇村" not in page and "别的镇" not in page
