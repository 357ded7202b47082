"""Reports against figures computed by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import Category, Role, Transfer, TransferKind
from pointsmart.services import catalogue, ledger, monthly, redemptions, reports
from pointsmart.services.rankings import Scope, ScopeKind, month_period, this_month
from pointsmart.timeutil import to_local, utcnow


@pytest.fixture
def town(make):
    """Two villages; this month: awards, a deduction, a reversed award, redemptions, a void."""
    town = make.town()
    east, west = make.village(town, "东村"), make.village(town, "西村")
    g1, g2 = make.group(east, "一组"), make.group(west, "一组")
    a, b, c = make.household(g1), make.household(g1), make.household(g2)
    make.household(g1)  # earns nothing: lowers participation
    cadre, committee = make.staff(Role.CADRE, east), make.staff(Role.COMMITTEE, east)
    west_cadre, west_committee = make.staff(Role.CADRE, west), make.staff(Role.COMMITTEE, west)

    def give(household, points, category, recorder, approver, kind=TransferKind.AWARD, key=None):
        t = ledger.record(
            kind=kind,
            household=household,
            points=points,
            reason="记录",
            category=category,
            recorded_by=recorder,
            key=key or f"r-{household.id}-{points}-{category}-{kind}",
        )
        return ledger.post(t, approver)

    give(a, 30, Category.WASTE_SORTING, cadre, committee)
    give(a, 20, Category.TREE_PLANTING, cadre, committee)
    give(b, 10, Category.WASTE_SORTING, cadre, committee)
    wrong = give(b, 40, Category.COURTYARD, cadre, committee)
    ledger.reverse(wrong, committee, "记错", "rev-1")
    give(b, 5, Category.SANITATION, cadre, committee, kind=TransferKind.DEDUCTION)
    give(c, 15, Category.VOLUNTEERING, west_cadre, west_committee)
    # A pending award in the east: counted as pending only.
    ledger.record(
        kind=TransferKind.AWARD, household=a, points=7, reason="待审", recorded_by=cadre, key="p-1"
    )
    # An award posted two months ago: outside this month's report, inside the trend.
    old = give(c, 9, Category.OTHER, west_cadre, west_committee, key="old")
    old.posted_at = utcnow() - timedelta(days=62)
    old_posted_at = old.posted_at
    monthly.rebuild()

    shop = make.shop(east)
    clerk = make.staff(Role.CLERK, shop)
    soap = catalogue.create_item(shop, catalogue.ItemData("肥皂", "日用品", 4), clerk)
    catalogue.receive(soap, clerk, quantity_=10, key="soap", cost_yuan="20.00")
    sale, _ = redemptions.checkout(shop=shop, household=a, cart={soap.id: 3}, clerk=clerk, key="s1")
    redemptions.void(sale, clerk, reason="退一块", key="v1", quantities={sale.lines[0].id: 1})
    db.session.commit()
    return {
        "town": town,
        "east": east,
        "west": west,
        "g1": g1,
        "cadre": cadre,
        "committee": committee,
        "old_posted_at": old_posted_at,
    }


def test_the_towns_month_by_hand(town):
    report = reports.build(Scope(ScopeKind.TOWN, town["town"]), month_period(this_month()))
    assert report.issued_by_category == {
        Category.WASTE_SORTING: 40,
        Category.TREE_PLANTING: 20,
        Category.VOLUNTEERING: 15,
    }
    assert (report.issued, report.deducted, report.redeemed) == (75, 5, 8)
    # a: 50 - 12 + 4 = 42; b: 10 - 5 = 5; c: 15 + 9 = 24; idle: 0.
    assert report.outstanding == 71
    assert (report.households, report.participants) == (4, 3)
    assert report.participation == pytest.approx(0.75)
    assert (report.pending_count, report.pending_points) == (1, 7)
    assert [(g.name, g.units, g.points) for g in report.goods] == [("肥皂", 2, 8)]
    assert [(s.item, s.units, s.points_value, s.cost_fen) for s in report.stock] == [
        ("肥皂", 8, 32, 1600)
    ]
    cadres = {c.name: (c.recorded, c.approved) for c in report.cadres}
    assert cadres[town["cadre"].display_name] == (6, 0)  # 5 posted or reversed + 1 pending
    assert cadres[town["committee"].display_name] == (0, 5)
    assert [v[0] for v in report.villages] == ["东村", "西村"]
    assert report.villages[0][1:3] == (60, 5) and report.villages[1][1:3] == (15, 0)
    trend = {month: (i, d, r) for month, i, d, r in report.trend}
    assert trend[this_month()] == (75, 5, 8)
    old_month = to_local(town["old_posted_at"]).date().replace(day=1)
    assert trend[old_month] == (9, 0, 0)
    assert sum(i for i, _d, _r in trend.values()) == 84


def test_a_village_and_a_group_see_only_their_own(town):
    period = month_period(this_month())
    east = reports.build(Scope(ScopeKind.VILLAGE, town["east"]), period)
    assert (east.issued, east.deducted, east.redeemed, east.outstanding) == (60, 5, 8, 47)
    assert east.villages == []
    group = reports.build(Scope(ScopeKind.GROUP, town["g1"]), period)
    assert (group.issued, group.households, group.participants) == (60, 3, 2)


def test_issued_matches_the_monthly_figures(town):
    period = month_period(this_month())
    report = reports.build(Scope(ScopeKind.TOWN, town["town"]), period)
    awarded = db.session.scalar(
        sa.text("SELECT SUM(awarded) FROM household_months WHERE town_id = :t AND month = :m"),
        {"t": town["town"].id, "m": this_month()},
    )
    assert report.issued == awarded
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)) > 0
