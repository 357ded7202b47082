"""Household points cards: a QR token and a short code, revocable, never a database id."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime


class Card(db.Model):
    """One issue of a household's card; reissuing revokes the previous one at once."""

    __tablename__ = "household_cards"
    __table_args__ = (
        # At most one card in force per household.
        sa.Index(
            "uq_household_cards_household_current",
            "household_id",
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    #: Random token in the QR code (about 130 bits); unguessable, dies with the card.
    token: Mapped[str] = mapped_column(sa.String(40), unique=True)
    #: Short code printed under the QR for typing, e.g. 7KQ2M9XD (40 bits, no 0/O/1/I).
    code: Mapped[str] = mapped_column(sa.String(12), unique=True)
    issued_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(sa.String(200))

    household = relationship("Household")
    issued_by = relationship("User", foreign_keys=[issued_by_id])
    revoked_by = relationship("User", foreign_keys=[revoked_by_id])

    @property
    def is_current(self) -> bool:
        return self.revoked_at is None

    @property
    def display_code(self) -> str:
        """Return the short code in groups of four, as printed: 7KQ2-M9XD."""
        return "-".join(self.code[i : i + 4] for i in range(0, len(self.code), 4))

    def __repr__(self) -> str:
        return f"<Card {self.id} household {self.household_id}>"
