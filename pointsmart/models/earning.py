"""How points come into existence: scoring rules, warnings, approvals, inspection rounds."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .ledger import Category
from .types import UTCDateTime, enum_column


class LimitPeriod(enum.StrEnum):
    NONE = "none"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class ScoringRule(db.Model):
    """One version of a rule of a village's published catalogue (积分细则), or a town template.

    Editing a rule adds a new version and retires the old one, so every award keeps
    the version and points it was given with.
    """

    __tablename__ = "scoring_rules"
    __table_args__ = (
        sa.CheckConstraint("points <> 0", name="points_nonzero"),
        sa.CheckConstraint(
            "(limit_period = 'none') = (limit_count IS NULL)", name="limit_complete"
        ),
        sa.CheckConstraint("limit_count IS NULL OR limit_count >= 1", name="limit_positive"),
        sa.CheckConstraint("(town_id IS NULL) <> (village_id IS NULL)", name="one_owner"),
        sa.UniqueConstraint("family", "version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Set for a town template that villages copy; village rules have village_id instead.
    town_id: Mapped[int | None] = mapped_column(sa.ForeignKey("towns.id"), index=True)
    village_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    #: Shared by every version of the same rule; limits count across versions.
    family: Mapped[str] = mapped_column(sa.String(32), default=lambda: uuid.uuid4().hex, index=True)
    version: Mapped[int] = mapped_column(default=1)
    #: False once a newer version replaced this one or the rule was withdrawn.
    is_current: Mapped[bool] = mapped_column(default=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    category: Mapped[Category] = mapped_column(enum_column(Category))
    #: Positive for an award, negative for a deduction.
    points: Mapped[int] = mapped_column()
    limit_count: Mapped[int | None] = mapped_column()
    limit_period: Mapped[LimitPeriod] = mapped_column(
        enum_column(LimitPeriod), default=LimitPeriod.NONE
    )
    photo_required: Mapped[bool] = mapped_column(default=False)
    #: Graduated deduction: the first offence in a limit period records a warning only.
    warning_first: Mapped[bool] = mapped_column(default=False)
    active_from: Mapped[date | None] = mapped_column(sa.Date)
    active_until: Mapped[date | None] = mapped_column(sa.Date)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    village = relationship("Village")
    town = relationship("Town")
    created_by = relationship("User")

    @property
    def is_deduction(self) -> bool:
        return self.points < 0

    def is_active_on(self, day: date) -> bool:
        """Return whether this version may be used on ``day``."""
        return (
            self.is_current
            and (self.active_from is None or self.active_from <= day)
            and (self.active_until is None or day <= self.active_until)
        )

    def __repr__(self) -> str:
        return f"<ScoringRule {self.id} {self.name} v{self.version} {self.points}>"


class RuleWarning(db.Model):
    """A first offence under a graduated rule: recorded, shown, but no points move."""

    __tablename__ = "rule_warnings"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"))
    rule_id: Mapped[int] = mapped_column(sa.ForeignKey("scoring_rules.id"))
    recorded_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(sa.Text)
    source_type: Mapped[str | None] = mapped_column(sa.String(30))
    source_id: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    household = relationship("Household")
    member = relationship("Member")
    rule = relationship("ScoringRule")
    recorded_by = relationship("User")


class Approval(db.Model):
    """One committee member's approval of a pending transfer (two may be required)."""

    __tablename__ = "approvals"
    __table_args__ = (sa.UniqueConstraint("transfer_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transfer_id: Mapped[int] = mapped_column(sa.ForeignKey("transfers.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user = relationship("User")


class RoundStatus(enum.StrEnum):
    OPEN = "open"
    SUBMITTED = "submitted"


class Mark(enum.StrEnum):
    PASS = "pass"  #: 合格
    FAIL = "fail"  #: 不合格
    ABSENT = "absent"  #: nobody home; nothing recorded
    RULE = "rule"  #: a rule chosen for this row


class InspectionRound(db.Model):
    """A cadre's round through one group: every household marked on one page, submitted once."""

    __tablename__ = "inspection_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("villager_groups.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(60))
    #: Rule applied to households marked 合格 (pass) / 不合格 (fail), if any.
    pass_rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("scoring_rules.id"))
    fail_rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("scoring_rules.id"))
    status: Mapped[RoundStatus] = mapped_column(enum_column(RoundStatus), default=RoundStatus.OPEN)
    opened_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    submitted_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    group = relationship("VillagerGroup")
    pass_rule = relationship("ScoringRule", foreign_keys=[pass_rule_id])
    fail_rule = relationship("ScoringRule", foreign_keys=[fail_rule_id])
    opened_by = relationship("User", foreign_keys=[opened_by_id])
    submitted_by = relationship("User", foreign_keys=[submitted_by_id])
    marks: Mapped[list[RoundMark]] = relationship(back_populates="round", order_by="RoundMark.id")


class RoundMark(db.Model):
    __tablename__ = "round_marks"
    __table_args__ = (sa.UniqueConstraint("round_id", "household_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(sa.ForeignKey("inspection_rounds.id"))
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"))
    mark: Mapped[Mark] = mapped_column(enum_column(Mark))
    rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("scoring_rules.id"))
    transfer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("transfers.id"))
    warning_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rule_warnings.id"))

    round: Mapped[InspectionRound] = relationship(back_populates="marks")
    household = relationship("Household")
    rule = relationship("ScoringRule")
    transfer = relationship("Transfer")
