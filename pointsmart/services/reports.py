"""Reports for a period and a place (town, village or group): the figures staff put in Excel.

Points issued by category and deducted count in the month they were posted (a reversal
corrects the month of what it reverses, as rankings do); redeemed points are net of refunds;
outstanding points and stock are as they stand now. Screen, .xlsx and .csv all read one
``Report``, so they always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time

import sqlalchemy as sa

from ..extensions import db
from ..models import (
    Account,
    AccountKind,
    Approval,
    Category,
    Household,
    HouseholdMonth,
    Item,
    MovementKind,
    Redemption,
    RedemptionLine,
    Shop,
    StockMovement,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
    Village,
    VillagerGroup,
)
from ..timeutil import LOCAL_TZ
from .rankings import Period, Scope, ScopeKind, _add_months, count_households, this_month


@dataclass
class CadreRow:
    user_id: int
    name: str
    recorded: int = 0
    recorded_points: int = 0
    approved: int = 0


@dataclass
class GoodsRow:
    name: str
    units: int = 0
    points: int = 0


@dataclass
class StockRow:
    shop: str
    item: str
    units: int
    points_value: int
    #: Average intake cost per unit times the units left, in fen; None when no cost is known.
    cost_fen: int | None


@dataclass
class Report:
    scope: Scope
    period: Period
    issued_by_category: dict[Category | None, int]
    deducted: int
    redeemed: int
    outstanding: int
    households: int
    participants: int
    pending_count: int
    pending_points: int
    goods: list[GoodsRow]
    stock: list[StockRow]
    cadres: list[CadreRow]
    #: (month, issued, deducted, redeemed) for the 12 months ending with the period.
    trend: list[tuple[date, int, int, int]]
    #: (village name, issued, deducted, participation) for a town; empty otherwise.
    villages: list[tuple[str, int, int, float]] = field(default_factory=list)

    @property
    def issued(self) -> int:
        return sum(self.issued_by_category.values())

    @property
    def participation(self) -> float:
        return self.participants / self.households if self.households else 0.0

    @property
    def stock_points(self) -> int:
        return sum(s.points_value for s in self.stock)

    @property
    def stock_cost_fen(self) -> int:
        return sum(s.cost_fen or 0 for s in self.stock)


def _bounds(period: Period) -> tuple[datetime, datetime]:
    start = datetime.combine(period.start, time.min, tzinfo=LOCAL_TZ)
    end = datetime.combine(_add_months(period.end, 1), time.min, tzinfo=LOCAL_TZ)
    return start, end


def _village_ids(scope: Scope) -> sa.Select:
    if scope.kind is ScopeKind.TOWN:
        return sa.select(Village.id).where(Village.town_id == scope.id)
    if scope.kind is ScopeKind.VILLAGE:
        return sa.select(Village.id).where(Village.id == scope.id)
    return sa.select(VillagerGroup.village_id).where(VillagerGroup.id == scope.id)


def _household_ids(scope: Scope) -> sa.Select:
    stmt = sa.select(Household.id).join(VillagerGroup, Household.group_id == VillagerGroup.id)
    if scope.kind is ScopeKind.GROUP:
        return stmt.where(Household.group_id == scope.id)
    return stmt.where(VillagerGroup.village_id.in_(_village_ids(scope)))


def _in_scope(column, scope: Scope):
    """Condition on a transfer-like row's household (group scope) or village (others)."""
    if scope.kind is ScopeKind.GROUP:
        return column.household_id.in_(_household_ids(scope))
    return column.village_id.in_(_village_ids(scope))


def _issued_by_category(scope: Scope, period: Period) -> dict[Category | None, int]:
    """Award points posted in the period by category, less those reversed (any time)."""
    start, end = _bounds(period)
    reversed_ids = sa.select(Transfer.reverses_id).where(Transfer.reverses_id.is_not(None))
    rows = db.session.execute(
        sa.select(Transfer.category, sa.func.sum(Transfer.amount))
        .where(
            _in_scope(Transfer, scope),
            Transfer.kind == TransferKind.AWARD,
            Transfer.status == TransferStatus.POSTED,
            Transfer.posted_at >= start,
            Transfer.posted_at < end,
            Transfer.id.not_in(reversed_ids),
        )
        .group_by(Transfer.category)
    )
    return {category: int(total) for category, total in rows}


def _months_filter(scope: Scope):
    column = {
        ScopeKind.GROUP: HouseholdMonth.group_id,
        ScopeKind.VILLAGE: HouseholdMonth.village_id,
        ScopeKind.TOWN: HouseholdMonth.town_id,
    }[scope.kind]
    return column == scope.id


def _redeemed_by_month(scope: Scope, start_month: date, end_month: date) -> dict[date, int]:
    """Return each month's redeemed points net of refunds, summed by the database.

    One row of per-month sums (a CASE per month, portable to SQLite): fetching every
    redemption to bucket it in Python took half a second for a 12,000-household town.
    """
    months = [start_month]
    while months[-1] < end_month:
        months.append(_add_months(months[-1], 1))
    bounds = [
        datetime.combine(m, time.min, tzinfo=LOCAL_TZ) for m in [*months, _add_months(end_month, 1)]
    ]
    signed = sa.case(
        (Transfer.kind == TransferKind.REDEMPTION, Transfer.amount), else_=-Transfer.amount
    )
    sums = [
        sa.func.coalesce(
            sa.func.sum(
                sa.case((sa.and_(Transfer.posted_at >= low, Transfer.posted_at < high), signed))
            ),
            0,
        )
        for low, high in zip(bounds, bounds[1:], strict=False)
    ]
    row = db.session.execute(
        sa.select(*sums).where(
            _in_scope(Transfer, scope),
            Transfer.kind.in_([TransferKind.REDEMPTION, TransferKind.REFUND]),
            Transfer.status == TransferStatus.POSTED,
            Transfer.posted_at >= bounds[0],
            Transfer.posted_at < bounds[-1],
        )
    ).one()
    return {month: int(total) for month, total in zip(months, row, strict=True) if total}


def _trend(scope: Scope, period: Period) -> list[tuple[date, int, int, int]]:
    last = min(period.end, this_month())
    first = _add_months(last, -11)
    earned = {
        month: (int(a or 0), int(d or 0))
        for month, a, d in db.session.execute(
            sa.select(
                HouseholdMonth.month,
                sa.func.sum(HouseholdMonth.awarded),
                sa.func.sum(HouseholdMonth.deducted),
            )
            .where(
                _months_filter(scope), HouseholdMonth.month >= first, HouseholdMonth.month <= last
            )
            .group_by(HouseholdMonth.month)
        )
    }
    redeemed = _redeemed_by_month(scope, first, last)
    return [
        (month, *earned.get(month, (0, 0)), redeemed.get(month, 0))
        for month in (_add_months(first, i) for i in range(12))
    ]


def _goods(scope: Scope, period: Period) -> list[GoodsRow]:
    start, end = _bounds(period)
    rows = db.session.execute(
        sa.select(
            RedemptionLine.item_name,
            sa.func.sum(RedemptionLine.quantity - RedemptionLine.voided_quantity),
            sa.func.sum(
                (RedemptionLine.quantity - RedemptionLine.voided_quantity)
                * RedemptionLine.unit_points
            ),
        )
        .join(Redemption, RedemptionLine.redemption_id == Redemption.id)
        .where(
            Redemption.household_id.in_(_household_ids(scope)),
            Redemption.created_at >= start,
            Redemption.created_at < end,
        )
        .group_by(RedemptionLine.item_name)
    )
    goods = [GoodsRow(name, int(units or 0), int(points or 0)) for name, units, points in rows]
    return sorted((g for g in goods if g.units), key=lambda g: (-g.points, g.name))


def _stock(scope: Scope) -> list[StockRow]:
    """Stock now in the shops of the scope's villages (and the town's shops for a town)."""
    villages = _village_ids(scope)
    shops = sa.select(Shop.id).where(Shop.village_id.in_(villages))
    if scope.kind is ScopeKind.TOWN:
        shops = sa.select(Shop.id).where(Shop.town_id == scope.id)
    costs = (
        sa.select(
            StockMovement.item_id,
            sa.func.sum(StockMovement.cost_fen).label("cost"),
            sa.func.sum(StockMovement.quantity).label("units"),
        )
        .where(StockMovement.kind == MovementKind.INTAKE, StockMovement.cost_fen.is_not(None))
        .group_by(StockMovement.item_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(Shop.name, Item.name, Item.stock, Item.points, costs.c.cost, costs.c.units)
        .join(Shop, Item.shop_id == Shop.id)
        .outerjoin(costs, costs.c.item_id == Item.id)
        .where(Item.shop_id.in_(shops), Item.stock > 0)
        .order_by(Shop.name, Item.name)
    )
    return [
        StockRow(
            shop,
            item,
            units,
            units * points,
            round(units * cost / cost_units) if cost is not None and cost_units else None,
        )
        for shop, item, units, points, cost, cost_units in rows
    ]


def _cadres(scope: Scope, period: Period) -> list[CadreRow]:
    start, end = _bounds(period)
    by_user: dict[int, CadreRow] = {}

    def row(user_id: int, name: str) -> CadreRow:
        return by_user.setdefault(user_id, CadreRow(user_id, name))

    for user_id, name, count, points in db.session.execute(
        sa.select(
            User.id, User.display_name, sa.func.count(Transfer.id), sa.func.sum(Transfer.amount)
        )
        .join(User, Transfer.recorded_by_id == User.id)
        .where(
            _in_scope(Transfer, scope),
            Transfer.kind.in_([TransferKind.AWARD, TransferKind.DEDUCTION]),
            Transfer.created_at >= start,
            Transfer.created_at < end,
        )
        .group_by(User.id, User.display_name)
    ):
        entry = row(user_id, name)
        entry.recorded, entry.recorded_points = count, int(points or 0)
    for user_id, name, count in db.session.execute(
        sa.select(User.id, User.display_name, sa.func.count(Approval.id))
        .join(User, Approval.user_id == User.id)
        .join(Transfer, Approval.transfer_id == Transfer.id)
        .where(_in_scope(Transfer, scope), Approval.created_at >= start, Approval.created_at < end)
        .group_by(User.id, User.display_name)
    ):
        row(user_id, name).approved = count
    return sorted(by_user.values(), key=lambda r: (-(r.recorded + r.approved), r.name))


def _villages(scope: Scope, period: Period) -> list[tuple[str, int, int, float]]:
    if scope.kind is not ScopeKind.TOWN:
        return []
    from .rankings import places

    issued = {
        village_id: (int(a or 0), int(d or 0))
        for village_id, a, d in db.session.execute(
            sa.select(
                HouseholdMonth.village_id,
                sa.func.sum(HouseholdMonth.awarded),
                sa.func.sum(HouseholdMonth.deducted),
            )
            .where(
                HouseholdMonth.town_id == scope.id,
                HouseholdMonth.month >= period.start,
                HouseholdMonth.month <= period.end,
            )
            .group_by(HouseholdMonth.village_id)
        )
    }
    return [
        (p.name, *issued.get(p.place_id, (0, 0)), p.participation)
        for p in sorted(places(scope, period), key=lambda p: p.name)
    ]


def build(scope: Scope, period: Period) -> Report:
    """Return the report of a place for a period."""
    months = (
        sa.select(
            sa.func.sum(HouseholdMonth.deducted),
            sa.func.count(sa.distinct(HouseholdMonth.household_id)).filter(
                HouseholdMonth.awarded > 0
            ),
        )
        .join(Household, HouseholdMonth.household_id == Household.id)
        .where(
            _months_filter(scope),
            HouseholdMonth.month >= period.start,
            HouseholdMonth.month <= period.end,
            Household.is_active.is_(True),
        )
    )
    deducted, participants = db.session.execute(months).one()
    outstanding = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Account.balance), 0)).where(
            Account.kind == AccountKind.HOUSEHOLD_SPENDABLE,
            Account.household_id.in_(_household_ids(scope)),
        )
    )
    pending_count, pending_points = db.session.execute(
        sa.select(
            sa.func.count(Transfer.id), sa.func.coalesce(sa.func.sum(Transfer.amount), 0)
        ).where(_in_scope(Transfer, scope), Transfer.status == TransferStatus.PENDING)
    ).one()
    redeemed = _redeemed_by_month(scope, period.start, period.end)
    return Report(
        scope=scope,
        period=period,
        issued_by_category=_issued_by_category(scope, period),
        deducted=int(deducted or 0),
        redeemed=sum(redeemed.values()),
        outstanding=int(outstanding),
        households=count_households(scope),
        participants=int(participants or 0),
        pending_count=int(pending_count),
        pending_points=int(pending_points),
        goods=_goods(scope, period),
        stock=_stock(scope),
        cadres=_cadres(scope, period),
        trend=_trend(scope, period),
        villages=_villages(scope, period),
    )
