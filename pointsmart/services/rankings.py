"""Rankings: households, groups and villages by honour points earned in a period.

A household's points in a period are the honour points its posted awards and deductions
brought in the months of the period (services.monthly), so spending never lowers a rank.
Equal points share a rank (1, 2, 2, 4); within a tie households are listed by village (in a
town), group and house number. Groups and villages are ranked by average points per household
and by participation: the share of their households that earned anything in the period.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
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
        if self.kind is ScopeKind.GROUP:
            return Household.group_id == self.place.id
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


def _sums(scope: Scope, period: Period):
    return (
        sa.select(
            HouseholdMonth.household_id,
            sa.func.sum(HouseholdMonth.points).label("points"),
            sa.func.sum(HouseholdMonth.awarded).label("awarded"),
            sa.func.sum(HouseholdMonth.deducted).label("deducted"),
        )
        .where(
            scope.months_filter(),
            HouseholdMonth.month >= period.start,
            HouseholdMonth.month <= period.end,
        )
        .group_by(HouseholdMonth.household_id)
        .subquery()
    )


def _house_order():
    # "2" before "10": shorter house numbers first, then by text.
    return (sa.func.length(Household.house_number), Household.house_number, Household.id)


def households(
    scope: Scope, period: Period, *, limit: int = 50, offset: int = 0
) -> list[HouseholdRow]:
    """Return a page of the active households of the scope, ranked by points in the period."""
    sums = _sums(scope, period)
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
    return [HouseholdRow(*row) for row in db.session.execute(ranked)]


def count_households(scope: Scope) -> int:
    """Return how many active households the scope has."""
    return db.session.scalar(
        sa.select(sa.func.count(Household.id))
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Village, VillagerGroup.village_id == Village.id)
        .where(scope.households_filter(), Household.is_active.is_(True))
    )


@dataclass(frozen=True)
class Standing:
    rank: int
    of: int
    points: int


def standing(household: Household, scope: Scope, period: Period) -> Standing:
    """Return a household's rank among the active households of the scope, and its points."""
    sums = _sums(scope, period)
    mine = (
        db.session.scalar(sa.select(sums.c.points).where(sums.c.household_id == household.id)) or 0
    )
    total = count_households(scope)
    active = (
        sa.select(Household.id)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .join(Village, VillagerGroup.village_id == Village.id)
        .where(scope.households_filter(), Household.is_active.is_(True))
    )
    ahead = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(sums)
        .where(sums.c.points > mine, sums.c.household_id.in_(active))
    )
    if mine < 0:  # households with no record this period (0 points) are ahead too
        with_records = db.session.scalar(
            sa.select(sa.func.count()).select_from(sums).where(sums.c.household_id.in_(active))
        )
        ahead += total - with_records
    return Standing(rank=ahead + 1, of=total, points=int(mine))


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
    sums = _sums(scope, period)
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
