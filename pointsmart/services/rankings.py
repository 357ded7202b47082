"""Rankings: households, groups and villages by honour points earned in a period.

A household's points in a period are the honour points its posted awards and deductions
brought in the months of the period (services.monthly), so spending never lowers a rank.
Equal points share a rank (1, 2, 2, 4); within a tie households are listed by village (in a
town), group and house number. Groups and villages are ranked by average points per household
and by participation: the share of their households that earned anything in the period.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..models import (
    Household,
    HouseholdMonth,
    Town,
    Transfer,
    TransferKind,
    TransferStatus,
    Village,
    VillagerGroup,
)
from ..timeutil import local_today, to_local
from .errors import InvalidInput, NotFound

#: The longest custom period, in months: a longer one is a typing mistake or a heavy query.
MAX_MONTHS = 24
EARLIEST_YEAR = 2000


class PeriodKind(enum.StrEnum):
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    CUSTOM = "custom"


def _add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def _months_between(start: date, end: date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1


@dataclass(frozen=True)
class Period:
    """Whole local months from ``start`` to ``end`` (first days of months, inclusive)."""

    kind: PeriodKind
    start: date
    end: date

    @property
    def months(self) -> list[date]:
        return [_add_months(self.start, i) for i in range(_months_between(self.start, self.end))]

    def label(self) -> str:
        """Return the period in words, e.g. "November 2026" / "2026年11月"."""
        if self.kind is PeriodKind.MONTH:
            return _("%(year)s-%(month)02d", year=self.start.year, month=self.start.month)
        if self.kind is PeriodKind.QUARTER:
            return _(
                "Q%(quarter)s %(year)s",
                quarter=(self.start.month - 1) // 3 + 1,
                year=self.start.year,
            )
        if self.kind is PeriodKind.YEAR:
            return _("Year %(year)s", year=self.start.year)
        return _(
            "%(start)s to %(end)s",
            start=self.start.strftime("%Y-%m"),
            end=self.end.strftime("%Y-%m"),
        )

    def args(self) -> dict[str, str]:
        """Return the query arguments that name this period (see parse_period)."""
        if self.kind is PeriodKind.MONTH:
            return {"period": "month", "month": f"{self.start:%Y-%m}"}
        if self.kind is PeriodKind.QUARTER:
            return {
                "period": "quarter",
                "year": str(self.start.year),
                "quarter": str((self.start.month - 1) // 3 + 1),
            }
        if self.kind is PeriodKind.YEAR:
            return {"period": "year", "year": str(self.start.year)}
        return {"period": "custom", "from": f"{self.start:%Y-%m}", "to": f"{self.end:%Y-%m}"}


def this_month() -> date:
    """Return the first day of the current local month."""
    return local_today().replace(day=1)


def month_period(month: date) -> Period:
    """Return the period of one month."""
    month = month.replace(day=1)
    return Period(PeriodKind.MONTH, month, month)


_MONTH = re.compile(r"(\d{4})-(\d{1,2})")


def _month(text: str | None, what) -> date:
    match = _MONTH.fullmatch((text or "").strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise InvalidInput(_l("%(what)s must be a month like 2026-11.", what=what))
    return date(int(match.group(1)), int(match.group(2)), 1)


def _year(text: str | None) -> int:
    text = (text or "").strip()
    if not text.isdigit() or len(text) != 4:
        raise InvalidInput(_l("The year must be four digits, like 2026."))
    return int(text)


def parse_period(args: Mapping[str, str]) -> Period:
    """Return the period a page's query arguments ask for; this month by default.

    period=month&month=2026-11, period=quarter&year=2026&quarter=4, period=year&year=2026,
    period=custom&from=2026-01&to=2026-06. Raises InvalidInput with a message that says what
    is wrong: a malformed value, a period that has not begun, a custom range too long.
    """
    try:
        kind = PeriodKind(args.get("period") or PeriodKind.MONTH)
    except ValueError:
        raise InvalidInput(_l("Choose a month, a quarter, a year or a range of months.")) from None
    if kind is PeriodKind.MONTH:
        month = _month(args.get("month"), _l("The month")) if args.get("month") else this_month()
        period = Period(kind, month, month)
    elif kind is PeriodKind.QUARTER:
        year = _year(args.get("year"))
        quarter = (args.get("quarter") or "").strip()
        if quarter not in ("1", "2", "3", "4"):
            raise InvalidInput(_l("The quarter must be 1, 2, 3 or 4."))
        start = date(year, 3 * int(quarter) - 2, 1)
        period = Period(kind, start, _add_months(start, 2))
    elif kind is PeriodKind.YEAR:
        year = _year(args.get("year"))
        period = Period(kind, date(year, 1, 1), date(year, 12, 1))
    else:
        start = _month(args.get("from"), _l("The first month"))
        end = _month(args.get("to"), _l("The last month"))
        if end < start:
            raise InvalidInput(_l("The last month comes before the first."))
        if _months_between(start, end) > MAX_MONTHS:
            raise InvalidInput(
                _l("A range may span at most %(max)s months; choose a shorter one.", max=MAX_MONTHS)
            )
        period = Period(kind, start, end)
    if period.start.year < EARLIEST_YEAR:
        raise InvalidInput(_l("PointSmart has no records before %(year)s.", year=EARLIEST_YEAR))
    if period.start > this_month():
        raise InvalidInput(
            _l("This period has not begun yet; choose the current month or an earlier one.")
        )
    # A period reaching into the future counts only up to now; the label keeps what was asked.
    return period


# --- scopes --------------------------------------------------------------------------------------


class ScopeKind(enum.StrEnum):
    GROUP = "group"
    VILLAGE = "village"
    TOWN = "town"


@dataclass(frozen=True)
class Scope:
    """The place a ranking covers: a villager group, a village or a town."""

    kind: ScopeKind
    place: VillagerGroup | Village | Town

    @property
    def id(self) -> int:
        return self.place.id

    @property
    def name(self) -> str:
        if self.kind is ScopeKind.GROUP:
            return f"{self.place.village.name}{self.place.name}"
        return self.place.name

    def months_filter(self):
        column = {
            ScopeKind.GROUP: HouseholdMonth.group_id,
            ScopeKind.VILLAGE: HouseholdMonth.village_id,
            ScopeKind.TOWN: HouseholdMonth.town_id,
        }[self.kind]
        return column == self.place.id

    def households_filter(self):
        # Over villager_groups and villages, which every query using it joins.
        if self.kind is ScopeKind.GROUP:
            return VillagerGroup.id == self.place.id
        if self.kind is ScopeKind.VILLAGE:
            return VillagerGroup.village_id == self.place.id
        return Village.town_id == self.place.id


def scope_of(kind: str, place_id) -> Scope:
    """Return the scope named by a page's arguments. Raises InvalidInput or NotFound."""
    try:
        kind = ScopeKind(kind)
    except ValueError:
        raise InvalidInput(_l("Choose a group, a village or a town.")) from None
    model = {ScopeKind.GROUP: VillagerGroup, ScopeKind.VILLAGE: Village, ScopeKind.TOWN: Town}[kind]
    place = db.session.get(model, place_id) if isinstance(place_id, int) else None
    if place is None:
        raise NotFound()
    return Scope(kind, place)


# --- households ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdRow:
    rank: int
    household_id: int
    name: str
    house_number: str
    group: str
    village: str
    points: int
    awarded: int
    deducted: int


def _one_month(period: Period) -> bool:
    return period.start == period.end


def _sums(scope: Scope, period: Period):
    """Return the active households' points in the period, one row each (none: 0 points).

    A month reads its rows as they are (a household has at most one) with the tie order
    copied into them, so that the database walks ix_household_months_ranking or a scope
    index instead of adding anything up. A longer period adds up each household's months
    once per statement (a common table expression: _top_of_sums reads it twice).
    """
    where = [scope.months_filter(), HouseholdMonth.is_active == sa.true()]
    if _one_month(period):
        # Equality, not a range of one month, so that the planner sees the index's order.
        return (
            sa.select(
                HouseholdMonth.household_id,
                HouseholdMonth.points,
                HouseholdMonth.awarded,
                HouseholdMonth.deducted,
                HouseholdMonth.village_name,
                HouseholdMonth.group_name,
                HouseholdMonth.house_length,
                HouseholdMonth.house_number,
            )
            .where(*where, HouseholdMonth.month == period.start)
            .subquery()
        )
    return _added_up(scope, period).cte()


def _added_up(scope: Scope, period: Period) -> sa.Select:
    """Return the select adding up each active household's months of the period."""
    return (
        sa.select(
            HouseholdMonth.household_id,
            sa.func.sum(HouseholdMonth.points).label("points"),
            sa.func.sum(HouseholdMonth.awarded).label("awarded"),
            sa.func.sum(HouseholdMonth.deducted).label("deducted"),
        )
        # The months one by one: a range would read every scope's entries of those months.
        .where(
            scope.months_filter(),
            HouseholdMonth.is_active == sa.true(),
            HouseholdMonth.month.in_(period.months),
        )
        .group_by(HouseholdMonth.household_id)
    )


def _house_order():
    # "2" before "10": shorter house numbers first, then by text.
    return (sa.func.length(Household.house_number), Household.house_number, Household.id)


def _month_order(c) -> tuple:
    """Return one month's ranking order over columns ``c``: the index's own order."""
    return (
        c.points.desc(),
        c.village_name,
        c.group_name,
        c.house_length,
        c.house_number,
        c.household_id,
    )


def _with_points(sums, condition, limit: int, offset: int) -> list[sa.Row]:
    """Return a stretch of one month's households whose points match, in ranking order."""
    stretch = (
        sa.select(sums)
        .where(condition)
        .order_by(*_month_order(sums.c))
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    # Names for the stretch alone: joined before the offset, a deep page joined every household.
    return db.session.execute(
        sa.select(
            stretch.c.household_id,
            Household.name,
            stretch.c.house_number,
            stretch.c.group_name,
            stretch.c.village_name,
            stretch.c.points,
            stretch.c.awarded,
            stretch.c.deducted,
        )
        .join(Household, Household.id == stretch.c.household_id)
        .order_by(*_month_order(stretch.c))
    ).all()


def _without_points(scope: Scope, period: Period, limit: int, offset: int) -> list[sa.Row]:
    """Return a stretch of the active households with 0 points (a row or none), in tie order."""
    # Added up even for one month: hashed once, rather than looked up once per household.
    sums = _added_up(scope, period).subquery()
    return db.session.execute(
        sa.select(
            Household.id,
            Household.name,
            Household.house_number,
            VillagerGroup.name,
            Village.name,
            sa.literal(0),
            sa.func.coalesce(sums.c.awarded, 0),
            sa.func.coalesce(sums.c.deducted, 0),
        )
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Village, VillagerGroup.village_id == Village.id)
        .outerjoin(sums, sums.c.household_id == Household.id)
        .where(
            scope.households_filter(),
            Household.is_active.is_(True),
            sa.func.coalesce(sums.c.points, 0) == 0,
        )
        .order_by(Village.name, VillagerGroup.name, *_house_order())
        .limit(limit)
        .offset(offset)
    ).all()


def _count(sums, condition) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(sums).where(condition))


def _ahead(sums, points: int, households: Callable[[], int]) -> int:
    """Return how many active households of the scope have more than ``points``."""
    if points >= 0:
        return _count(sums, sums.c.points > points)
    # Below zero every household without a row is ahead too: count those at or below instead.
    return households() - _count(sums, sums.c.points <= points)


def _month_page(scope: Scope, period: Period, sums, limit: int, offset: int) -> list[HouseholdRow]:
    """Return a page of a one-month ranking, read by index in three stretches.

    The stretches, each in ranking order: households with points (the first entries of
    ix_household_months_ranking, or of a scope index), households with none, households
    below zero. A page usually lies in the first; counts in the scope indexes find where the
    others begin. A rank is 1 + the number of households with more points: a page needs a
    count only for its first row.
    """
    total = functools.cache(lambda: count_households(scope))
    rows = _with_points(sums, sums.c.points > 0, limit, offset)
    if len(rows) < limit:
        # A stretch that fed the page is over: the next one starts at its beginning.
        positive = offset + len(rows) if rows else _count(sums, sums.c.points > 0)
        zeros = _without_points(scope, period, limit - len(rows), max(0, offset - positive))
        rows += zeros
        if len(rows) < limit:
            skip = 0
            if not zeros:
                zero = total() - positive - _count(sums, sums.c.points < 0)
                skip = max(0, offset - positive - zero)
            rows += _with_points(sums, sums.c.points < 0, limit - len(rows), skip)
    page, rank, previous = [], 0, None
    for position, row in enumerate(rows, start=offset + 1):
        points = int(row[5])
        if points != previous:
            first_of_page_ties = position == offset + 1 and offset > 0
            rank = _ahead(sums, points, total) + 1 if first_of_page_ties else position
            previous = points
        page.append(HouseholdRow(rank, row[0], *row[1:5], points, int(row[6]), int(row[7])))
    return page


#: More households than this tied at a longer period's cutoff: rank them all instead.
_MOST_AT_CUTOFF = 5000


def _top_of_sums(sums, limit: int) -> list[HouseholdRow] | None:
    """Return the first ``limit`` households of a longer period, if they all have points.

    Sorting every sum by the tie rule would join every household to its group and village;
    only those at or above the limit-th best points need it. They are fetched first, then
    put in the tie order by id: joined in one statement, the planner expects a third of the
    sums and joins them by hashing every household of the database.
    """
    cutoff = (
        sa.select(sums.c.points)
        .where(sums.c.points > 0)
        .order_by(sums.c.points.desc())
        .offset(limit - 1)
        .limit(1)
        .scalar_subquery()
    )
    top = db.session.execute(
        sa.select(sums.c.household_id, sums.c.points, sums.c.awarded, sums.c.deducted).where(
            sums.c.points >= cutoff
        )
    ).all()
    if len(top) < limit or len(top) > _MOST_AT_CUTOFF:
        return None
    tie_order = db.session.execute(
        sa.select(
            Household.id, Household.name, Household.house_number, VillagerGroup.name, Village.name
        )
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Village, VillagerGroup.village_id == Village.id)
        .where(Household.id.in_([row.household_id for row in top]))
        .order_by(Village.name, VillagerGroup.name, *_house_order())
    ).all()
    place = {row[0]: (position, row[1:]) for position, row in enumerate(tie_order)}
    top.sort(key=lambda row: (-row.points, place[row.household_id][0]))
    page, rank, previous = [], 0, None
    for position, (household_id, points, awarded, deducted) in enumerate(top[:limit], start=1):
        if points != previous:
            rank, previous = position, points
        page.append(
            HouseholdRow(
                rank,
                household_id,
                *place[household_id][1],
                int(points),
                int(awarded),
                int(deducted),
            )
        )
    return page


def _ranked_in_full(scope: Scope, sums, limit: int, offset: int) -> list[HouseholdRow]:
    """Return a page of a longer period's ranking, ranking every active household."""
    points = sa.func.coalesce(sums.c.points, 0)
    ranked = (
        sa.select(
            sa.func.rank().over(order_by=points.desc()).label("rank"),
            Household.id,
            Household.name,
            Household.house_number,
            VillagerGroup.name,
            Village.name,
            points,
            sa.func.coalesce(sums.c.awarded, 0),
            sa.func.coalesce(sums.c.deducted, 0),
        )
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Village, VillagerGroup.village_id == Village.id)
        .outerjoin(sums, sums.c.household_id == Household.id)
        .where(scope.households_filter(), Household.is_active.is_(True))
        .order_by(points.desc(), Village.name, VillagerGroup.name, *_house_order())
        .limit(limit)
        .offset(offset)
    )
    return [
        HouseholdRow(rank, id_, name, number, group, village, int(p), int(a), int(d))
        for rank, id_, name, number, group, village, p, a, d in db.session.execute(ranked)
    ]


def households(
    scope: Scope, period: Period, *, limit: int = 50, offset: int = 0
) -> list[HouseholdRow]:
    """Return a page of the active households of the scope, ranked by points in the period.

    One month reads its ranking by index (_month_page). A longer period adds up months
    first; its first page, when the households with points fill it, needs the tie order of
    only those at or above the page's last points; any other page ranks every household.
    """
    sums = _sums(scope, period)
    if _one_month(period):
        return _month_page(scope, period, sums, limit, offset)
    if offset == 0 and limit > 0 and (page := _top_of_sums(sums, limit)) is not None:
        return page
    return _ranked_in_full(scope, sums, limit, offset)


def _households_of(scope: Scope) -> sa.Select:
    """Return the select of how many active households the scope has (0 when none)."""
    # Each group keeps its count (services.monthly): a county's 300,000 households are 1,500 rows.
    return (
        sa.select(sa.func.coalesce(sa.func.sum(VillagerGroup.active_households), 0))
        .join(Village, VillagerGroup.village_id == Village.id)
        .where(scope.households_filter())
    )


def count_households(scope: Scope) -> int:
    """Return how many active households the scope has."""
    return int(db.session.scalar(_households_of(scope)))


@dataclass(frozen=True)
class Standing:
    rank: int
    of: int
    points: int


def standing(household: Household, scope: Scope, period: Period) -> Standing:
    """Return a household's rank among the active households of the scope, and its points."""
    return standings(household, [scope], period)[0]


def standings(household: Household, scopes: Sequence[Scope], period: Period) -> list[Standing]:
    """Return the household's standing in each scope, all read in one statement.

    A rank is 1 + the number of active households with more points; below zero, every
    household without a row is ahead too, so the count is taken from the other end.
    """
    columns = []
    for scope in scopes:
        # Cast back from SUM's wider type, so the comparisons below stay index conditions.
        mine = sa.cast(
            sa.select(sa.func.coalesce(sa.func.sum(HouseholdMonth.points), 0))
            .where(
                HouseholdMonth.household_id == household.id,
                scope.months_filter(),
                HouseholdMonth.month >= period.start,
                HouseholdMonth.month <= period.end,
            )
            .scalar_subquery(),
            HouseholdMonth.points.type,
        )
        total = _households_of(scope).scalar_subquery()
        if _one_month(period):
            # The month's rows as they are: the scope's ranking index answers both counts.
            points = HouseholdMonth.points
            rows = sa.select(sa.func.count()).where(
                scope.months_filter(),
                HouseholdMonth.is_active == sa.true(),
                HouseholdMonth.month == period.start,
            )
        else:
            sums = _added_up(scope, period).subquery()
            points = sums.c.points
            rows = sa.select(sa.func.count()).select_from(sums)
        above, at_or_below = rows.where(points > mine), rows.where(points <= mine)
        ahead = sa.case(
            (mine >= 0, above.scalar_subquery()), else_=total - at_or_below.scalar_subquery()
        )
        columns += [mine, total, ahead]
    row = db.session.execute(sa.select(*columns)).one()
    return [
        Standing(rank=int(ahead) + 1, of=int(total), points=int(mine))
        for mine, total, ahead in zip(*[iter(row)] * 3, strict=True)
    ]


# --- groups and villages -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceRow:
    place_id: int
    name: str
    households: int
    points: int
    participants: int
    rank_by_average: int = 0
    rank_by_participation: int = 0

    @property
    def average(self) -> float:
        return self.points / self.households if self.households else 0.0

    @property
    def participation(self) -> float:
        return self.participants / self.households if self.households else 0.0


def _competition_ranks(rows: list[PlaceRow], key) -> dict[int, int]:
    ranks, previous, rank = {}, None, 0
    for position, row in enumerate(sorted(rows, key=lambda r: (-key(r), r.name)), start=1):
        if key(row) != previous:
            rank, previous = position, key(row)
        ranks[row.place_id] = rank
    return ranks


def places(scope: Scope, period: Period) -> list[PlaceRow]:
    """Return the groups of a village, or the villages of a town, with their rankings.

    Sorted by average points per household; each row also carries its participation rank.
    """
    if scope.kind is ScopeKind.GROUP:
        raise InvalidInput(_l("A group has no smaller places to rank; rank its households."))
    by_group = scope.kind is ScopeKind.VILLAGE
    place_col = VillagerGroup.id if by_group else Village.id
    name_col = VillagerGroup.name if by_group else Village.name
    # Added up even for one month: hashed once, rather than looked up once per household.
    sums = _added_up(scope, period).subquery()
    rows = db.session.execute(
        sa.select(
            place_col,
            name_col,
            sa.func.count(Household.id),
            sa.func.coalesce(sa.func.sum(sums.c.points), 0),
            sa.func.count(sums.c.household_id).filter(sums.c.awarded > 0),
        )
        .select_from(Household)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Village, VillagerGroup.village_id == Village.id)
        .outerjoin(sums, sums.c.household_id == Household.id)
        .where(scope.households_filter(), Household.is_active.is_(True))
        .group_by(place_col, name_col)
    ).all()
    plain = [PlaceRow(*row) for row in rows]
    by_average = _competition_ranks(plain, lambda r: r.average)
    by_participation = _competition_ranks(plain, lambda r: r.participation)
    ranked = [
        PlaceRow(
            r.place_id,
            r.name,
            r.households,
            int(r.points),
            r.participants,
            by_average[r.place_id],
            by_participation[r.place_id],
        )
        for r in plain
    ]
    return sorted(ranked, key=lambda r: (r.rank_by_average, r.name))


# --- monthly totals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthTotals:
    month: date
    issued: int
    deducted: int
    redeemed: int


def village_totals(village: Village, period: Period) -> list[MonthTotals]:
    """Return each month's points issued (awards), deducted and redeemed (net of refunds)."""
    months = period.months
    earned = {
        month: (int(awarded or 0), int(deducted or 0))
        for month, awarded, deducted in db.session.execute(
            sa.select(
                HouseholdMonth.month,
                sa.func.sum(HouseholdMonth.awarded),
                sa.func.sum(HouseholdMonth.deducted),
            )
            .where(
                HouseholdMonth.village_id == village.id,
                HouseholdMonth.month >= period.start,
                HouseholdMonth.month <= period.end,
            )
            .group_by(HouseholdMonth.month)
        )
    }
    from datetime import datetime, time

    from ..timeutil import LOCAL_TZ

    start = datetime.combine(period.start, time.min, tzinfo=LOCAL_TZ)
    end = datetime.combine(_add_months(period.end, 1), time.min, tzinfo=LOCAL_TZ)
    redeemed: dict[date, int] = {}
    for kind, amount, posted_at in db.session.execute(
        sa.select(Transfer.kind, Transfer.amount, Transfer.posted_at).where(
            Transfer.village_id == village.id,
            Transfer.kind.in_([TransferKind.REDEMPTION, TransferKind.REFUND]),
            Transfer.status == TransferStatus.POSTED,
            Transfer.posted_at >= start,
            Transfer.posted_at < end,
        )
    ):
        month = to_local(posted_at).date().replace(day=1)
        sign = 1 if kind is TransferKind.REDEMPTION else -1
        redeemed[month] = redeemed.get(month, 0) + sign * amount
    return [
        MonthTotals(m, *earned.get(m, (0, 0)), redeemed.get(m, 0))
        for m in months
        if m <= this_month()
    ]
