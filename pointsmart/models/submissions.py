"""What villagers submit: claims for their own work and reports of violations (举报 / 随手拍)."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class SubmissionStatus(enum.StrEnum):
    SUBMITTED = "submitted"  #: waiting for a cadre to verify
    VERIFIED = "verified"  #: the cadre confirmed it; its award is in approval
    REJECTED = "rejected"

    def can_become(self, new: SubmissionStatus) -> bool:
        """Return whether moving from this status to ``new`` is legal."""
        return self is SubmissionStatus.SUBMITTED and new is not SubmissionStatus.SUBMITTED


class Claim(db.Model):
    """A villager's "I cleaned the lane today": verified by a cadre, then approved."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"))
    submitted_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    #: The rule the villager thinks applies; the verifier may choose another.
    rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("scoring_rules.id"))
    description: Mapped[str] = mapped_column(sa.String(500))
    status: Mapped[SubmissionStatus] = mapped_column(
        enum_column(SubmissionStatus), default=SubmissionStatus.SUBMITTED
    )
    verified_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reject_reason: Mapped[str | None] = mapped_column(sa.String(200))
    transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    household = relationship("Household")
    member = relationship("Member")
    submitted_by = relationship("User", foreign_keys=[submitted_by_id])
    verified_by = relationship("User", foreign_keys=[verified_by_id])
    rule = relationship("ScoringRule")
    transfer = relationship("Transfer")
    photos = relationship("Photo", primaryjoin="Photo.claim_id == Claim.id", viewonly=True)


class Report(db.Model):
    """A villager's report of a violation; the reporter is rewarded when it is verified.

    ``anonymous`` hides the reporter from other villagers, never from the committee.
    """

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    reporter_household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    submitted_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    what: Mapped[str] = mapped_column(sa.String(500))
    location: Mapped[str] = mapped_column(sa.String(100))
    anonymous: Mapped[bool] = mapped_column(default=False)
    status: Mapped[SubmissionStatus] = mapped_column(
        enum_column(SubmissionStatus), default=SubmissionStatus.SUBMITTED
    )
    verified_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reject_reason: Mapped[str | None] = mapped_column(sa.String(200))
    #: The household found responsible, if any, and the deduction recorded for it.
    offender_household_id: Mapped[int | None] = mapped_column(sa.ForeignKey("households.id"))
    reward_transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"))
    deduction_transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    village = relationship("Village")
    reporter_household = relationship("Household", foreign_keys=[reporter_household_id])
    offender_household = relationship("Household", foreign_keys=[offender_household_id])
    submitted_by = relationship("User", foreign_keys=[submitted_by_id])
    verified_by = relationship("User", foreign_keys=[verified_by_id])
    reward_transfer = relationship("Transfer", foreign_keys=[reward_transfer_id])
    deduction_transfer = relationship("Transfer", foreign_keys=[deduction_transfer_id])
    photos = relationship("Photo", primaryjoin="Photo.report_id == Report.id", viewonly=True)
