"""Yearly clearing of spendable points (积分清零), one run per village and date."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime


class ClearingRun(db.Model):
    """A village's clearing on one date: inserted first, so running it twice clears once."""

    __tablename__ = "clearing_runs"
    __table_args__ = (sa.UniqueConstraint("village_id", "clearing_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"))
    #: The local date the village's setting named.
    clearing_date: Mapped[date] = mapped_column(sa.Date)
    households: Mapped[int] = mapped_column(default=0)
    points: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Who ran it; None when the scheduled command did.
    run_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    village = relationship("Village")
    run_by = relationship("User")
