"""Monthly points per household (for rankings) and published notice boards (红黑榜, 公示)."""

from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class HouseholdMonth(db.Model):
    """A household's honour points of one local month, kept in step by the ledger service.

    Awards and deductions count in the month they were posted; a reversal corrects the month
    of what it reverses, so a month's figures are its records as corrected. Places are copied
    in so that rankings of a group, village or town read one table by index.
    """

    __tablename__ = "household_months"
    __table_args__ = (
        sa.UniqueConstraint("household_id", "month"),
        sa.Index("ix_household_months_month_town_points", "month", "town_id", "points"),
        sa.Index("ix_household_months_month_village_points", "month", "village_id", "points"),
        sa.Index("ix_household_months_month_group_points", "month", "group_id", "points"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"))
    #: First day of the local (Asia/Shanghai) month.
    month: Mapped[date] = mapped_column(sa.Date)
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("villager_groups.id"))
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"))
    town_id: Mapped[int] = mapped_column(sa.ForeignKey("towns.id"))
    #: Net honour points: awarded minus deducted.
    points: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    awarded: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    deducted: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: How many awards and deductions (net of reversals).
    awards: Mapped[int] = mapped_column(default=0)
    deductions: Mapped[int] = mapped_column(default=0)

    household = relationship("Household")


class BoardKind(enum.StrEnum):
    MONTHLY = "monthly"  #: 红黑榜: the red list and the "needs improvement" list of a month
    COURTYARD = "courtyard"  #: 美丽庭院: the star households of a closed rating round


class Board(db.Model):
    """A published board: a frozen snapshot; a correction is a new version linked to the old."""

    __tablename__ = "boards"
    __table_args__ = (
        # One version n per village and month, or per rating round (NULLs are distinct).
        sa.Index(
            "uq_boards_monthly_version",
            "village_id",
            "period",
            "version",
            unique=True,
            sqlite_where=sa.text("kind = 'monthly'"),
            postgresql_where=sa.text("kind = 'monthly'"),
        ),
        sa.Index(
            "uq_boards_courtyard_version",
            "rating_round_id",
            "version",
            unique=True,
            sqlite_where=sa.text("kind = 'courtyard'"),
            postgresql_where=sa.text("kind = 'courtyard'"),
        ),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint("(version = 1) = (corrects_id IS NULL)", name="correction_links"),
        sa.CheckConstraint(
            "(kind = 'courtyard') = (rating_round_id IS NOT NULL)", name="courtyard_round"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    kind: Mapped[BoardKind] = mapped_column(enum_column(BoardKind))
    #: First day of the month the board is about (courtyard: the month the round closed).
    period: Mapped[date] = mapped_column(sa.Date)
    rating_round_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rating_rounds.id"))
    version: Mapped[int] = mapped_column(default=1)
    #: The board this one corrects (the previous version).
    corrects_id: Mapped[int | None] = mapped_column(sa.ForeignKey("boards.id"), unique=True)
    #: What the correction changes and why, in the committee's words.
    correction_note: Mapped[str | None] = mapped_column(sa.String(300))
    #: The snapshot as published: lists, names as shown (masked where the village chose),
    #: the tie rule, the settings in force. Never changed after publication.
    content: Mapped[dict] = mapped_column(sa.JSON)
    published_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    village = relationship("Village")
    rating_round = relationship("RatingRound")
    published_by = relationship("User")
    corrects: Mapped[Board | None] = relationship(remote_side=[id], back_populates="corrected_by")
    corrected_by: Mapped[Board | None] = relationship(back_populates="corrects")
