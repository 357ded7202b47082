"""API tokens for mini-programs, handheld scanners and dashboards, and their idempotent requests."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow
from .types import UTCDateTime


class ApiToken(db.Model):
    """A bearer token with one role over one place, issued by a town administrator.

    Each token acts through a user of its own (``user``), holding exactly the token's grant,
    so the services' access checks and the audit log work as for a person; ``owner`` is the
    person it was issued to (None for a device such as a shop's scanner).
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), unique=True)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    #: What the token is for, e.g. 青山村超市扫码枪 or 县数据看板.
    name: Mapped[str] = mapped_column(sa.String(60))
    #: SHA-256 of the secret; the secret itself is shown once and never stored.
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: The first characters of the secret, to tell tokens apart in lists.
    prefix: Mapped[str] = mapped_column(sa.String(12))
    town_id: Mapped[int] = mapped_column(sa.ForeignKey("towns.id"), index=True)
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    user = relationship("User", foreign_keys=[user_id])
    owner = relationship("User", foreign_keys=[owner_id])
    created_by = relationship("User", foreign_keys=[created_by_id])
    revoked_by = relationship("User", foreign_keys=[revoked_by_id])

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ApiRequest(db.Model):
    """A write request made under an Idempotency-Key, with the response it got.

    The same key with the same request gets this response again; with another request, 422.
    """

    __tablename__ = "api_requests"
    __table_args__ = (sa.UniqueConstraint("token_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(sa.ForeignKey("api_tokens.id"))
    key: Mapped[str] = mapped_column(sa.String(100))
    #: SHA-256 of method, path and the canonical JSON body.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int] = mapped_column()
    response: Mapped[dict] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
