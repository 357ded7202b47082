"""Monthly honour points per household, kept in step with the ledger for rankings and boards.

The ledger calls ``count`` when an award or deduction is posted (+1) and when one is reversed
(-1, in the month of what is reversed). ``recompute`` derives the same figures from the
transfers alone: ``rebuild`` writes them, ``check`` compares them (pointsmart check-ledger).
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..extensions import db
from ..models import Household, HouseholdMonth, Transfer, TransferKind, TransferStatus, Village
from ..models import VillagerGroup as Group
from ..timeutil import to_local

_COUNTED = (TransferKind.AWARD, TransferKind.DEDUCTION)
_FIGURES = ("points", "awarded", "deducted", "awards", "deductions")


def month_of(transfer: Transfer) -> date:
    """Return the first day of the local month the transfer was posted in."""
    return to_local(transfer.posted_at).date().replace(day=1)


def _figures(kind: TransferKind, amount: int, sign: int) -> dict[str, int]:
    if kind is TransferKind.AWARD:
        return {"points": sign * amount, "awarded": sign * amount, "awards": sign}
    return {"points": -sign * amount, "deducted": sign * amount, "deductions": sign}


def _upsert(household_id: int, month: date, delta: dict[str, int]) -> None:
    place = db.session.execute(
        sa.select(Household.group_id, Group.village_id, Village.town_id)
        .join(Group, Household.group_id == Group.id)
        .join(Village, Group.village_id == Village.id)
        .where(Household.id == household_id)
    ).one()
    row = {
        "household_id": household_id,
        "month": month,
        "group_id": place.group_id,
        "village_id": place.village_id,
        "town_id": place.town_id,
        **{name: delta.get(name, 0) for name in _FIGURES},
    }
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(HouseholdMonth).values(**row)
    # One statement, so two postings for one household at once add up instead of racing.
    stmt = stmt.on_conflict_do_update(
        index_elements=["household_id", "month"],
        set_={name: getattr(HouseholdMonth, name) + stmt.excluded[name] for name in _FIGURES},
    )
    db.session.execute(stmt)


def count(transfer: Transfer, sign: int = 1) -> None:
    """Add a posted award or deduction to its month (sign -1 when it is reversed)."""
    if transfer.kind not in _COUNTED or transfer.household_id is None:
        return
    _upsert(
        transfer.household_id, month_of(transfer), _figures(transfer.kind, transfer.amount, sign)
    )


def recompute() -> dict[tuple[int, date], dict[str, int]]:
    """Return {(household, month): figures} derived from the posted transfers alone."""
    reversed_ids = (
        sa.select(Transfer.reverses_id)
        .where(Transfer.reverses_id.is_not(None), Transfer.status == TransferStatus.POSTED)
        .scalar_subquery()
    )
    rows = db.session.execute(
        sa.select(Transfer.household_id, Transfer.kind, Transfer.amount, Transfer.posted_at).where(
            Transfer.kind.in_(_COUNTED),
            Transfer.status == TransferStatus.POSTED,
            Transfer.household_id.is_not(None),
            Transfer.id.not_in(reversed_ids),
        )
    )
    totals: dict[tuple[int, date], dict[str, int]] = {}
    for household_id, kind, amount, posted_at in rows:
        key = (household_id, to_local(posted_at).date().replace(day=1))
        figures = totals.setdefault(key, dict.fromkeys(_FIGURES, 0))
        for name, value in _figures(kind, amount, 1).items():
            figures[name] += value
    return totals


def stored() -> dict[tuple[int, date], dict[str, int]]:
    """Return the stored monthly figures, leaving out rows that are all zero."""
    result = {}
    for row in db.session.scalars(sa.select(HouseholdMonth)):
        figures = {name: getattr(row, name) for name in _FIGURES}
        if any(figures.values()):
            result[(row.household_id, row.month)] = figures
    return result


def check() -> list[str]:
    """Return a line for every household month whose stored figures differ from the ledger's."""
    want, have = recompute(), stored()
    return [
        f"household {household} month {month:%Y-%m}: stored {have.get((household, month))}, "
        f"from transfers {want.get((household, month))}"
        for household, month in sorted(set(want) | set(have))
        if want.get((household, month)) != have.get((household, month))
    ]


def rebuild() -> int:
    """Replace every stored monthly figure by what the transfers say; return the rows written."""
    db.session.execute(sa.delete(HouseholdMonth))
    totals = recompute()
    for (household_id, month), figures in totals.items():
        _upsert(household_id, month, figures)
    db.session.flush()
    return len(totals)
