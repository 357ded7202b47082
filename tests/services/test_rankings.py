"""Rankings against hand-computed expectations: ties, empty months, deductions, reversals,
quarters, years and ranges, groups and villages, a household's standing, periods, totals.

Every expected ranking below is written out literally, worked out by hand from the world the
test builds; none is computed by the code under test.
"""

from __future__ import annotations

import itertools
from dataclasses import astuple
from datetime import date, datetime

import pytest
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import Role, TransferKind
from pointsmart.services import catalogue, ledger, monthly, places, rankings, redemptions
from pointsmart.services.errors import InvalidInput, NotFound
from pointsmart.services.rankings import (
    MonthTotals,
    Period,
    PeriodKind,
    PlaceRow,
    Scope,
    ScopeKind,
    Standing,
)
from pointsmart.timeutil import LOCAL_TZ

# --- building worlds -----------------------------------------------------------------------------


def months_before(month: date, n: int) -> date:
    """Return the first day of the month n months before ``month``."""
    index = month.year * 12 + month.month - 1 - n
    return date(index // 12, index % 12 + 1, 1)


def in_month(month: date, day: int = 15) -> datetime:
    """Return midday on a day of a local month, as an aware datetime."""
    return datetime(month.year, month.month, day, 12, tzinfo=LOCAL_TZ)


class Books:
    """Post awards and deductions through the ledger; back-date them like pointsmart/demo.py."""

    def __init__(self, make) -> None:
        self.make = make
        self.staff: dict[int, tuple] = {}
        self.keys = itertools.count(1)
        self.moved = False

    def people(self, household):
        village = household.group.village
        if village.id not in self.staff:
            self.staff[village.id] = (
                self.make.staff(Role.CADRE, village),
                self.make.staff(Role.COMMITTEE, village),
            )
        return self.staff[village.id]

    def post(self, kind: TransferKind, household, points: int, month: date | None = None):
        cadre, committee = self.people(household)
        transfer = ledger.record(
            kind=kind,
            household=household,
            points=points,
            reason="垃圾分类" if kind is TransferKind.AWARD else "乱倒垃圾",
            recorded_by=cadre,
            key=f"rank-{next(self.keys)}",
        )
        ledger.post(transfer, committee)
        if month is not None:
            transfer.posted_at = in_month(month)
            self.moved = True
        return transfer

    def award(self, household, points: int, month: date | None = None):
        return self.post(TransferKind.AWARD, household, points, month)

    def deduct(self, household, points: int, month: date | None = None):
        return self.post(TransferKind.DEDUCTION, household, points, month)

    def reverse(self, transfer):
        _cadre, committee = self.people(transfer.household)
        return ledger.reverse(transfer, committee, "记错了", key=f"rank-{next(self.keys)}")

    def settle(self) -> None:
        """Recount the months after back-dating, then check the books agree."""
        db.session.flush()
        if self.moved:
            monthly.rebuild()
        assert monthly.check() == []


def household(group, house_number: str, name: str):
    return places.create_household(group, house_number, name)


def ranked(rows) -> list[tuple]:
    """Return (rank, name, points, awarded, deducted) of each household row."""
    return [(r.rank, r.name, r.points, r.awarded, r.deducted) for r in rows]


def month_of_now() -> Period:
    return rankings.month_period(rankings.this_month())


# --- one month: ties, zeros, deductions, reversals, inactive households --------------------------


@pytest.fixture
def east(make):
    """A village of four groups and a second village of one, all posted this month.

    1组: 赵一 +30 · 钱二 (no. 10) +20 · 孙三 (no. 2) +20 · 李四 +10 · 周五 nothing ·
         吴六 −5 (a deduction only) · 郑七 +10 reversed · 王八 +50 but no longer active
    2组: 冯九 +40 · 陈十 −10 · 褚十一 nothing
    3组: 卫十二 +10 · 蒋十三 +10
    4组: 沈十四 +5 · 韩十五 nothing · 杨十六 nothing
    西村 1组: 朱十七 +25 · 秦十八 nothing
    another town: 尤十九 +99
    """
    books = Books(make)
    town = make.town("青山镇")
    village = make.village(town, "东村", allow_negative_balance=True)
    g1, g2, g3, g4 = (places.create_group(village, f"{n}组") for n in range(1, 5))
    h = {}
    for group, house_number, name in [
        (g1, "1", "赵一"),
        (g1, "10", "钱二"),
        (g1, "2", "孙三"),
        (g1, "3", "李四"),
        (g1, "4", "周五"),
        (g1, "5", "吴六"),
        (g1, "6", "郑七"),
        (g1, "7", "王八"),
        (g2, "1", "冯九"),
        (g2, "2", "陈十"),
        (g2, "3", "褚十一"),
        (g3, "1", "卫十二"),
        (g3, "2", "蒋十三"),
        (g4, "1", "沈十四"),
        (g4, "2", "韩十五"),
        (g4, "3", "杨十六"),
    ]:
        h[name] = household(group, house_number, name)
    west = make.village(town, "西村")
    w1 = places.create_group(west, "1组")
    h["朱十七"] = household(w1, "1", "朱十七")
    h["秦十八"] = household(w1, "2", "秦十八")
    h["尤十九"] = household(make.group(make.village(make.town("别镇"), "外村")), "1", "尤十九")

    for name, points in [
        ("赵一", 30),
        ("钱二", 20),
        ("孙三", 20),
        ("李四", 10),
        ("王八", 50),
        ("冯九", 40),
        ("卫十二", 10),
        ("蒋十三", 10),
        ("沈十四", 5),
        ("朱十七", 25),
        ("尤十九", 99),
    ]:
        books.award(h[name], points)
    books.deduct(h["吴六"], 5)
    books.deduct(h["陈十"], 10)
    books.reverse(books.award(h["郑七"], 10))
    h["王八"].is_active = False
    books.settle()
    return {"town": town, "village": village, "west": west, "groups": (g1, g2, g3, g4), **h}


def test_a_group_ranks_with_shared_ranks_zeros_and_deductions_last(east):
    scope = Scope(ScopeKind.GROUP, east["groups"][0])
    assert ranked(rankings.households(scope, month_of_now())) == [
        (1, "赵一", 30, 30, 0),
        (2, "孙三", 20, 20, 0),  # no. 2 before no. 10
        (2, "钱二", 20, 20, 0),
        (4, "李四", 10, 10, 0),
        (5, "周五", 0, 0, 0),
        (5, "郑七", 0, 0, 0),  # its award was reversed
        (7, "吴六", -5, 0, 5),  # deductions only: below the households with nothing
    ]
    assert rankings.count_households(scope) == 7  # 王八 is no longer active


def test_a_village_ranks_all_its_groups_ties_by_group_then_house_number(east):
    scope = Scope(ScopeKind.VILLAGE, east["village"])
    rows = rankings.households(scope, month_of_now())
    assert [(r.rank, r.name, r.group, r.points) for r in rows] == [
        (1, "冯九", "2组", 40),
        (2, "赵一", "1组", 30),
        (3, "孙三", "1组", 20),
        (3, "钱二", "1组", 20),
        (5, "李四", "1组", 10),
        (5, "卫十二", "3组", 10),
        (5, "蒋十三", "3组", 10),
        (8, "沈十四", "4组", 5),
        (9, "周五", "1组", 0),
        (9, "郑七", "1组", 0),
        (9, "褚十一", "2组", 0),
        (9, "韩十五", "4组", 0),
        (9, "杨十六", "4组", 0),
        (14, "吴六", "1组", -5),
        (15, "陈十", "2组", -10),
    ]
    assert rankings.count_households(scope) == 15


def test_pages_of_a_ranking_keep_the_ranks_of_the_whole(east):
    scope = Scope(ScopeKind.VILLAGE, east["village"])
    page = rankings.households(scope, month_of_now(), limit=4, offset=4)
    assert [(r.rank, r.name) for r in page] == [
        (5, "李四"),
        (5, "卫十二"),
        (5, "蒋十三"),
        (8, "沈十四"),
    ]


#: The village's whole ranking this month (test_a_village_ranks_all_its_groups_...).
EAST_VILLAGE = [
    (1, "冯九"),
    (2, "赵一"),
    (3, "孙三"),
    (3, "钱二"),
    (5, "李四"),
    (5, "卫十二"),
    (5, "蒋十三"),
    (8, "沈十四"),
    (9, "周五"),
    (9, "郑七"),
    (9, "褚十一"),
    (9, "韩十五"),
    (9, "杨十六"),
    (14, "吴六"),
    (15, "陈十"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 8, 9, 15, 16])
def test_pages_of_every_size_add_up_to_the_whole_ranking(east, size):
    # Pages start and end inside ties, among those with points, with none and below zero;
    # one month is read by index in stretches, two months (last one empty) by adding up.
    scope = Scope(ScopeKind.VILLAGE, east["village"])
    now = rankings.this_month()
    two_months = Period(PeriodKind.CUSTOM, months_before(now, 1), now)
    for period_ in (month_of_now(), two_months):
        pages = [
            [(r.rank, r.name) for r in rankings.households(scope, period_, limit=size, offset=o)]
            for o in range(0, 17, size)
        ]
        assert [row for page in pages for row in page] == EAST_VILLAGE
    assert rankings.households(scope, month_of_now(), limit=5, offset=15) == []


def test_a_town_ranks_its_villages_households_and_nothing_of_another_town(east):
    scope = Scope(ScopeKind.TOWN, east["town"])
    rows = rankings.households(scope, month_of_now())
    assert [(r.rank, r.name, r.village, r.points) for r in rows][:4] == [
        (1, "冯九", "东村", 40),
        (2, "赵一", "东村", 30),
        (3, "朱十七", "西村", 25),
        (4, "孙三", "东村", 20),
    ]
    # The zeros: by village, then group, then house number.
    assert [(r.rank, r.name) for r in rows if r.points == 0] == [
        (10, "周五"),
        (10, "郑七"),
        (10, "褚十一"),
        (10, "韩十五"),
        (10, "杨十六"),
        (10, "秦十八"),
    ]
    assert len(rows) == 17 == rankings.count_households(scope)
    assert "尤十九" not in {r.name for r in rows}


def test_an_empty_month_ranks_everyone_first_with_zero(east):
    last_month = rankings.month_period(months_before(rankings.this_month(), 1))
    rows = rankings.households(Scope(ScopeKind.GROUP, east["groups"][0]), last_month)
    assert ranked(rows) == [
        (1, "赵一", 0, 0, 0),
        (1, "孙三", 0, 0, 0),
        (1, "李四", 0, 0, 0),
        (1, "周五", 0, 0, 0),
        (1, "吴六", 0, 0, 0),
        (1, "郑七", 0, 0, 0),
        (1, "钱二", 0, 0, 0),
    ]
    assert rankings.standing(
        east["吴六"], Scope(ScopeKind.GROUP, east["groups"][0]), last_month
    ) == Standing(rank=1, of=7, points=0)


def test_standing_of_positive_zero_and_negative_households(east):
    group = Scope(ScopeKind.GROUP, east["groups"][0])
    village = Scope(ScopeKind.VILLAGE, east["village"])
    town = Scope(ScopeKind.TOWN, east["town"])
    now = month_of_now()
    assert rankings.standing(east["赵一"], group, now) == Standing(1, 7, 30)
    assert rankings.standing(east["钱二"], group, now) == Standing(2, 7, 20)
    assert rankings.standing(east["孙三"], group, now) == Standing(2, 7, 20)
    assert rankings.standing(east["李四"], group, now) == Standing(4, 7, 10)
    assert rankings.standing(east["周五"], group, now) == Standing(5, 7, 0)  # no record at all
    assert rankings.standing(east["郑七"], group, now) == Standing(5, 7, 0)  # a record netting 0
    # Below everyone with nothing, whether they have a record (郑七) or not (周五).
    assert rankings.standing(east["吴六"], group, now) == Standing(7, 7, -5)
    assert rankings.standing(east["冯九"], village, now) == Standing(1, 15, 40)
    assert rankings.standing(east["褚十一"], village, now) == Standing(9, 15, 0)
    assert rankings.standing(east["吴六"], village, now) == Standing(14, 15, -5)
    assert rankings.standing(east["陈十"], village, now) == Standing(15, 15, -10)
    assert rankings.standing(east["朱十七"], town, now) == Standing(3, 17, 25)
    assert rankings.standing(east["陈十"], town, now) == Standing(17, 17, -10)


def test_a_household_that_stops_being_active_leaves_the_rankings(east):
    group = Scope(ScopeKind.GROUP, east["groups"][0])
    east["赵一"].is_active = False
    db.session.flush()
    assert [r.name for r in rankings.households(group, month_of_now())][:2] == ["孙三", "钱二"]
    assert rankings.standing(east["孙三"], group, month_of_now()) == Standing(1, 6, 20)


def test_groups_of_a_village_by_average_and_participation_with_ties_by_name(east):
    g1, g2, g3, g4 = (g.id for g in east["groups"])
    rows = rankings.places(Scope(ScopeKind.VILLAGE, east["village"]), month_of_now())
    # 1组: 75 points / 7 households = 10.71, 4 took part; 2组: 30 / 3 = 10, 1 of 3;
    # 3组: 20 / 2 = 10, 2 of 2; 4组: 5 / 3 = 1.67, 1 of 3.
    assert [astuple(r) for r in rows] == [
        astuple(PlaceRow(g1, "1组", 7, 75, 4, rank_by_average=1, rank_by_participation=2)),
        astuple(PlaceRow(g2, "2组", 3, 30, 1, rank_by_average=2, rank_by_participation=3)),
        astuple(PlaceRow(g3, "3组", 2, 20, 2, rank_by_average=2, rank_by_participation=1)),
        astuple(PlaceRow(g4, "4组", 3, 5, 1, rank_by_average=4, rank_by_participation=3)),
    ]
    assert [round(r.average, 2) for r in rows] == [10.71, 10.0, 10.0, 1.67]
    assert [round(r.participation, 3) for r in rows] == [0.571, 0.333, 1.0, 0.333]


def test_villages_of_a_town_by_average_and_participation(east):
    rows = rankings.places(Scope(ScopeKind.TOWN, east["town"]), month_of_now())
    # 东村: 130 points / 15 = 8.67, 8 of 15 took part (53 %); 西村: 25 / 2 = 12.5, 1 of 2 (50 %).
    assert [astuple(r) for r in rows] == [
        astuple(PlaceRow(east["west"].id, "西村", 2, 25, 1, 1, 2)),
        astuple(PlaceRow(east["village"].id, "东村", 15, 130, 8, 2, 1)),
    ]


def test_a_group_has_no_smaller_places(east):
    with pytest.raises(InvalidInput):
        rankings.places(Scope(ScopeKind.GROUP, east["groups"][0]), month_of_now())


# --- periods: a reversal in a later month, quarters, years, ranges -------------------------------


@pytest.fixture
def years(make):
    """Three households with records over two past years (Y is this year).

    甲 (no. 1): +10 Jan Y-1 · +20 Mar Y-1 · +5 Apr Y-1 · +100 Dec Y-2
    乙 (no. 2): +25 and −5 Feb Y-1 · +30 Dec Y-1 · +1 Jan Y
    丙 (no. 3): +40 Dec Y-2 · +15 Jun Y-1 · +50 Mar Y-1, reversed now (a later month)
    """
    books = Books(make)
    village = make.village(make.town(), "南村")
    group = places.create_group(village, "1组")
    a, b, c = household(group, "1", "甲"), household(group, "2", "乙"), household(group, "3", "丙")
    y = rankings.this_month().year
    books.award(a, 10, date(y - 1, 1, 1))
    books.award(a, 20, date(y - 1, 3, 1))
    books.award(a, 5, date(y - 1, 4, 1))
    books.award(a, 100, date(y - 2, 12, 1))
    books.award(b, 25, date(y - 1, 2, 1))
    books.deduct(b, 5, date(y - 1, 2, 1))
    books.award(b, 30, date(y - 1, 12, 1))
    books.award(b, 1, date(y, 1, 1))
    books.award(c, 40, date(y - 2, 12, 1))
    books.award(c, 15, date(y - 1, 6, 1))
    mistaken = books.award(c, 50, date(y - 1, 3, 1))
    books.settle()
    return {
        "scope": Scope(ScopeKind.GROUP, group),
        "y": y,
        "books": books,
        "mistaken": mistaken,
        "households": (a, b, c),
    }


def period(**args) -> Period:
    return rankings.parse_period({k: str(v) for k, v in args.items()})


def test_a_reversal_in_a_later_month_corrects_the_month_of_what_it_reverses(years):
    y, scope = years["y"], years["scope"]
    march = period(period="month", month=f"{y - 1}-03")
    assert ranked(rankings.households(scope, march)) == [
        (1, "丙", 50, 50, 0),
        (2, "甲", 20, 20, 0),
        (3, "乙", 0, 0, 0),
    ]
    years["books"].reverse(years["mistaken"])  # posted now, months later
    assert ranked(rankings.households(scope, march)) == [
        (1, "甲", 20, 20, 0),
        (2, "乙", 0, 0, 0),
        (2, "丙", 0, 0, 0),
    ]
    this_month = {r.name: r.points for r in rankings.households(scope, month_of_now())}
    assert this_month["丙"] == 0  # the reversal's own month is untouched
    assert monthly.check() == []  # the running figures agree with the transfers


def test_a_quarter_sums_its_three_months(years):
    years["books"].reverse(years["mistaken"])
    q1 = period(period="quarter", year=years["y"] - 1, quarter=1)
    assert (q1.start, q1.end) == (date(years["y"] - 1, 1, 1), date(years["y"] - 1, 3, 1))
    assert ranked(rankings.households(years["scope"], q1)) == [
        (1, "甲", 30, 30, 0),
        (2, "乙", 20, 25, 5),
        (3, "丙", 0, 0, 0),
    ]
    q2 = period(period="quarter", year=years["y"] - 1, quarter=2)
    assert ranked(rankings.households(years["scope"], q2)) == [
        (1, "丙", 15, 15, 0),
        (2, "甲", 5, 5, 0),
        (3, "乙", 0, 0, 0),
    ]


def test_a_year_sums_its_twelve_months(years):
    years["books"].reverse(years["mistaken"])
    last_year = period(period="year", year=years["y"] - 1)
    assert ranked(rankings.households(years["scope"], last_year)) == [
        (1, "乙", 50, 55, 5),
        (2, "甲", 35, 35, 0),
        (3, "丙", 15, 15, 0),
    ]
    a, b, c = years["households"]
    assert rankings.standing(b, years["scope"], last_year) == Standing(1, 3, 50)
    assert rankings.standing(c, years["scope"], last_year) == Standing(3, 3, 15)


def test_a_custom_range_sums_its_months_across_a_new_year(years):
    y, scope = years["y"], years["scope"]
    winter = period(period="custom", **{"from": f"{y - 2}-12", "to": f"{y - 1}-02"})
    assert ranked(rankings.households(scope, winter)) == [
        (1, "甲", 110, 110, 0),
        (2, "丙", 40, 40, 0),
        (3, "乙", 20, 25, 5),
    ]
    turn = period(period="custom", **{"from": f"{y - 1}-12", "to": f"{y}-01"})
    assert ranked(rankings.households(scope, turn)) == [
        (1, "乙", 31, 31, 0),
        (2, "甲", 0, 0, 0),
        (2, "丙", 0, 0, 0),
    ]


# --- parse_period --------------------------------------------------------------------------------


def test_parse_period_reads_good_arguments(app):
    now = rankings.this_month()
    y = now.year
    assert rankings.parse_period({}) == Period(PeriodKind.MONTH, now, now)
    assert rankings.parse_period({"period": "month", "month": f"{y - 1}-3"}) == Period(
        PeriodKind.MONTH, date(y - 1, 3, 1), date(y - 1, 3, 1)
    )
    assert rankings.parse_period({"period": "quarter", "year": str(y - 1), "quarter": "4"}) == (
        Period(PeriodKind.QUARTER, date(y - 1, 10, 1), date(y - 1, 12, 1))
    )
    assert rankings.parse_period({"period": "year", "year": f" {y - 1} "}) == Period(
        PeriodKind.YEAR, date(y - 1, 1, 1), date(y - 1, 12, 1)
    )
    longest = rankings.parse_period(
        {"period": "custom", "from": f"{y - 2}-01", "to": f"{y - 1}-12"}
    )
    assert (longest.start, longest.end, len(longest.months)) == (
        date(y - 2, 1, 1),
        date(y - 1, 12, 1),
        24,
    )
    this_month = rankings.parse_period({"period": "month", "month": f"{now:%Y-%m}"})
    assert this_month == Period(PeriodKind.MONTH, now, now)
    # Each period names itself in the arguments it was read from.
    for p in (longest, this_month):
        assert rankings.parse_period(p.args()) == p


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"period": "month", "month": "2026-13"}, "must be a month like 2026-11"),
        ({"period": "month", "month": "abc"}, "must be a month like 2026-11"),
        ({"period": "quarter", "year": "2025", "quarter": "5"}, "quarter must be 1, 2, 3 or 4"),
        ({"period": "quarter", "year": "2025"}, "quarter must be 1, 2, 3 or 4"),
        ({"period": "year", "year": "20x6"}, "year must be four digits"),
        ({"period": "week"}, "Choose a month, a quarter, a year or a range"),
        ({"period": "custom", "from": "2016-01", "to": "2025-12"}, "at most 24 months"),
        ({"period": "custom", "from": "2024-01", "to": "2026-01"}, "at most 24 months"),  # 25
        ({"period": "custom", "from": "2025-06", "to": "2025-01"}, "comes before the first"),
        ({"period": "custom", "from": "2025-01"}, "must be a month like"),
        ({"period": "year", "year": "1999"}, "no records before 2000"),
    ],
)
def test_parse_period_refuses_bad_arguments_saying_what_is_wrong(app, args, says):
    with force_locale("en"):
        with pytest.raises(InvalidInput) as refused:
            rankings.parse_period(args)
        assert says in str(refused.value.message)


def test_parse_period_refuses_a_period_that_has_not_begun(app):
    next_month = months_before(rankings.this_month(), -1)
    for args in (
        {"period": "month", "month": f"{next_month:%Y-%m}"},
        {"period": "year", "year": str(rankings.this_month().year + 1)},
        {"period": "custom", "from": f"{next_month:%Y-%m}", "to": f"{next_month:%Y-%m}"},
    ):
        with force_locale("en"):
            with pytest.raises(InvalidInput) as refused:
                rankings.parse_period(args)
            assert "has not begun yet" in str(refused.value.message)


def test_scope_of_refuses_unknown_kinds_and_places(east):
    assert rankings.scope_of("village", east["village"].id).place is east["village"]
    with pytest.raises(InvalidInput):
        rankings.scope_of("county", east["village"].id)
    with pytest.raises(NotFound):
        rankings.scope_of("village", 987654)
    with pytest.raises(NotFound):
        rankings.scope_of("village", "1")  # only whole numbers name places


# --- village totals ------------------------------------------------------------------------------


def test_village_totals_count_awards_deductions_and_redemptions_net_of_refunds(make):
    books = Books(make)
    town = make.town()
    village = make.village(town, "北村")
    group = places.create_group(village, "1组")
    first, second = household(group, "1", "孔一"), household(group, "2", "曹二")
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    soap = catalogue.create_item(shop, catalogue.ItemData("肥皂", "日用品", 5), clerk)
    catalogue.receive(soap, clerk, quantity_=50, key="rank-soap")
    now = rankings.this_month()
    last = months_before(now, 1)

    books.award(first, 50, last)
    books.award(second, 20, last)
    books.deduct(second, 4, last)
    books.award(first, 30)
    books.deduct(first, 10)
    # Last month: 孔一 redeems 3 soaps (15) and gives one back (5): 10 redeemed.
    sale, _ = redemptions.checkout(
        shop=shop, household=first, cart={soap.id: 3}, clerk=clerk, key="rank-sale-1"
    )
    back, _ = redemptions.void(
        sale, clerk, reason="拿错了", key="rank-void-1", quantities={sale.lines[0].id: 1}
    )
    sale.transfer.posted_at = in_month(last, 20)
    back.transfer.posted_at = in_month(last, 21)
    # This month: 曹二 redeems 2 soaps (10) and gives one back (5): 5 redeemed.
    sale2, _ = redemptions.checkout(
        shop=shop, household=second, cart={soap.id: 2}, clerk=clerk, key="rank-sale-2"
    )
    redemptions.void(
        sale2, clerk, reason="拿错了", key="rank-void-2", quantities={sale2.lines[0].id: 1}
    )
    # Another village's records stay out.
    elsewhere = household(make.group(make.village(town, "外村")), "1", "外人")
    books.award(elsewhere, 77)
    books.settle()

    span = period(period="custom", **{"from": f"{last:%Y-%m}", "to": f"{now:%Y-%m}"})
    assert rankings.village_totals(village, span) == [
        MonthTotals(last, issued=70, deducted=4, redeemed=10),
        MonthTotals(now, issued=30, deducted=10, redeemed=5),
    ]
    two_before = rankings.month_period(months_before(now, 2))
    assert rankings.village_totals(village, two_before) == [MonthTotals(two_before.start, 0, 0, 0)]
