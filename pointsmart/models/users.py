"""Accounts, their roles scoped to places, and login sessions."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime, enum_column


class Role(enum.StrEnum):
    VILLAGER = "villager"  #: a household member; scope: the member's household
    CADRE = "cadre"  #: grid officer / village cadre; scope: a village or a group
    COMMITTEE = "committee"  #: village committee member; scope: a village
    CLERK = "clerk"  #: love-supermarket clerk; scope: a shop
    ADMIN = "admin"  #: town administrator; scope: a town


class User(UserMixin, db.Model):
    """Anyone who logs in. Staff use username + password; villagers phone + PIN."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column(sa.String(60))
    username: Mapped[str | None] = mapped_column(sa.String(40), unique=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    phone: Mapped[str | None] = mapped_column(sa.String(20), unique=True)
    pin_hash: Mapped[str | None] = mapped_column(sa.String(255))
    #: The household member this account belongs to (villagers).
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"), unique=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    #: Preferred interface language, None for the default (Simplified Chinese).
    locale: Mapped[str | None] = mapped_column(sa.String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    member = relationship("Member")
    grants: Mapped[list[RoleGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="RoleGrant.id"
    )

    #: Set by the user loader: the LoginSession this request is authenticated by.
    current_session_id = None

    def get_id(self) -> str:
        # Flask-Login stores the login-session token, so logout can end it server-side.
        return self.current_session_id or ""

    @property
    def roles(self) -> set[Role]:
        return {g.role for g in self.grants}

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username or self.phone}>"


class RoleGrant(db.Model):
    """One role held by a user over one place."""

    __tablename__ = "role_grants"
    __table_args__ = (
        sa.CheckConstraint(
            "(CASE WHEN town_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN village_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN group_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN shop_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN household_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_scope",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    role: Mapped[Role] = mapped_column(enum_column(Role))
    town_id: Mapped[int | None] = mapped_column(sa.ForeignKey("towns.id"))
    village_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villages.id"))
    group_id: Mapped[int | None] = mapped_column(sa.ForeignKey("villager_groups.id"))
    shop_id: Mapped[int | None] = mapped_column(sa.ForeignKey("shops.id"))
    household_id: Mapped[int | None] = mapped_column(sa.ForeignKey("households.id"))

    user: Mapped[User] = relationship(back_populates="grants")
    town = relationship("Town")
    village = relationship("Village")
    group = relationship("VillagerGroup")
    shop = relationship("Shop")
    household = relationship("Household")

    @property
    def place(self):
        return self.town or self.village or self.group or self.shop or self.household


class LoginSession(db.Model):
    """A server-side login, so logging out really ends it (a copied cookie dies too)."""

    __tablename__ = "login_sessions"

    #: Random token kept in the signed session cookie.
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()
