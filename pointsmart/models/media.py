"""Photos: evidence for awards, claims, reports and courtyard ratings."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime

_OWNERS = ("transfer_id", "claim_id", "report_id", "rating_id")


class Photo(db.Model):
    """A re-encoded JPEG (EXIF stripped) with its thumbnail, stored under the instance folder.

    Served only to people of its village, by an unguessable token.
    """

    __tablename__ = "photos"
    __table_args__ = (
        sa.CheckConstraint(
            " + ".join(f"CASE WHEN {c} IS NULL THEN 0 ELSE 1 END" for c in _OWNERS) + " <= 1",
            name="one_owner",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(
        sa.String(32), unique=True, default=lambda: secrets.token_urlsafe(24)
    )
    #: The village whose people may see it.
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    #: SHA-256 of the uploaded bytes: the same photo submitted twice is flagged.
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    width: Mapped[int] = mapped_column()
    height: Mapped[int] = mapped_column()
    size_bytes: Mapped[int] = mapped_column()
    uploaded_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"), index=True)
    claim_id: Mapped[int | None] = mapped_column(sa.ForeignKey("claims.id"), index=True)
    report_id: Mapped[int | None] = mapped_column(sa.ForeignKey("reports.id"), index=True)
    rating_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ratings.id"), index=True)

    village = relationship("Village")
    uploaded_by = relationship("User")

    @property
    def file_name(self) -> str:
        return f"{self.token}.jpg"

    @property
    def thumb_name(self) -> str:
        return f"{self.token}.thumb.jpg"

    def attach(self, **owner) -> None:
        """Make this photo evidence of one record (transfer, claim, report or rating)."""
        ((name, record),) = owner.items()
        if any(getattr(self, column) is not None for column in _OWNERS):
            raise ValueError("photo already attached")
        setattr(self, f"{name}_id", record.id)
