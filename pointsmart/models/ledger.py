"""The points ledger: accounts, immutable transfers and their entries.

A transfer is one business event (an award, a deduction, a redemption, a reversal,
a yearly clearing). Its entries move points between accounts and sum to zero per
unit (spendable, honour). Balances are the sum of the entries of posted transfers,
kept in ``accounts.balance`` by the ledger service so they read in O(1).
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class Unit(enum.StrEnum):
    SPENDABLE = "spendable"  #: 兑换积分, spent at the shop
    HONOUR = "honour"  #: 荣誉积分, lifetime earned; spending never lowers it


class AccountKind(enum.StrEnum):
    HOUSEHOLD_SPENDABLE = "household_spendable"
    HOUSEHOLD_HONOUR = "household_honour"
    VILLAGE_SOURCE = "village_source"  #: issues spendable points (goes negative)
    VILLAGE_SINK = "village_sink"  #: receives deductions and cleared points
    VILLAGE_HONOUR = "village_honour"  #: counterpart of every honour entry
    SHOP = "shop"  #: receives redeemed points

    @property
    def unit(self) -> Unit:
        if self in (AccountKind.HOUSEHOLD_HONOUR, AccountKind.VILLAGE_HONOUR):
            return Unit.HONOUR
        return Unit.SPENDABLE


class TransferKind(enum.StrEnum):
    AWARD = "award"
    DEDUCTION = "deduction"
    REDEMPTION = "redemption"
    REVERSAL = "reversal"
    CLEARING = "clearing"
    #: Points given back for goods taken back at the shop (part or all of a redemption).
    REFUND = "refund"


class TransferStatus(enum.StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"

    def can_become(self, new: TransferStatus) -> bool:
        """Return whether moving from this status to ``new`` is legal."""
        return self is TransferStatus.PENDING and new in (
            TransferStatus.POSTED,
            TransferStatus.VOIDED,
        )


class Category(enum.StrEnum):
    WASTE_SORTING = "waste_sorting"
    SANITATION = "sanitation"
    COURTYARD = "courtyard"
    TREE_PLANTING = "tree_planting"
    REPORTING = "reporting"
    VOLUNTEERING = "volunteering"
    OTHER = "other"


class Account(db.Model):
    __tablename__ = "accounts"
    __table_args__ = (
        sa.CheckConstraint(
            "(CASE WHEN household_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN village_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN shop_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_owner",
        ),
        # NULLs are distinct, so each pair is unique only among its owner type.
        sa.UniqueConstraint("household_id", "kind"),
        sa.UniqueConstraint("village_id", "kind"),
        sa.UniqueConstraint("shop_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[AccountKind] = mapped_column(enum_column(AccountKind))
    household_id: Mapped[int | None] = mapped_column(sa.ForeignKey("households.id"))
    village_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villages.id"))
    shop_id: Mapped[int | None] = mapped_column(sa.ForeignKey("shops.id"))
    #: Sum of the entries of posted transfers; written only by services.ledger.
    balance: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    household = relationship("Household")
    village = relationship("Village")
    shop = relationship("Shop")

    @property
    def owner(self):
        return self.household or self.village or self.shop

    def __repr__(self) -> str:
        return f"<Account {self.id} {self.kind.value} {self.balance}>"


class Transfer(db.Model):
    __tablename__ = "transfers"
    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint(
            "(kind = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_links"
        ),
        sa.CheckConstraint("(kind = 'refund') = (refunds_id IS NOT NULL)", name="refund_links"),
        sa.Index("ix_transfers_household_created", "household_id", "created_at"),
        sa.Index("ix_transfers_village_status", "village_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Unique per business event: a retried request finds the transfer it already made.
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    #: Hash of what the event asked for; the same key with other content is refused.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[TransferKind] = mapped_column(enum_column(TransferKind))
    status: Mapped[TransferStatus] = mapped_column(enum_column(TransferStatus))
    #: Magnitude of the event in points; the signed movements are in the entries.
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    household_id: Mapped[int | None] = mapped_column(sa.ForeignKey("households.id"))
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"))
    shop_id: Mapped[int | None] = mapped_column(sa.ForeignKey("shops.id"))
    #: The member who did the work (awards) or was served (redemptions).
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"))
    category: Mapped[Category | None] = mapped_column(enum_column(Category))
    #: Plain-words reason shown in the villager's history.
    reason: Mapped[str] = mapped_column(sa.String(200))
    note: Mapped[str | None] = mapped_column(sa.Text)
    #: What produced the transfer, e.g. ("claim", 12) or ("redemption", 40).
    source_type: Mapped[str | None] = mapped_column(sa.String(30))
    source_id: Mapped[int | None] = mapped_column(sa.Integer)
    recorded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    voided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    void_reason: Mapped[str | None] = mapped_column(sa.String(200))
    #: The transfer this one reverses; unique, so nothing is reversed twice.
    reverses_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"), unique=True)
    #: The redemption transfer a refund gives points back for (several refunds may share one).
    refunds_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"), index=True)
    #: The exact rule version the award or deduction was given under.
    rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("scoring_rules.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    entries: Mapped[list[Entry]] = relationship(
        back_populates="transfer", order_by="Entry.id", cascade="save-update, merge"
    )
    household = relationship("Household")
    village = relationship("Village")
    shop = relationship("Shop")
    member = relationship("Member")
    recorded_by = relationship("User", foreign_keys=[recorded_by_id])
    approved_by = relationship("User", foreign_keys=[approved_by_id])
    voided_by = relationship("User", foreign_keys=[voided_by_id])
    rule = relationship("ScoringRule")
    approvals = relationship("Approval", order_by="Approval.id", viewonly=True)
    reverses: Mapped[Transfer | None] = relationship(
        remote_side=[id], back_populates="reversed_by", foreign_keys=[reverses_id]
    )
    reversed_by: Mapped[Transfer | None] = relationship(
        back_populates="reverses", foreign_keys=[reverses_id]
    )
    refunds: Mapped[Transfer | None] = relationship(remote_side=[id], foreign_keys=[refunds_id])

    @property
    def signed_points(self) -> int:
        """Return the change this transfer makes to its household's spendable points."""
        if self.kind in (TransferKind.AWARD, TransferKind.REFUND):
            return self.amount
        if self.kind is TransferKind.REVERSAL:
            return -self.reverses.signed_points
        return -self.amount

    def __repr__(self) -> str:
        return f"<Transfer {self.id} {self.kind.value} {self.status.value} {self.amount}>"


class Entry(db.Model):
    """One leg of a transfer: a signed amount on one account."""

    __tablename__ = "ledger_entries"
    __table_args__ = (sa.CheckConstraint("amount <> 0", name="amount_nonzero"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transfer_id: Mapped[int] = mapped_column(sa.ForeignKey("transfers.id"), index=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger)

    transfer: Mapped[Transfer] = relationship(back_populates="entries")
    account: Mapped[Account] = relationship()
