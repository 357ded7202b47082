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
    of what it reverses, so a month's figures are its records as corrected. The household's
    place, whether it is active and its tie order (village name, group name, house number) are
    copied in and follow the household (services.monthly), so that a ranking of a group,
    village or town reads one table by index: its top rows are the first entries of
    ``ix_household_months_ranking``, a household's rank is a count in a scope index.
    """

    __tablename__ = "household_months"
    __table_args__ = (
        sa.UniqueConstraint("household_id", "month"),
        sa.Index(
            "ix_household_months_month_town_active_points",
            "month",
            "town_id",
            "is_active",
            "points",
        ),
        sa.Index(
            "ix_household_months_month_village_active_points",
            "month",
            "village_id",
            "is_active",
            "points",
        ),
        sa.Index(
            "ix_household_months_month_group_active_points",
            "month",
            "group_id",
            "is_active",
            "points",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"))
    #: First day of the local (Asia/Shanghai) month.
    month: Mapped[date] = mapped_column(sa.Date)
    #: The household's place now (a household that moves takes its months along).
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("villager_groups.id"))
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"))
    town_id: Mapped[int] = mapped_column(sa.ForeignKey("towns.id"))
    #: Copy of households.is_active: rankings list active households only.
    is_active: Mapped[bool]
    #: Copies of the village's and group's names and of the house number, and the house
    #: number's length ("2" before "10"): the tie order, sorted by the database's own collation.
    village_name: Mapped[str] = mapped_column(sa.String(60))
    group_name: Mapped[str] = mapped_column(sa.String(60))
    house_number: Mapped[str] = mapped_column(sa.String(20))
    house_length: Mapped[int]
    #: Net honour points: awarded minus deducted.
    points: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    awarded: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    deducted: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: How many awards and deductions (net of reversals).
    awards: Mapped[int] = mapped_column(default=0)
    deductions: Mapped[int] = mapped_column(default=0)

    household = relationship("Household")


# The ranking order itself: most points first, ties as rankings.households lists them (declared
# here to name the column descending). town_id last lets a town's ranking, or several towns',
# skip other towns' entries in the index.
sa.Index(
    "ix_household_months_ranking",
    HouseholdMonth.month,
    HouseholdMonth.is_active,
    HouseholdMonth.points.desc(),
    HouseholdMonth.village_name,
    HouseholdMonth.group_name,
    HouseholdMonth.house_length,
    HouseholdMonth.house_number,
    HouseholdMonth.household_id,
    HouseholdMonth.town_id,
)


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
