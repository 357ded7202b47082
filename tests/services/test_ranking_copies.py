"""What rankings read beside the points, kept in step with the places: each household month's
copy of its household's place, activity and tie order (village name, group name, house number),
and each group's count of active households. Renames, moves, new house numbers, deactivation and
roster imports keep them right; check-ledger names any that is wrong.

Place names are digits plus 村/组 so that their order is the same in every collation.
"""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from pointsmart.extensions import db
from pointsmart.models import HouseholdMonth, Role, TransferKind, VillagerGroup
from pointsmart.services import admin, ledger, monthly, places, rankings, roster
from pointsmart.services.rankings import Scope, ScopeKind, Standing


def award(make, household, points: int) -> None:
    village = household.group.village
    transfer = ledger.record(
        kind=TransferKind.AWARD,
        household=household,
        points=points,
        reason="垃圾分类",
        recorded_by=make.staff(Role.CADRE, village),
        key=f"copies-{household.id}-{points}",
    )
    ledger.post(transfer, make.staff(Role.COMMITTEE, village))


def now() -> rankings.Period:
    return rankings.month_period(rankings.this_month())


def listed(scope: Scope, period: rankings.Period | None = None) -> list[tuple]:
    """Return (rank, name, village, group, house number, points) of the whole ranking."""
    rows = rankings.households(scope, period or now(), limit=100)
    return [(r.rank, r.name, r.village, r.group, r.house_number, r.points) for r in rows]


def copies(household) -> list[tuple]:
    return db.session.execute(
        sa.select(
            HouseholdMonth.town_id,
            HouseholdMonth.village_id,
            HouseholdMonth.group_id,
            HouseholdMonth.is_active,
            HouseholdMonth.village_name,
            HouseholdMonth.group_name,
            HouseholdMonth.house_number,
            HouseholdMonth.house_length,
        ).where(HouseholdMonth.household_id == household.id)
    ).all()


@pytest.fixture
def town(make):
    """Two villages of one town; 1村 has groups 1组 and 2组; everyone earns 10 this month.

    1村 1组: 甲 (no. 2), 乙 (no. 10) · 1村 2组: 丙 (no. 1) · 2村 1组: 丁 (no. 1)
    """
    town = make.town("1镇")
    one, two = make.village(town, "1村"), make.village(town, "2村")
    g11, g12, g21 = (
        places.create_group(one, "1组"),
        places.create_group(one, "2组"),
        places.create_group(two, "1组"),
    )
    h = {
        "甲": places.create_household(g11, "2", "甲"),
        "乙": places.create_household(g11, "10", "乙"),
        "丙": places.create_household(g12, "1", "丙"),
        "丁": places.create_household(g21, "1", "丁"),
    }
    for household in h.values():
        award(make, household, 10)
    db.session.flush()
    assert monthly.check() == []
    return {
        "town": town,
        "villages": (one, two),
        "groups": (g11, g12, g21),
        "admin": make.staff(Role.ADMIN, town),
        **h,
    }


def test_ties_follow_village_group_and_house_number(town):
    assert listed(Scope(ScopeKind.TOWN, town["town"])) == [
        (1, "甲", "1村", "1组", "2", 10),
        (1, "乙", "1村", "1组", "10", 10),
        (1, "丙", "1村", "2组", "1", 10),
        (1, "丁", "2村", "1组", "1", 10),
    ]
    assert copies(town["乙"]) == [
        (town["town"].id, town["villages"][0].id, town["groups"][0].id, True, "1村", "1组", "10", 2)
    ]


def test_renaming_a_village_moves_its_households_in_the_tie_order(town):
    admin.rename_village(town["admin"], town["villages"][0], "3村")
    assert listed(Scope(ScopeKind.TOWN, town["town"])) == [
        (1, "丁", "2村", "1组", "1", 10),
        (1, "甲", "3村", "1组", "2", 10),
        (1, "乙", "3村", "1组", "10", 10),
        (1, "丙", "3村", "2组", "1", 10),
    ]
    assert copies(town["甲"])[0][4] == "3村"
    assert monthly.check() == []


def test_renaming_a_group_moves_its_households_in_the_tie_order(town):
    admin.rename_group(town["admin"], town["groups"][0], "3组")
    assert listed(Scope(ScopeKind.VILLAGE, town["villages"][0])) == [
        (1, "丙", "1村", "2组", "1", 10),
        (1, "甲", "1村", "3组", "2", 10),
        (1, "乙", "1村", "3组", "10", 10),
    ]
    assert monthly.check() == []


def test_a_new_house_number_moves_the_household_in_the_tie_order(town):
    town["甲"].house_number = "11"
    db.session.flush()
    assert listed(Scope(ScopeKind.GROUP, town["groups"][0])) == [
        (1, "乙", "1村", "1组", "10", 10),
        (1, "甲", "1村", "1组", "11", 10),
    ]
    assert copies(town["甲"])[0][6:] == ("11", 2)
    assert monthly.check() == []


def test_a_household_that_moves_takes_its_points_and_its_count_along(town):
    g11, g12, _g21 = town["groups"]
    town["乙"].group = g12
    db.session.flush()
    assert listed(Scope(ScopeKind.GROUP, g12)) == [
        (1, "丙", "1村", "2组", "1", 10),
        (1, "乙", "1村", "2组", "10", 10),
    ]
    assert [r[1] for r in listed(Scope(ScopeKind.GROUP, g11))] == ["甲"]
    assert rankings.count_households(Scope(ScopeKind.GROUP, g11)) == 1
    assert rankings.count_households(Scope(ScopeKind.GROUP, g12)) == 2
    assert rankings.standing(town["乙"], Scope(ScopeKind.GROUP, g12), now()) == Standing(1, 2, 10)
    assert monthly.check() == []


def test_a_household_leaving_and_coming_back_is_counted_and_ranked(town):
    scope = Scope(ScopeKind.TOWN, town["town"])
    town["甲"].is_active = False
    db.session.flush()
    assert rankings.count_households(scope) == 3
    assert [r[1] for r in listed(scope)] == ["乙", "丙", "丁"]
    assert copies(town["甲"])[0][3] is False
    assert monthly.check() == []
    town["甲"].is_active = True
    db.session.flush()
    assert rankings.count_households(scope) == 4
    assert [r[1] for r in listed(scope)] == ["甲", "乙", "丙", "丁"]
    assert monthly.check() == []


def test_a_new_household_is_counted_in_its_group(town, make):
    g21 = town["groups"][2]
    places.create_household(g21, "2", "戊")
    db.session.flush()
    assert rankings.count_households(Scope(ScopeKind.GROUP, g21)) == 2
    assert rankings.count_households(Scope(ScopeKind.TOWN, town["town"])) == 5
    assert monthly.check() == []


def test_a_roster_import_counts_its_households(make):
    village = make.village(name="1村")
    group = make.group(village, "1组")
    actor = make.staff(Role.ADMIN, village.town)
    book = Workbook()
    book.active.append(["组别", "门牌号", "户主姓名", "姓名", "与户主关系"])
    for n in (1, 2, 3):
        book.active.append(["1组", str(n), f"户{n}", f"户{n}", "户主"])
    data = io.BytesIO()
    book.save(data)
    plan = roster.plan(village, roster.read(data.getvalue(), "花名册.xlsx"))
    assert plan.ok, [(r.line, r.problems) for r in plan.problems]
    roster.apply(plan, actor, "花名册.xlsx")
    db.session.flush()
    assert rankings.count_households(Scope(ScopeKind.GROUP, group)) == 3
    assert monthly.check() == []


def test_check_names_a_stale_copy_and_a_wrong_count(town, runner):
    db.session.execute(
        sa.update(HouseholdMonth)
        .where(HouseholdMonth.household_id == town["丁"].id)
        .values(village_name="9村")
    )
    g21 = town["groups"][2]
    db.session.execute(
        sa.update(VillagerGroup).where(VillagerGroup.id == g21.id).values(active_households=7)
    )
    month = rankings.this_month()
    assert monthly.check() == [
        f"household {town['丁'].id} month {month:%Y-%m}: stored {{'village_name': '9村'}}, "
        "the household's now {'village_name': '2村'}",
        f"group {g21.id}: stored 7 active households, counted 1",
    ]
    db.session.commit()
    result = runner.invoke(args=["check-ledger"])
    assert result.exit_code == 1
    assert "MONTHLY MISMATCH" in result.output and "'village_name': '9村'" in result.output
    assert f"group {g21.id}: stored 7 active households, counted 1" in result.output


def test_rebuilding_the_months_writes_the_copies_again(town):
    db.session.execute(sa.update(HouseholdMonth).values(group_name="9组", house_length=0))
    assert len(monthly.check()) == 4
    monthly.rebuild()
    assert monthly.check() == []
