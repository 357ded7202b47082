"""Love supermarkets (爱心超市): shops, their goods and stock, redemptions and day closings."""

from __future__ import annotations

import enum
from datetime import date, datetime, time

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class Shop(db.Model):
    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(primary_key=True)
    town_id: Mapped[int] = mapped_column(sa.ForeignKey("towns.id"), index=True)
    #: The village the shop belongs to; None when it serves every village of the town.
    village_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    is_active: Mapped[bool] = mapped_column(default=True)
    #: Exchange window (兑换日): days of the month, e.g. "10" or "10,25"; None: any day.
    exchange_days: Mapped[str | None] = mapped_column(sa.String(90))
    #: ISO weekdays the shop exchanges on, e.g. "67" for Saturday and Sunday; None: any.
    exchange_weekdays: Mapped[str | None] = mapped_column(sa.String(7))
    #: Local opening and closing times (Asia/Shanghai); None: all day.
    opens_at: Mapped[time | None] = mapped_column(sa.Time)
    closes_at: Mapped[time | None] = mapped_column(sa.Time)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    town = relationship("Town")
    village = relationship("Village")
    items: Mapped[list[Item]] = relationship(
        back_populates="shop", order_by="(Item.category, Item.name)"
    )

    def serves(self, household) -> bool:
        """Return whether a household of that village may redeem here."""
        village = household.group.village
        if self.village_id is not None:
            return self.village_id == village.id
        return self.town_id == village.town_id

    def __repr__(self) -> str:
        return f"<Shop {self.id} {self.name}>"


class Item(db.Model):
    """Goods on a shop's shelf, priced in spendable points."""

    __tablename__ = "shop_items"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "name"),
        sa.CheckConstraint("points > 0", name="points_positive"),
        # The last line of defence: a movement that would oversell fails here.
        sa.CheckConstraint("stock >= 0", name="stock_not_negative"),
        sa.CheckConstraint("low_stock_at >= 0", name="low_stock_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    #: Shelf category, e.g. 粮油, 日用品, 清洁用品 (the shop's own words).
    category: Mapped[str] = mapped_column(sa.String(30))
    #: Price in spendable points.
    points: Mapped[int] = mapped_column()
    #: Units on the shelf; equals the sum of the item's stock movements (check-ledger).
    stock: Mapped[int] = mapped_column(default=0)
    #: The clerk's page warns when stock falls to this many units or fewer.
    low_stock_at: Mapped[int] = mapped_column(default=5)
    is_active: Mapped[bool] = mapped_column(default=True)
    #: Unguessable name of the item's photo file (public: goods carry no personal data).
    photo_token: Mapped[str | None] = mapped_column(sa.String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    shop: Mapped[Shop] = relationship(back_populates="items")

    @property
    def is_low(self) -> bool:
        return self.is_active and self.stock <= self.low_stock_at

    def __repr__(self) -> str:
        return f"<Item {self.id} {self.name} {self.points}p ×{self.stock}>"


class MovementKind(enum.StrEnum):
    INTAKE = "intake"  #: goods arrive: bought, donated or paid from a budget
    REDEMPTION = "redemption"  #: handed over at the counter
    RETURN = "return"  #: a voided redemption puts the goods back on the shelf
    WRITE_OFF = "write_off"  #: spoiled, broken, lost, with a reason


class Funding(enum.StrEnum):
    """Who paid for an intake: much of the stock is donated or paid from a budget."""

    PURCHASED = "purchased"
    DONATED = "donated"
    VILLAGE_BUDGET = "village_budget"
    TOWN_BUDGET = "town_budget"
    OTHER = "other"


class StockMovement(db.Model):
    """One change of an item's stock; stock changes only through these rows."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        sa.CheckConstraint("quantity <> 0", name="quantity_nonzero"),
        sa.CheckConstraint(
            "(kind IN ('intake', 'return')) = (quantity > 0)", name="direction_matches_kind"
        ),
        sa.CheckConstraint("cost_fen IS NULL OR cost_fen >= 0", name="cost_not_negative"),
        sa.Index("ix_stock_movements_item_created", "item_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Unique per business event (an intake form, a write-off) so a double tap adds once.
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(120), unique=True)
    item_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_items.id"))
    kind: Mapped[MovementKind] = mapped_column(enum_column(MovementKind))
    #: Signed: positive puts units on the shelf, negative takes them off.
    quantity: Mapped[int] = mapped_column()
    #: Intakes: what the goods cost in total, in fen (0.01 yuan); None when unknown.
    cost_fen: Mapped[int | None] = mapped_column(sa.BigInteger)
    funding: Mapped[Funding | None] = mapped_column(enum_column(Funding))
    #: Donor or funding source in words, e.g. 县妇联 or 2026 年村集体经费.
    donor: Mapped[str | None] = mapped_column(sa.String(60))
    #: Write-offs and returns: why.
    reason: Mapped[str | None] = mapped_column(sa.String(200))
    redemption_id: Mapped[int | None] = mapped_column(sa.ForeignKey("redemptions.id"), index=True)
    #: Returns: the void that took the goods back.
    void_id: Mapped[int | None] = mapped_column(sa.ForeignKey("redemption_voids.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    item: Mapped[Item] = relationship()
    user = relationship("User")
    redemption: Mapped[Redemption | None] = relationship(back_populates="movements")
    void: Mapped[RedemptionVoid | None] = relationship(back_populates="movements")


class Identification(enum.StrEnum):
    """How the clerk identified the household at the counter."""

    QR = "qr"  #: the card's QR code, by camera or handheld scanner
    CODE = "code"  #: the short code printed on the card, typed
    LOOKUP = "lookup"  #: by name or phone, confirmed in person (a forgotten card)


class Redemption(db.Model):
    """One checkout at the counter: a cart of goods paid with one transfer."""

    __tablename__ = "redemptions"
    __table_args__ = (
        sa.CheckConstraint("total_points > 0", name="total_positive"),
        sa.Index("ix_redemptions_shop_created", "shop_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The checkout's key: a double tap or a retried request finds this redemption.
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    #: Hash of the cart asked for; the same key with another cart is refused.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id"))
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    #: Who collected the goods, when the clerk noted it.
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"))
    clerk_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    identified_by: Mapped[Identification] = mapped_column(enum_column(Identification))
    #: The card scanned or typed, if any.
    card_id: Mapped[int | None] = mapped_column(sa.ForeignKey("household_cards.id"))
    #: The ledger transfer that debited the points.
    transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"), unique=True)
    total_points: Mapped[int] = mapped_column(sa.BigInteger)
    #: The household's spendable balance right after the checkout, printed on the receipt.
    balance_after: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    shop: Mapped[Shop] = relationship()
    household = relationship("Household")
    member = relationship("Member")
    clerk = relationship("User")
    card = relationship("Card")
    transfer = relationship("Transfer")
    lines: Mapped[list[RedemptionLine]] = relationship(
        back_populates="redemption", order_by="RedemptionLine.id"
    )
    voids: Mapped[list[RedemptionVoid]] = relationship(
        back_populates="redemption", order_by="RedemptionVoid.id"
    )
    movements: Mapped[list[StockMovement]] = relationship(
        back_populates="redemption", order_by="StockMovement.id"
    )

    @property
    def voided_points(self) -> int:
        return sum(line.voided_quantity * line.unit_points for line in self.lines)

    @property
    def net_points(self) -> int:
        return self.total_points - self.voided_points

    @property
    def fully_voided(self) -> bool:
        return all(line.voided_quantity == line.quantity for line in self.lines)

    def __repr__(self) -> str:
        return f"<Redemption {self.id} {self.total_points}p>"


class RedemptionLine(db.Model):
    """One item of a redemption, with the price and name it had at the counter."""

    __tablename__ = "redemption_lines"
    __table_args__ = (
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("unit_points > 0", name="unit_points_positive"),
        # Voids take back units at most once each: the guarded UPDATE and this agree.
        sa.CheckConstraint(
            "voided_quantity >= 0 AND voided_quantity <= quantity", name="voided_within_quantity"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    redemption_id: Mapped[int] = mapped_column(sa.ForeignKey("redemptions.id"), index=True)
    item_id: Mapped[int] = mapped_column(sa.ForeignKey("shop_items.id"), index=True)
    item_name: Mapped[str] = mapped_column(sa.String(60))
    unit_points: Mapped[int] = mapped_column()
    quantity: Mapped[int] = mapped_column()
    #: Units handed back by voids; only ever grows, by a guarded UPDATE.
    voided_quantity: Mapped[int] = mapped_column(default=0)

    redemption: Mapped[Redemption] = relationship(back_populates="lines")
    item: Mapped[Item] = relationship()

    @property
    def points(self) -> int:
        return self.unit_points * self.quantity

    @property
    def remaining(self) -> int:
        return self.quantity - self.voided_quantity


class RedemptionVoid(db.Model):
    """A void at the counter: some or all units of a redemption taken back, points refunded."""

    __tablename__ = "redemption_voids"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The void form's key, inserted before anything moves: a double tap voids once.
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    #: Hash of the lines and quantities asked for; the same key with others is refused.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    redemption_id: Mapped[int] = mapped_column(sa.ForeignKey("redemptions.id"), index=True)
    #: The refund transfer that gave the points back.
    transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"), unique=True)
    points: Mapped[int] = mapped_column(sa.BigInteger)
    reason: Mapped[str] = mapped_column(sa.String(200))
    voided_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    redemption: Mapped[Redemption] = relationship(back_populates="voids")
    transfer = relationship("Transfer")
    voided_by = relationship("User")
    movements: Mapped[list[StockMovement]] = relationship(
        back_populates="void", order_by="StockMovement.id"
    )


class DayClosing(db.Model):
    """A clerk's end-of-day sign-off: the day's figures as they stood when it was closed."""

    __tablename__ = "day_closings"
    __table_args__ = (sa.UniqueConstraint("shop_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id"))
    #: The local (Asia/Shanghai) business day.
    day: Mapped[date] = mapped_column(sa.Date)
    #: The figures at closing: redemptions, points, voids, items (see services.shop.day_summary).
    figures: Mapped[dict] = mapped_column(sa.JSON)
    closed_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    shop: Mapped[Shop] = relationship()
    closed_by = relationship("User")
