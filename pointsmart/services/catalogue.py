"""A shop's catalogue, stock and exchange window.

Stock changes only through recorded movements (intake, redemption, return, write-off), each
applied by a guarded UPDATE, so ``shop_items.stock`` always equals the sum of the item's
movements and never goes below zero, even with two clerks at once.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask_babel import LazyString
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

from .. import access
from ..extensions import db
from ..models import Funding, Item, MovementKind, Role, Shop, StockMovement, User
from ..timeutil import to_local, utcnow
from . import audit, photos
from .errors import Forbidden, IdempotencyConflict, InvalidInput, OutOfStock, OutsideExchangeWindow
from .ledger import MAX_POINTS, _check_key

log = logging.getLogger(__name__)

#: One movement moves at most this many units; more is a typing mistake.
MAX_QUANTITY = 10_000
#: Cost of one intake, in yuan.
MAX_COST_YUAN = Decimal("1000000")
ITEM_PHOTO_EDGE = 800
#: Shelf categories offered in the item form; a shop may type its own.
SUGGESTED_CATEGORIES = (
    "粮油",
    "日用品",
    "清洁用品",
    "个人护理",
    "厨房用品",
    "文具",
    "农资",
    "其他",
)


def can_manage(user: User, shop: Shop) -> bool:
    """Return whether the user runs this shop's catalogue: its clerks, or its town's administrators."""
    return access.covers_shop(user, shop) or any(
        g.role is Role.ADMIN and g.town_id == shop.town_id for g in user.grants
    )


def _require_manager(user: User, shop: Shop) -> None:
    if not can_manage(user, shop):
        raise Forbidden()


# --- validation -------------------------------------------------------------------------------


def _text(value, what, max_length: int, required: bool = True) -> str | None:
    value = unicodedata.normalize("NFKC", str(value or "")).strip()
    value = re.sub(r"\s+", " ", value)
    if not value:
        if required:
            raise InvalidInput(_l("Please fill in %(what)s.", what=what))
        return None
    if len(value) > max_length or any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidInput(
            _l("%(what)s may be at most %(max)s characters.", what=what, max=max_length)
        )
    return value


def _whole(value, what, low: int, high: int) -> int:
    """Return a whole number within [low, high], or raise a message naming the field."""
    if isinstance(value, bool):
        raise InvalidInput(_l("%(what)s must be a whole number.", what=what))
    if isinstance(value, str):
        text = unicodedata.normalize("NFKC", value).strip()
        if not re.fullmatch(r"[+-]?\d{1,12}", text):
            raise InvalidInput(_l("%(what)s must be a whole number.", what=what))
        value = int(text)
    if not isinstance(value, int):
        raise InvalidInput(_l("%(what)s must be a whole number.", what=what))
    if value < low or value > high:
        raise InvalidInput(
            _l("%(what)s must be between %(low)s and %(high)s.", what=what, low=low, high=high)
        )
    return value


def quantity(value) -> int:
    """Return a valid quantity of units (1 to MAX_QUANTITY). Raises InvalidInput."""
    return _whole(value, _l("The quantity"), 1, MAX_QUANTITY)


def yuan_to_fen(value) -> int | None:
    """Return an amount typed in yuan (e.g. "35.5") in fen; None when left empty."""
    text = unicodedata.normalize("NFKC", str(value or "")).strip().replace(",", "")
    if not text:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(_l("The cost must be an amount in yuan, like 35.50.")) from None
    if (
        not amount.is_finite()
        or amount < 0
        or amount > MAX_COST_YUAN
        or amount != amount.quantize(Decimal("0.01"))
    ):
        raise InvalidInput(_l("The cost must be an amount in yuan, like 35.50.")) from None
    return int(amount * 100)


# --- items ------------------------------------------------------------------------------------


@dataclass
class ItemData:
    """What the item form says; validated by the service."""

    name: str
    category: str
    points: int | str
    low_stock_at: int | str = 5
    is_active: bool = True


def _validated(data: ItemData) -> dict:
    return {
        "name": _text(data.name, _l("the item name"), 60),
        "category": _text(data.category, _l("the category"), 30),
        "points": _whole(data.points, _l("The price in points"), 1, MAX_POINTS),
        "low_stock_at": _whole(data.low_stock_at, _l("The low-stock warning"), 0, MAX_QUANTITY),
        "is_active": bool(data.is_active),
    }


def _name_taken(shop: Shop, name: str, except_id: int | None = None) -> bool:
    stmt = sa.select(Item.id).where(Item.shop_id == shop.id, Item.name == name)
    if except_id is not None:
        stmt = stmt.where(Item.id != except_id)
    return db.session.scalar(stmt) is not None


def create_item(shop: Shop, data: ItemData, actor: User) -> Item:
    """Put a new item (with no stock yet) in a shop's catalogue; return it.

    Raises Forbidden, InvalidInput.
    """
    _require_manager(actor, shop)
    values = _validated(data)
    if _name_taken(shop, values["name"]):
        raise InvalidInput(
            _l("This shop already has an item called “%(name)s”.", name=values["name"])
        )
    item = Item(shop=shop, stock=0, **values)
    db.session.add(item)
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:  # the same name added at the same moment
        raise InvalidInput(
            _l("This shop already has an item called “%(name)s”.", name=values["name"])
        ) from None
    audit.record(
        "item.create", actor, item, summary=f"{shop.name}: {item.name} {item.points}", after=values
    )
    log.info("user %s added item %s (%s) to shop %s", actor.id, item.id, item.name, shop.id)
    return item


def update_item(item: Item, data: ItemData, actor: User) -> Item:
    """Change an item's name, category, price, warning level or whether it is on sale.

    Past redemptions keep the name and price they had. Raises Forbidden, InvalidInput.
    """
    _require_manager(actor, item.shop)
    values = _validated(data)
    if _name_taken(item.shop, values["name"], except_id=item.id):
        raise InvalidInput(
            _l("This shop already has an item called “%(name)s”.", name=values["name"])
        )
    before = {k: getattr(item, k) for k in values}
    for key, value in values.items():
        setattr(item, key, value)
    db.session.flush()
    audit.record("item.update", actor, item, summary=item.name, before=before, after=values)
    log.info("user %s changed item %s: %s -> %s", actor.id, item.id, before, values)
    return item


def set_item_photo(item: Item, upload, actor: User) -> Item:
    """Store a checked, re-encoded photo of the goods and show it in the catalogue.

    Raises Forbidden, InvalidInput.
    """
    import secrets

    _require_manager(actor, item.shop)
    prepared = photos.prepare(upload)
    image = prepared.image
    image.thumbnail((ITEM_PHOTO_EDGE, ITEM_PHOTO_EDGE))
    token = secrets.token_urlsafe(18)
    folder = item_photo_folder()
    image.save(folder / f"{token}.jpg", "JPEG", quality=82, optimize=True)
    item.photo_token = token
    db.session.flush()
    return item


def item_photo_folder():
    """Return the folder of goods photos (beside the evidence photos, but public)."""
    path = photos.folder() / "goods"
    path.mkdir(parents=True, exist_ok=True)
    return path


def get_item(shop: Shop, item_id) -> Item:
    """Return an item of this shop. Raises InvalidInput for another shop's or none."""
    item = db.session.get(Item, item_id) if isinstance(item_id, int) else None
    if item is None or item.shop_id != shop.id:
        raise InvalidInput(_l("This shop has no such item."))
    return item


# --- stock movements --------------------------------------------------------------------------


def _content(movement: StockMovement) -> tuple:
    return (
        movement.kind,
        movement.quantity,
        movement.cost_fen,
        movement.funding,
        movement.donor,
        movement.reason,
    )


def _replay_movement(key: str, item: Item, movement: StockMovement) -> StockMovement | None:
    existing = db.session.scalar(
        sa.select(StockMovement).where(StockMovement.idempotency_key == key)
    )
    if existing is None:
        return None
    # The whole form, not just item and quantity: a reused key with another cost, donor or
    # reason is another event, and silently keeping the first would lose what was typed.
    if existing.item_id != item.id or _content(existing) != _content(movement):
        raise IdempotencyConflict()
    return existing


def _move(item: Item, movement: StockMovement, floor_check: bool) -> StockMovement:
    """Insert the movement (unless its key exists) and apply it to the stock by a guarded UPDATE."""
    if movement.idempotency_key:
        existing = _replay_movement(movement.idempotency_key, item, movement)
        if existing is not None:
            return existing
    try:
        with db.session.begin_nested():
            db.session.add(movement)
            db.session.flush()
    except IntegrityError:
        existing = _replay_movement(movement.idempotency_key, item, movement)
        if existing is None:
            raise
        return existing
    stmt = sa.update(Item).where(Item.id == item.id).values(stock=Item.stock + movement.quantity)
    if floor_check:
        stmt = stmt.where(Item.stock + movement.quantity >= 0)
    if db.session.execute(stmt.execution_options(synchronize_session=False)).rowcount != 1:
        raise out_of_stock(item, -movement.quantity)
    db.session.expire(item, ["stock"])
    return movement


def out_of_stock(item: Item, wanted: int) -> OutOfStock:
    """Return the error saying how many units of an item are left."""
    left = db.session.scalar(sa.select(Item.stock).where(Item.id == item.id)) or 0
    return OutOfStock(
        _l(
            "Not enough “%(name)s” in stock: %(left)s left, %(wanted)s wanted.",
            name=item.name,
            left=left,
            wanted=wanted,
        )
    )


def receive(
    item: Item,
    actor: User,
    *,
    quantity_,
    key: str,
    cost_yuan=None,
    funding: Funding | str | None = None,
    donor: str | None = None,
) -> StockMovement:
    """Record goods arriving on the shelf (bought, donated or paid from a budget); return it.

    Raises Forbidden, InvalidInput, IdempotencyConflict.
    """
    _require_manager(actor, item.shop)
    units = quantity(quantity_)
    key = _check_key(key)
    try:
        funding = Funding(funding) if funding else Funding.PURCHASED
    except ValueError:
        raise InvalidInput(_l("Please choose who paid for the goods.")) from None
    movement = StockMovement(
        idempotency_key=key,
        item=item,
        kind=MovementKind.INTAKE,
        quantity=units,
        cost_fen=yuan_to_fen(cost_yuan),
        funding=funding,
        donor=_text(donor, _l("the donor or funding source"), 60, required=False),
        user=actor,
    )
    movement = _move(item, movement, floor_check=False)
    audit.record(
        "stock.intake",
        actor,
        item,
        summary=f"{item.name} +{units}",
        after=audit.snapshot(movement, "quantity", "cost_fen", "funding", "donor"),
    )
    log.info("user %s received %s × item %s", actor.id, units, item.id)
    return movement


def write_off(item: Item, actor: User, *, quantity_, reason: str, key: str) -> StockMovement:
    """Take spoiled, broken or lost units off the shelf, with a reason; return the movement.

    Raises Forbidden, InvalidInput, OutOfStock, IdempotencyConflict.
    """
    _require_manager(actor, item.shop)
    units = quantity(quantity_)
    key = _check_key(key)
    movement = StockMovement(
        idempotency_key=key,
        item=item,
        kind=MovementKind.WRITE_OFF,
        quantity=-units,
        reason=_text(reason, _l("the reason"), 200),
        user=actor,
    )
    movement = _move(item, movement, floor_check=True)
    audit.record("stock.write_off", actor, item, summary=f"{item.name} -{units}: {movement.reason}")
    log.info("user %s wrote off %s × item %s: %s", actor.id, units, item.id, movement.reason)
    return movement


def movements(item: Item, limit: int = 100) -> list[StockMovement]:
    """Return an item's latest stock movements, newest first."""
    return list(
        db.session.scalars(
            sa.select(StockMovement)
            .where(StockMovement.item_id == item.id)
            .order_by(StockMovement.created_at.desc(), StockMovement.id.desc())
            .limit(limit)
        )
    )


def check_stock() -> list[tuple[Item, int]]:
    """Return every item whose stock differs from the sum of its movements, with that sum."""
    sums = (
        sa.select(StockMovement.item_id, sa.func.sum(StockMovement.quantity).label("total"))
        .group_by(StockMovement.item_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(Item, sa.func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.item_id == Item.id)
        .where(Item.stock != sa.func.coalesce(sums.c.total, 0))
        .order_by(Item.id)
    ).all()
    return [(item, int(total)) for item, total in rows]


# --- exchange window --------------------------------------------------------------------------


def _parse_days(text: str | None) -> str | None:
    text = unicodedata.normalize("NFKC", text or "").strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[,\s、;；]+", text) if p]
    days = set()
    for part in parts:
        if not part.isdigit() or not 1 <= int(part) <= 31:
            raise InvalidInput(
                _l("Exchange days must be days of the month from 1 to 31, e.g. “10” or “10, 25”.")
            )
        days.add(int(part))
    return ",".join(str(d) for d in sorted(days))


def _parse_weekdays(values) -> str | None:
    days = set()
    for value in values or ():
        text = str(value).strip()
        if not (text.isdigit() and 1 <= int(text) <= 7):
            raise InvalidInput(_l("Please choose weekdays from the list."))
        days.add(int(text))
    if not days or len(days) == 7:
        return None
    return "".join(str(d) for d in sorted(days))


def set_exchange_window(
    shop: Shop,
    actor: User,
    *,
    days: str | None,
    weekdays=(),
    opens_at: time | None = None,
    closes_at: time | None = None,
) -> Shop:
    """Set when the shop exchanges points: days of the month, weekdays and hours.

    Raises Forbidden, InvalidInput.
    """
    _require_manager(actor, shop)
    parsed_days = _parse_days(days)
    parsed_weekdays = _parse_weekdays(weekdays)
    if (opens_at is None) != (closes_at is None):
        raise InvalidInput(_l("Give both the opening and the closing time, or neither."))
    if opens_at is not None and opens_at >= closes_at:
        raise InvalidInput(_l("The shop must open before it closes."))
    before = audit.snapshot(shop, "exchange_days", "exchange_weekdays", "opens_at", "closes_at")
    shop.exchange_days = parsed_days
    shop.exchange_weekdays = parsed_weekdays
    shop.opens_at = opens_at
    shop.closes_at = closes_at
    db.session.flush()
    audit.record(
        "shop.window",
        actor,
        shop,
        summary=shop.name,
        before=before,
        after=audit.snapshot(shop, "exchange_days", "exchange_weekdays", "opens_at", "closes_at"),
    )
    log.info(
        "user %s set the exchange window of shop %s: days %s weekdays %s hours %s-%s",
        actor.id,
        shop.id,
        parsed_days,
        parsed_weekdays,
        opens_at,
        closes_at,
    )
    return shop


def is_open(shop: Shop, moment: datetime | None = None) -> bool:
    """Return whether the shop's exchange window includes the moment (default: now)."""
    local = to_local(moment or utcnow())
    if shop.exchange_days and str(local.day) not in shop.exchange_days.split(","):
        return False
    if shop.exchange_weekdays and str(local.isoweekday()) not in shop.exchange_weekdays:
        return False
    return shop.opens_at is None or shop.opens_at <= local.time() < shop.closes_at


def _weekday_names() -> list[str]:
    return [
        _("Monday"),
        _("Tuesday"),
        _("Wednesday"),
        _("Thursday"),
        _("Friday"),
        _("Saturday"),
        _("Sunday"),
    ]


def describe_window(shop: Shop) -> str:
    """Say in words when the shop exchanges points, e.g. "the 10th of each month, 08:00–17:00"."""
    return _describe(shop.exchange_days, shop.exchange_weekdays, shop.opens_at, shop.closes_at)


def _describe(days: str | None, weekdays: str | None, opens: time | None, closes: time | None):
    parts = []
    if days:
        parts.append(_("on day %(days)s of each month", days=days.replace(",", ", ")))
    if weekdays:
        names = _weekday_names()
        parts.append(", ".join(names[int(d) - 1] for d in weekdays))
    if opens is not None:
        parts.append(f"{opens.strftime('%H:%M')}–{closes.strftime('%H:%M')}")
    return "; ".join(parts) if parts else _("every day, all day")


def require_open(shop: Shop, moment: datetime | None = None) -> None:
    """Raise OutsideExchangeWindow, saying when the shop is open, unless it is open now."""
    if not is_open(shop, moment):
        raise OutsideExchangeWindow(
            _l(
                "%(shop)s exchanges points only %(window)s. Nothing was redeemed.",
                shop=shop.name,
                # Lazy too: the message may be shown in another language than now's.
                window=LazyString(
                    _describe,
                    shop.exchange_days,
                    shop.exchange_weekdays,
                    shop.opens_at,
                    shop.closes_at,
                ),
            )
        )
