"""Love supermarkets (爱心超市)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime


class Shop(db.Model):
    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(primary_key=True)
    town_id: Mapped[int] = mapped_column(sa.ForeignKey("towns.id"), index=True)
    #: The village the shop belongs to; None when it serves every village of the town.
    village_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    town = relationship("Town")
    village = relationship("Village")

    def serves(self, household) -> bool:
        """Return whether a household of that village may redeem here."""
        village = household.group.village
        if self.village_id is not None:
            return self.village_id == village.id
        return self.town_id == village.town_id

    def __repr__(self) -> str:
        return f"<Shop {self.id} {self.name}>"
