"""The audit log: who did what, when, to what, with the values before and after."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime


class AuditEntry(db.Model):
    """One staff action. Append-only: the app has no way to change or delete an entry, and
    the database refuses UPDATE (and on PostgreSQL DELETE) by trigger."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_town_at", "town_id", "at"),
        sa.Index("ix_audit_log_village_at", "village_id", "at"),
        sa.Index("ix_audit_log_actor_at", "actor_id", "at"),
        sa.Index("ix_audit_log_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: None for the system (scheduled commands, the command line without a user).
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    #: The actor's name at the time, so the entry reads the same after a rename.
    actor_name: Mapped[str] = mapped_column(sa.String(60))
    #: What was done, e.g. "award.approve", "stock.intake", "account.deactivate".
    action: Mapped[str] = mapped_column(sa.String(40))
    target_type: Mapped[str | None] = mapped_column(sa.String(30))
    target_id: Mapped[int | None] = mapped_column()
    #: The places the action concerns, for scoping and filtering.
    town_id: Mapped[int | None] = mapped_column(sa.ForeignKey("towns.id"))
    village_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villages.id"))
    #: A short description with the facts that matter (names, points, quantities).
    summary: Mapped[str] = mapped_column(sa.String(300))
    before: Mapped[dict | None] = mapped_column(sa.JSON)
    after: Mapped[dict | None] = mapped_column(sa.JSON)
    #: The client address of the request, when there was one.
    ip: Mapped[str | None] = mapped_column(sa.String(45))

    actor = relationship("User")
