"""Column types shared by the models."""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite forgets the offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use pointsmart.timeutil.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def enum_column(enum_cls: type) -> sa.Enum:
    """Store an enum by its value as a named VARCHAR with a CHECK (portable, migratable)."""
    return sa.Enum(
        enum_cls,
        name=enum_cls.__name__.lower(),
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )
