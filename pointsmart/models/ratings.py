"""Beautiful-courtyard ratings (美丽庭院评比)."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class RatingRoundStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class RatingRound(db.Model):
    """A rating round with its criteria (洁 净 绿 美, or the village's own) and star table."""

    __tablename__ = "rating_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(60))
    #: Criterion names, e.g. ["洁", "净", "绿", "美"].
    criteria: Mapped[list] = mapped_column(sa.JSON)
    #: Points for an overall rating of 1..5 stars, as a list of five integers.
    star_points: Mapped[list] = mapped_column(sa.JSON)
    status: Mapped[RatingRoundStatus] = mapped_column(
        enum_column(RatingRoundStatus), default=RatingRoundStatus.OPEN
    )
    opened_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    closed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    village = relationship("Village")
    opened_by = relationship("User", foreign_keys=[opened_by_id])
    closed_by = relationship("User", foreign_keys=[closed_by_id])
    ratings: Mapped[list[Rating]] = relationship(back_populates="round", order_by="Rating.id")


class Rating(db.Model):
    """One household's rating in a round: stars per criterion and the overall stars."""

    __tablename__ = "ratings"
    __table_args__ = (
        sa.UniqueConstraint("round_id", "household_id"),
        sa.CheckConstraint("stars BETWEEN 1 AND 5", name="stars_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(sa.ForeignKey("rating_rounds.id"))
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    inspector_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    #: Stars per criterion, e.g. {"洁": 5, "净": 4, "绿": 4, "美": 5}.
    scores: Mapped[dict] = mapped_column(sa.JSON)
    #: Overall stars: the rounded mean of the criteria.
    stars: Mapped[int] = mapped_column()
    #: The pending courtyard award, when the star table gives points.
    transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    round: Mapped[RatingRound] = relationship(back_populates="ratings")
    household = relationship("Household")
    inspector = relationship("User")
    transfer = relationship("Transfer")
    photos = relationship("Photo", primaryjoin="Photo.rating_id == Rating.id", viewonly=True)
