"""Redemption at the counter: checkout of a cart, voids, and the end-of-day closing.

A checkout is one transaction: the redemption row goes in first under the checkout's unique
key (so a double tap or a retry waits for, then finds, the first), then its lines, stock
movements, ledger transfer and audit entry in one flush. The row locks come last, so that they
are held only until the commit: each item's stock is taken by a guarded UPDATE
(``stock >= quantity``) in item-id order, then the ledger debits the points with the floor
inside its UPDATE (accounts in id order). Any refusal raises, and the request rolls the whole
transaction back: nothing half-done is ever committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from .. import access
from ..extensions import db, dialect_insert
from ..models import (
    Card,
    DayClosing,
    Household,
    Identification,
    Item,
    Member,
    MovementKind,
    Redemption,
    RedemptionLine,
    RedemptionVoid,
    Role,
    Shop,
    StockMovement,
    User,
)
from ..timeutil import LOCAL_TZ, to_local, utcnow
from . import audit, catalogue, ledger
from .errors import (
    AlreadyResolved,
    CardRevoked,
    Forbidden,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
)

log = logging.getLogger(__name__)

#: A cart holds at most this many different items.
MAX_LINES = 50
#: At most this many units of one item per checkout.
MAX_UNITS = 999


def _fingerprint(**content) -> str:
    payload = json.dumps(content, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _whole(value, what, low: int, high: int) -> int:
    return catalogue._whole(value, what, low, high)


# --- the cart -----------------------------------------------------------------------------------


def parse_cart(pairs: Iterable[tuple[object, object]]) -> dict[int, int]:
    """Return {item id: units} from (item id, quantity) pairs, merging repeats.

    Pairs with a quantity of 0 or left empty are dropped (an untouched line of the form).
    Raises InvalidInput for negative, fractional or huge quantities, bad ids, or an empty cart.
    """
    typed = []
    for raw_id, raw_quantity in pairs:
        text = str(raw_quantity if raw_quantity is not None else "").strip()
        if text not in ("", "0"):
            typed.append((raw_id, raw_quantity))
    return _checked_cart(typed)


def _checked_cart(pairs: Iterable[tuple[object, object]]) -> dict[int, int]:
    """Return {item id: units}, refusing any id or quantity that is not a valid whole number.

    Raises InvalidInput.
    """
    cart: dict[int, int] = {}
    for raw_id, raw_quantity in pairs:
        units = _whole(raw_quantity, _l("The quantity"), 1, MAX_UNITS)
        item_id = _whole(raw_id, _l("The item"), 1, 2**62)
        cart[item_id] = cart.get(item_id, 0) + units
        if cart[item_id] > MAX_UNITS:
            raise InvalidInput(
                _l("At most %(max)s units of one item can be redeemed at once.", max=MAX_UNITS)
            )
    if not cart:
        raise InvalidInput(_l("The cart is empty: add at least one item."))
    if len(cart) > MAX_LINES:
        raise InvalidInput(_l("A cart can hold at most %(max)s different items.", max=MAX_LINES))
    return cart


@dataclass
class PricedLine:
    item: Item
    quantity: int

    @property
    def points(self) -> int:
        return self.item.points * self.quantity


@dataclass
class PricedCart:
    lines: list[PricedLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(line.points for line in self.lines)

    @property
    def units(self) -> int:
        return sum(line.quantity for line in self.lines)


def price(shop: Shop, cart: dict[int, int]) -> PricedCart:
    """Return the cart with the shop's items and current prices, in item-id order.

    Raises InvalidInput for an item of another shop, an item no longer on sale, or a total
    beyond what one event may move.
    """
    items = {
        item.id: item for item in db.session.scalars(sa.select(Item).where(Item.id.in_(list(cart))))
    }
    priced = PricedCart()
    for item_id in sorted(cart):
        item = items.get(item_id)
        if item is None or item.shop_id != shop.id:
            raise InvalidInput(_l("This shop has no such item."))
        if not item.is_active:
            raise InvalidInput(_l("“%(name)s” is no longer on sale.", name=item.name))
        priced.lines.append(PricedLine(item, cart[item_id]))
    if priced.total > ledger.MAX_POINTS:
        raise InvalidInput(
            _l("At most %(max)s points can move in one record.", max=ledger.MAX_POINTS)
        )
    return priced


def precheck(shop: Shop, household: Household, priced: PricedCart) -> None:
    """Say before confirmation what would refuse the cart: stock or points (advice, not a guard).

    Raises OutOfStock, InsufficientPoints.
    """
    for line in priced.lines:
        if line.item.stock < line.quantity:
            raise catalogue.out_of_stock(line.item, line.quantity)
    balance = ledger.balance_of(household).spendable
    # No village setting lets a purchase overdraw (ledger.redeem floors at zero, always).
    if priced.total > balance:
        raise InsufficientPoints(
            _l(
                "Not enough points: the household has %(balance)s, this cart needs %(needed)s.",
                balance=balance,
                needed=priced.total,
            )
        )


def _reason(priced: PricedCart) -> str:
    text = "、".join(f"{line.item.name}×{line.quantity}" for line in priced.lines)
    return (
        text
        if len(text) <= ledger.MAX_REASON_LENGTH
        else text[: ledger.MAX_REASON_LENGTH - 1] + "…"
    )


# --- checkout -----------------------------------------------------------------------------------


def _check_key(key: str, prefix: str) -> str:
    """Check a form's key, and that the ledger key derived from it (prefix + key) fits too."""
    key = ledger._check_key(key)
    ledger._check_key(prefix + key)
    return key


def find(key: str) -> Redemption | None:
    """Return the redemption made under a checkout key, if any."""
    return db.session.scalar(sa.select(Redemption).where(Redemption.idempotency_key == key))


def _insert_fresh(**values) -> Redemption | None:
    """Insert a redemption unless its key is taken; return it, or None.

    ON CONFLICT DO NOTHING instead of a savepoint: an INSERT of a key that a concurrent
    transaction holds waits for it, then inserts nothing, and the caller's transaction stays
    usable to read the winner.
    """
    redemption = db.session.scalar(
        dialect_insert(Redemption)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Redemption)
    )
    if redemption is not None:
        # A new row has no lines, movements or voids: marked loaded and empty, the rows
        # added below read back without a query.
        for name in ("lines", "movements", "voids"):
            set_committed_value(redemption, name, [])
    return redemption


def _replay(existing: Redemption, fingerprint: str) -> Redemption:
    if existing.fingerprint != fingerprint:
        raise IdempotencyConflict()
    log.info("replayed redemption %s for key %s", existing.id, existing.idempotency_key)
    return existing


def check_counter(clerk: User, shop: Shop, household: Household) -> None:
    """Refuse a clerk of another shop, a closed shop or a household the shop does not serve.

    Raises Forbidden, InvalidInput.
    """
    if not access.covers_shop(clerk, shop):
        raise Forbidden()
    if not shop.is_active:
        raise InvalidInput(_l("This shop is closed."))
    if not shop.serves(household):
        village = household.group.village
        raise Forbidden(
            _l(
                "This household belongs to %(village)s; %(shop)s serves %(served)s only.",
                village=village.name,
                shop=shop.name,
                served=shop.village.name if shop.village else shop.town.name,
            )
        )
    if not household.is_active:
        raise InvalidInput(_l("This household is no longer active."))


def checkout(
    *,
    shop: Shop,
    household: Household,
    cart: dict[int, int],
    clerk: User,
    key: str,
    identified_by: Identification = Identification.LOOKUP,
    card: Card | None = None,
    member: Member | None = None,
    expected_total: int | None = None,
) -> tuple[Redemption, bool]:
    """Redeem a cart for a household in one transaction; return (redemption, created).

    A key seen before returns its redemption (created False) when the cart is the same.
    Raises Forbidden, InvalidInput, OutsideExchangeWindow, OutOfStock, InsufficientPoints,
    IdempotencyConflict, CardRevoked.
    """
    key = _check_key(key, "checkout:")
    # The service's own guard: a caller that skipped parse_cart cannot redeem -1 or "abc".
    cart = _checked_cart(cart.items())
    fingerprint = _fingerprint(
        shop=shop.id,
        household=household.id,
        cart=sorted(cart.items()),
        member=member and member.id,
    )
    if not access.covers_shop(clerk, shop):  # before a replay, which would show the redemption
        raise Forbidden()
    existing = find(key)
    if existing is not None:
        return _replay(existing, fingerprint), False
    check_counter(clerk, shop, household)
    if card is not None and card.household_id != household.id:
        raise InvalidInput(_l("This card belongs to another household."))
    if card is not None and card.revoked_at is not None:
        raise CardRevoked()
    if member is not None and member.household_id != household.id:
        raise InvalidInput(_l("That person is not a member of this household."))
    catalogue.require_open(shop)
    priced = price(shop, cart)
    if expected_total is not None and expected_total != priced.total:
        raise InvalidInput(
            _l(
                "Prices changed while the cart was open: the total is now %(total)s points. "
                "Please check the cart and confirm again.",
                total=priced.total,
            )
        )

    reason = _reason(priced)
    # First, under the unique key: a concurrent twin waits here, then finds this one.
    redemption = _insert_fresh(
        idempotency_key=key,
        fingerprint=fingerprint,
        shop_id=shop.id,
        household_id=household.id,
        member_id=member and member.id,
        clerk_id=clerk.id,
        identified_by=identified_by,
        card_id=card and card.id,
        total_points=priced.total,
        balance_after=0,
    )
    if redemption is None:  # the key is taken, by a twin that committed first
        existing = find(key)
        if existing is None:  # cannot be: redemptions are never deleted
            raise RuntimeError(f"checkout key {key!r} is taken but has no redemption")
        return _replay(existing, fingerprint), False

    # The redemption's key proved this checkout fresh, so the ledger's derived key is too.
    transfer = ledger.add_redemption(
        household=household,
        shop=shop,
        points=priced.total,
        clerk=clerk,
        key=f"checkout:{key}",
        reason=reason,
        member=member,
        source=("redemption", redemption.id),
    )
    for line in priced.lines:
        db.session.add(
            RedemptionLine(
                redemption=redemption,
                item=line.item,
                item_name=line.item.name,
                unit_points=line.item.points,
                quantity=line.quantity,
                voided_quantity=0,
            )
        )
        db.session.add(
            StockMovement(
                item=line.item,
                kind=MovementKind.REDEMPTION,
                quantity=-line.quantity,
                redemption=redemption,
                user=clerk,
            )
        )
    audit.record(
        "redemption.checkout",
        clerk,
        redemption,
        summary=f"{household.name}: -{priced.total} {reason}",
        town_id=shop.town_id,
        village_id=household.group.village_id,
    )
    db.session.flush()  # every INSERT at once, before any row lock is taken

    for line in priced.lines:  # item-id order, then accounts: one lock order for everyone
        taken = db.session.execute(
            sa.update(Item)
            .where(Item.id == line.item.id, Item.stock >= line.quantity, Item.is_active.is_(True))
            .values(stock=Item.stock - line.quantity)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken != 1:
            raise catalogue.out_of_stock(line.item, line.quantity)
        db.session.expire(line.item, ["stock"])
    balance = ledger.apply_redemption(transfer)
    # One UPDATE, no flush: the ORM sets the same values on the object in memory.
    db.session.execute(
        sa.update(Redemption)
        .where(Redemption.id == redemption.id)
        .values(transfer_id=transfer.id, balance_after=balance)
        .execution_options(synchronize_session="evaluate")
    )
    log.info(
        "clerk %s redeemed %s points for household %s at shop %s (redemption %s)",
        clerk.id,
        priced.total,
        household.id,
        shop.id,
        redemption.id,
    )
    return redemption, True


# --- voids --------------------------------------------------------------------------------------


def can_void(actor: User, redemption: Redemption) -> bool:
    """Return whether the actor may void (part of) this redemption.

    A clerk of the shop, on the day it was made; a committee member of the household's
    village, any time.
    """
    if access.covers_village(actor, redemption.household.group.village, Role.COMMITTEE):
        return True
    return access.covers_shop(actor, redemption.shop) and (
        to_local(redemption.created_at).date() == to_local(utcnow()).date()
    )


def find_void(key: str) -> RedemptionVoid | None:
    """Return the void made under a key, if any."""
    return db.session.scalar(sa.select(RedemptionVoid).where(RedemptionVoid.idempotency_key == key))


def _replay_void(existing: RedemptionVoid, fingerprint: str) -> RedemptionVoid:
    if existing.fingerprint != fingerprint:
        raise IdempotencyConflict()
    return existing


def void(
    redemption: Redemption,
    actor: User,
    *,
    reason: str,
    key: str,
    quantities: dict[int, object] | None = None,
) -> tuple[RedemptionVoid, bool]:
    """Take back units of a redemption: refund their points and put them back on the shelf.

    ``quantities`` maps line ids to units; None takes back everything not yet voided.
    Returns (void, created). Raises Forbidden, InvalidInput, AlreadyResolved,
    IdempotencyConflict.
    """
    key = _check_key(key, "void:")
    reason = ledger._check_reason(reason)
    lines = {line.id: line for line in redemption.lines}
    if quantities is None:
        wanted = {line.id: line.remaining for line in lines.values() if line.remaining}
        if not wanted and find_void(key) is None:
            raise AlreadyResolved(_l("Everything in this redemption has already been voided."))
    else:
        wanted = {}
        for raw_id, raw_quantity in quantities.items():
            text = str(raw_quantity if raw_quantity is not None else "").strip()
            if text in ("", "0"):
                continue
            line_id = _whole(raw_id, _l("The item"), 1, 2**62)
            if line_id not in lines:
                raise InvalidInput(_l("That item is not part of this redemption."))
            wanted[line_id] = _whole(raw_quantity, _l("The quantity"), 1, lines[line_id].quantity)
        if not wanted:
            raise InvalidInput(_l("Choose at least one item to take back."))
    # "Everything left" is fingerprinted as asked, not as resolved: once done, nothing is left,
    # and a retry of the same request must still find its void rather than a conflict.
    fingerprint = _fingerprint(
        redemption=redemption.id,
        lines="all" if quantities is None else sorted(wanted.items()),
        reason=reason,
    )
    village = redemption.household.group.village
    if not (
        access.covers_shop(actor, redemption.shop)
        or access.covers_village(actor, village, Role.COMMITTEE)
    ):
        raise Forbidden()  # before a replay, which would show the void
    existing = find_void(key)
    if existing is not None:
        return _replay_void(existing, fingerprint), False
    if not can_void(actor, redemption):
        raise Forbidden(
            _l(
                "A clerk can void a redemption only on the day it was made; "
                "ask a committee member of the village."
            )
        )
    record = RedemptionVoid(
        idempotency_key=key,
        fingerprint=fingerprint,
        # By id: the back-reference would add the record before the savepoint does.
        redemption_id=redemption.id,
        points=sum(lines[i].unit_points * q for i, q in wanted.items()),
        reason=reason,
        voided_by=actor,
    )
    try:
        with db.session.begin_nested():
            db.session.add(record)
            db.session.flush()
    except IntegrityError:
        existing = find_void(key)
        if existing is None:
            raise
        return _replay_void(existing, fingerprint), False

    by_item = sorted(wanted.items(), key=lambda pair: lines[pair[0]].item_id)
    for line_id, units in sorted(wanted.items()):
        # The guard: units already taken back cannot be taken back again, whoever asks.
        moved = db.session.execute(
            sa.update(RedemptionLine)
            .where(
                RedemptionLine.id == line_id,
                RedemptionLine.voided_quantity + units <= RedemptionLine.quantity,
            )
            .values(voided_quantity=RedemptionLine.voided_quantity + units)
            .execution_options(synchronize_session=False)
        ).rowcount
        if moved != 1:
            raise AlreadyResolved(
                _l(
                    "“%(name)s” has already been voided; nothing was changed.",
                    name=lines[line_id].item_name,
                )
            )
    for line_id, units in by_item:  # items before accounts, as at checkout
        line = lines[line_id]
        db.session.execute(
            sa.update(Item)
            .where(Item.id == line.item_id)
            .values(stock=Item.stock + units)
            .execution_options(synchronize_session=False)
        )
        db.session.add(
            StockMovement(
                item_id=line.item_id,
                kind=MovementKind.RETURN,
                quantity=units,
                redemption=redemption,
                void=record,
                reason=reason,
                user=actor,
            )
        )
    record.transfer = ledger.refund(
        redemption.transfer,
        record.points,
        actor,
        reason,
        key=f"void:{key}",
        source=("redemption", redemption.id),
    )
    db.session.flush()
    for line in lines.values():
        db.session.expire(line, ["voided_quantity"])
    for item_line in redemption.lines:
        db.session.expire(item_line.item, ["stock"])
    audit.record(
        "redemption.void",
        actor,
        redemption,
        summary=f"{redemption.household.name}: +{record.points}; {reason}",
        town_id=redemption.shop.town_id,
        village_id=redemption.household.group.village_id,
        after={"lines": {str(k): v for k, v in wanted.items()}},
    )
    log.info(
        "user %s voided %s points of redemption %s: %s",
        actor.id,
        record.points,
        redemption.id,
        reason,
    )
    return record, True


# --- the day ------------------------------------------------------------------------------------


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """Return the UTC-aware start and end of a local business day."""
    start = datetime.combine(day, time.min, tzinfo=LOCAL_TZ)
    return start, start + timedelta(days=1)


@dataclass
class ItemDay:
    item_id: int
    name: str
    redeemed: int = 0
    returned: int = 0
    received: int = 0
    written_off: int = 0
    points: int = 0
    stock_end: int = 0
    low: bool = False

    @property
    def net_units(self) -> int:
        return self.redeemed - self.returned


@dataclass
class DaySummary:
    shop_id: int
    day: date
    redemptions: list[Redemption]
    voids: list[RedemptionVoid]
    items: list[ItemDay]
    households: int

    @property
    def redeemed_points(self) -> int:
        return sum(r.total_points for r in self.redemptions)

    @property
    def voided_points(self) -> int:
        return sum(v.points for v in self.voids)

    @property
    def net_points(self) -> int:
        return self.redeemed_points - self.voided_points

    def figures(self) -> dict:
        """Return the figures kept by a closing (plain JSON)."""
        return {
            "redemptions": len(self.redemptions),
            "households": self.households,
            "redeemed_points": self.redeemed_points,
            "voids": len(self.voids),
            "voided_points": self.voided_points,
            "net_points": self.net_points,
            "items": [
                {
                    "item_id": i.item_id,
                    "name": i.name,
                    "redeemed": i.redeemed,
                    "returned": i.returned,
                    "points": i.points,
                    "stock_end": i.stock_end,
                }
                for i in self.items
            ],
        }


def day_summary(shop: Shop, day: date) -> DaySummary:
    """Return a shop's day: redemptions, voids, goods handed over and stock left at day's end."""
    start, end = day_bounds(day)
    redemptions = list(
        db.session.scalars(
            sa.select(Redemption)
            .where(
                Redemption.shop_id == shop.id,
                Redemption.created_at >= start,
                Redemption.created_at < end,
            )
            .order_by(Redemption.created_at, Redemption.id)
            .options(
                selectinload(Redemption.lines),
                selectinload(Redemption.household).selectinload(Household.group),
                selectinload(Redemption.clerk),
            )
        )
    )
    voids = list(
        db.session.scalars(
            sa.select(RedemptionVoid)
            .join(Redemption, RedemptionVoid.redemption_id == Redemption.id)
            .where(
                Redemption.shop_id == shop.id,
                RedemptionVoid.created_at >= start,
                RedemptionVoid.created_at < end,
            )
            .order_by(RedemptionVoid.created_at, RedemptionVoid.id)
            .options(selectinload(RedemptionVoid.movements), selectinload(RedemptionVoid.voided_by))
        )
    )
    # Per item and kind, the units moved that day, and the units moved since its end.
    in_day = sa.and_(StockMovement.created_at >= start, StockMovement.created_at < end)
    rows = db.session.execute(
        sa.select(
            Item.id,
            Item.name,
            Item.stock,
            Item.low_stock_at,
            Item.is_active,
            StockMovement.kind,
            sa.func.sum(sa.case((in_day, StockMovement.quantity), else_=0)),
            sa.func.sum(
                sa.case((StockMovement.created_at >= end, StockMovement.quantity), else_=0)
            ),
        )
        .select_from(Item)
        .outerjoin(StockMovement, StockMovement.item_id == Item.id)
        .where(Item.shop_id == shop.id)
        .group_by(
            Item.id, Item.name, Item.stock, Item.low_stock_at, Item.is_active, StockMovement.kind
        )
        .order_by(Item.name)
    ).all()
    items: dict[int, ItemDay] = {}
    after: dict[int, int] = {}
    for item_id, name, stock, low_at, active, kind, day_units, later_units in rows:
        entry = items.setdefault(item_id, ItemDay(item_id, name))
        entry.stock_end = stock
        entry.low = (active, low_at)  # settled below, against the stock at the day's end
        after[item_id] = after.get(item_id, 0) + int(later_units or 0)
        units = int(day_units or 0)
        if kind is MovementKind.REDEMPTION:
            entry.redeemed = -units
        elif kind is MovementKind.RETURN:
            entry.returned = units
        elif kind is MovementKind.INTAKE:
            entry.received = units
        elif kind is MovementKind.WRITE_OFF:
            entry.written_off = -units
    for item_id, entry in items.items():
        entry.stock_end -= after[item_id]
        active, low_at = entry.low
        entry.low = active and entry.stock_end <= low_at
    # Points per item from the day's lines, less what the day's voids gave back.
    for redemption in redemptions:
        for line in redemption.lines:
            if line.item_id in items:
                items[line.item_id].points += line.points
    for record in voids:
        for movement in record.movements:
            line = next(
                (li for li in record.redemption.lines if li.item_id == movement.item_id),
                None,
            )
            if line is not None and movement.item_id in items:
                items[movement.item_id].points -= line.unit_points * movement.quantity
    touched = [i for i in items.values() if i.redeemed or i.returned or i.received or i.written_off]
    untouched = [i for i in items.values() if i not in touched]
    return DaySummary(
        shop_id=shop.id,
        day=day,
        redemptions=redemptions,
        voids=voids,
        items=touched + untouched,
        households=len({r.household_id for r in redemptions}),
    )


def closing_of(shop: Shop, day: date) -> DayClosing | None:
    """Return the day's closing, if the shop has closed it."""
    return db.session.scalar(
        sa.select(DayClosing).where(DayClosing.shop_id == shop.id, DayClosing.day == day)
    )


def close_day(shop: Shop, day: date, actor: User) -> tuple[DayClosing, bool]:
    """Sign off a day's figures as they stand; return (closing, created).

    Closing twice keeps the first closing. Raises Forbidden, InvalidInput.
    """
    if not catalogue.can_manage(actor, shop):
        raise Forbidden()
    if day > to_local(utcnow()).date():
        raise InvalidInput(_l("A day can be closed only once it has begun."))
    existing = closing_of(shop, day)
    if existing is not None:
        return existing, False
    closing = DayClosing(
        shop=shop, day=day, figures=day_summary(shop, day).figures(), closed_by=actor
    )
    try:
        with db.session.begin_nested():
            db.session.add(closing)
            db.session.flush()
    except IntegrityError:
        existing = closing_of(shop, day)
        if existing is None:
            raise
        return existing, False
    audit.record("day.close", actor, shop, summary=f"{shop.name} {day}", after=closing.figures)
    log.info("user %s closed day %s of shop %s", actor.id, day, shop.id)
    return closing, True


def check_redemptions() -> list[str]:
    """Return a line for every redemption or void whose lines, stock or transfers disagree.

    A redemption's total equals its lines and its transfer; each void's points equal its refund
    transfer; units returned to the shelf equal the units voided; nothing is refunded beyond
    what was redeemed.
    """
    from ..models import Transfer

    problems = []
    line_totals = (
        sa.select(
            RedemptionLine.redemption_id,
            sa.func.sum(RedemptionLine.unit_points * RedemptionLine.quantity).label("points"),
            sa.func.sum(RedemptionLine.voided_quantity).label("voided_units"),
            sa.func.sum(RedemptionLine.unit_points * RedemptionLine.voided_quantity).label(
                "voided_points"
            ),
        )
        .group_by(RedemptionLine.redemption_id)
        .subquery()
    )
    returned = (
        sa.select(StockMovement.redemption_id, sa.func.sum(StockMovement.quantity).label("units"))
        .where(StockMovement.kind == MovementKind.RETURN)
        .group_by(StockMovement.redemption_id)
        .subquery()
    )
    refunded = (
        sa.select(Transfer.refunds_id, sa.func.sum(Transfer.amount).label("points"))
        .where(Transfer.refunds_id.is_not(None))
        .group_by(Transfer.refunds_id)
        .subquery()
    )
    line_points = sa.func.coalesce(line_totals.c.points, 0)
    voided_units = sa.func.coalesce(line_totals.c.voided_units, 0)
    voided_points = sa.func.coalesce(line_totals.c.voided_points, 0)
    returned_units = sa.func.coalesce(returned.c.units, 0)
    refunded_points = sa.func.coalesce(refunded.c.points, 0)
    rows = db.session.execute(
        sa.select(
            Redemption.id,
            Redemption.total_points,
            line_totals.c.points,
            line_totals.c.voided_units,
            line_totals.c.voided_points,
            Transfer.amount,
            returned.c.units,
            refunded.c.points,
        )
        .outerjoin(line_totals, line_totals.c.redemption_id == Redemption.id)
        .outerjoin(Transfer, Transfer.id == Redemption.transfer_id)
        .outerjoin(returned, returned.c.redemption_id == Redemption.id)
        .outerjoin(refunded, refunded.c.refunds_id == Redemption.transfer_id)
        # Only the redemptions that fail a check below come back (NULL sums count as 0).
        .where(
            sa.or_(
                Redemption.total_points != line_points,
                Redemption.total_points.is_distinct_from(Transfer.amount),  # NULL: no transfer
                voided_units != returned_units,
                voided_points != refunded_points,
                refunded_points > Redemption.total_points,
            )
        )
        .order_by(Redemption.id)
    )
    for rid, total, lines, v_units, v_points, debited, back_units, back_points in rows:
        if total != (lines or 0) or total != debited:
            problems.append(f"redemption {rid}: total {total}, lines {lines}, transfer {debited}")
        if (v_units or 0) != (back_units or 0):
            problems.append(f"redemption {rid}: {v_units} units voided, {back_units} returned")
        if (v_points or 0) != (back_points or 0) or (back_points or 0) > total:
            problems.append(
                f"redemption {rid}: {v_points} points voided, {back_points} refunded of {total}"
            )
    mismatched_voids = db.session.execute(
        sa.select(RedemptionVoid.id, RedemptionVoid.points, Transfer.amount)
        .outerjoin(Transfer, Transfer.id == RedemptionVoid.transfer_id)
        .where(sa.or_(Transfer.amount.is_(None), Transfer.amount != RedemptionVoid.points))
    ).all()
    for void_id, points, amount in mismatched_voids:
        problems.append(f"void {void_id}: {points} points, refund transfer {amount}")
    return problems
