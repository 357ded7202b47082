"""The place tree: town → village → villager group → household → member."""

from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class BoardNames(enum.StrEnum):
    """How the "needs improvement" board shows a household."""

    FULL = "full"
    MASKED = "masked"
    GROUP_ONLY = "group_only"


class Town(db.Model):
    __tablename__ = "towns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    villages: Mapped[list[Village]] = relationship(back_populates="town", order_by="Village.name")

    def __repr__(self) -> str:
        return f"<Town {self.id} {self.name}>"


class Village(db.Model):
    __tablename__ = "villages"
    __table_args__ = (
        sa.UniqueConstraint("town_id", "name"),
        sa.CheckConstraint(
            "(clearing_month IS NULL) = (clearing_day IS NULL)", name="clearing_date_complete"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    town_id: Mapped[int] = mapped_column(sa.ForeignKey("towns.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    #: Deductions may take a household's spendable balance below zero.
    allow_negative_balance: Mapped[bool] = mapped_column(default=False)
    #: Awards of at most this many points post without a committee member (None: never).
    auto_approve_max: Mapped[int | None] = mapped_column()
    #: Awards and deductions above this many points need two committee members (None: never).
    two_approver_min: Mapped[int | None] = mapped_column()
    #: How the "needs improvement" list names households on public boards.
    board_names: Mapped[BoardNames] = mapped_column(
        enum_column(BoardNames), default=BoardNames.MASKED
    )
    #: Yearly clearing of spendable points (积分清零) on this month and day; None: never.
    clearing_month: Mapped[int | None] = mapped_column()
    clearing_day: Mapped[int | None] = mapped_column()
    #: When the clearing date was set: the first clearing comes a month's notice later.
    clearing_set_on: Mapped[date | None] = mapped_column(sa.Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    town: Mapped[Town] = relationship(back_populates="villages")
    groups: Mapped[list[VillagerGroup]] = relationship(
        back_populates="village", order_by="VillagerGroup.name"
    )

    def __repr__(self) -> str:
        return f"<Village {self.id} {self.name}>"


class VillagerGroup(db.Model):
    """A villager group (村民小组), the unit of inspection rounds."""

    __tablename__ = "villager_groups"
    __table_args__ = (sa.UniqueConstraint("village_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    village_id: Mapped[int] = mapped_column(sa.ForeignKey("villages.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    #: How many of its households are active, kept by services.monthly: a ranking's "of N"
    #: adds up its groups instead of counting households.
    active_households: Mapped[int] = mapped_column(default=0, server_default="0")

    village: Mapped[Village] = relationship(back_populates="groups")
    households: Mapped[list[Household]] = relationship(
        back_populates="group", order_by="Household.house_number"
    )

    def __repr__(self) -> str:
        return f"<VillagerGroup {self.id} {self.name}>"


class Household(db.Model):
    """The point-holding unit (户)."""

    __tablename__ = "households"
    __table_args__ = (sa.UniqueConstraint("group_id", "house_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("villager_groups.id"), index=True)
    #: 门牌号 as painted on the door; unique within the group.
    house_number: Mapped[str] = mapped_column(sa.String(20))
    #: Display name, normally the head of household's name.
    name: Mapped[str] = mapped_column(sa.String(60))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    group: Mapped[VillagerGroup] = relationship(back_populates="households")
    members: Mapped[list[Member]] = relationship(
        back_populates="household", order_by="(Member.is_head.desc(), Member.id)"
    )

    @property
    def village(self) -> Village:
        return self.group.village

    def __repr__(self) -> str:
        return f"<Household {self.id} {self.name}>"


class Member(db.Model):
    """A person in a household (村民)."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(sa.ForeignKey("households.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(60))
    phone: Mapped[str | None] = mapped_column(sa.String(20), index=True)
    #: Last four characters of the ID card number, to tell namesakes apart.
    id_last4: Mapped[str | None] = mapped_column(sa.String(4))
    is_head: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)

    household: Mapped[Household] = relationship(back_populates="members")

    def __repr__(self) -> str:
        return f"<Member {self.id} {self.name}>"
