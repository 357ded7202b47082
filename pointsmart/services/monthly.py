"""Monthly honour points per household, kept in step with the ledger for rankings and boards.

The ledger calls ``count`` when an award or deduction is posted (+1) and when one is reversed
(-1, in the month of what is reversed). ``recompute`` derives the same figures from the
transfers alone: ``rebuild`` writes them, ``check`` compares them (pointsmart check-ledger).

Each row also carries a copy of its household's place, whether it is active and its tie order
(village name, group name, house number), which rankings read by index. The copy follows the
household: every flush that renames or moves a village or group, or changes a household's
group, house number or activity, refreshes the rows concerned (``_follow``); ``check`` reports
any row whose copy differs from the household as it is. The same flushes keep each group's count
of active households (``villager_groups.active_households``, a ranking's "of N"); the roster's
bulk insert, which no flush sees, calls ``count_new_households``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date

import sqlalchemy as sa

from ..extensions import db, dialect_insert
from ..models import Household, HouseholdMonth, Transfer, TransferKind, TransferStatus, Village
from ..models import VillagerGroup as Group
from ..timeutil import to_local

#: Households per chunk when check and rebuild go through every month: bounds their memory.
CHUNK_HOUSEHOLDS = 5_000
_COUNTED = (TransferKind.AWARD, TransferKind.DEDUCTION)
_FIGURES = ("points", "awarded", "deducted", "awards", "deductions")
#: Copied from the household, its group and its village (see _place).
_COPIED = (
    "group_id",
    "village_id",
    "town_id",
    "is_active",
    "village_name",
    "group_name",
    "house_number",
    "house_length",
)


def month_of(transfer: Transfer) -> date:
    """Return the first day of the local month the transfer was posted in."""
    return to_local(transfer.posted_at).date().replace(day=1)


def _figures(kind: TransferKind, amount: int, sign: int) -> dict[str, int]:
    if kind is TransferKind.AWARD:
        return {"points": sign * amount, "awarded": sign * amount, "awards": sign}
    return {"points": -sign * amount, "deducted": sign * amount, "deductions": sign}


def _place():
    """Return the select of what household months copy, per household, labelled as _COPIED."""
    return (
        sa.select(
            Household.id.label("household_id"),
            Household.group_id,
            Group.village_id,
            Village.town_id,
            Household.is_active,
            Village.name.label("village_name"),
            Group.name.label("group_name"),
            Household.house_number,
            sa.func.length(Household.house_number).label("house_length"),
        )
        .join(Group, Household.group_id == Group.id)
        .join(Village, Group.village_id == Village.id)
    )


def _upsert(household_id: int, month: date, delta: dict[str, int]) -> None:
    place = db.session.execute(_place().where(Household.id == household_id)).one()
    row = {
        "household_id": household_id,
        "month": month,
        **{name: getattr(place, name) for name in _COPIED},
        **{name: delta.get(name, 0) for name in _FIGURES},
    }
    stmt = dialect_insert(HouseholdMonth).values(**row)
    # One statement, so two postings for one household at once add up instead of racing.
    stmt = stmt.on_conflict_do_update(
        index_elements=["household_id", "month"],
        set_={
            **{name: getattr(HouseholdMonth, name) + stmt.excluded[name] for name in _FIGURES},
            **{name: stmt.excluded[name] for name in _COPIED},
        },
    )
    db.session.execute(stmt)


def _refresh(connection, condition) -> None:
    """Copy the current place, activity and tie order into the household months matching."""
    place = _place().subquery()
    table = HouseholdMonth.__table__
    if connection.dialect.name == "postgresql":
        stmt = (
            sa.update(table)
            .where(table.c.household_id == place.c.household_id, condition)
            .values({name: place.c[name] for name in _COPIED})
        )
    else:  # no UPDATE ... FROM before SQLite 3.33
        stmt = (
            sa.update(table)
            .where(condition)
            .values(
                {
                    name: sa.select(place.c[name])
                    .where(place.c.household_id == table.c.household_id)
                    .scalar_subquery()
                    for name in _COPIED
                }
            )
        )
    connection.execute(stmt)


#: The attributes whose change moves a household in a ranking's order or scope.
_WATCHED = {
    Household: ("house_number", "group_id", "group", "is_active"),
    Group: ("name", "village_id", "village"),
    Village: ("name", "town_id", "town"),
}


def _was_and_is(obj, name: str) -> tuple:
    """Return an attribute's value before the flush and now."""
    now = getattr(obj, name)
    history = sa.inspect(obj).attrs[name].history
    return (history.deleted[0] if history.deleted else now), now


def _add_to_groups(connection, added: Counter) -> None:
    """Add to groups' counts of active households (deltas, so concurrent changes add up)."""
    table = Group.__table__
    rows = [{"group": g, "n": n} for g, n in sorted(added.items()) if n]
    if rows:
        connection.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("group"))
            .values(active_households=table.c.active_households + sa.bindparam("n")),
            rows,
        )


@sa.event.listens_for(db.session, "after_flush")
def _follow(session, _flush_context) -> None:
    """Refresh household months' copies and groups' counts after a flush changed them."""
    changed: dict[type, set[int]] = {Household: set(), Group: set(), Village: set()}
    added: Counter = Counter()
    for obj in session.new:
        if isinstance(obj, Household) and obj.is_active:
            added[obj.group_id] += 1
    for obj in session.dirty:
        names = _WATCHED.get(type(obj))
        if names is None:
            continue
        attrs = sa.inspect(obj).attrs
        if not any(attrs[name].history.has_changes() for name in names):
            continue
        changed[type(obj)].add(obj.id)
        if isinstance(obj, Household):
            group_was, group_is = _was_and_is(obj, "group_id")
            active_was, active_is = _was_and_is(obj, "is_active")
            added[group_was] -= bool(active_was)
            added[group_is] += bool(active_is)
    if any(added.values()):
        _add_to_groups(session.connection(), added)
    conditions = [
        column.in_(sorted(ids))
        for column, ids in (
            (HouseholdMonth.household_id, changed[Household]),
            (HouseholdMonth.group_id, changed[Group]),
            (HouseholdMonth.village_id, changed[Village]),
        )
        if ids
    ]
    if conditions:
        _refresh(session.connection(), sa.or_(*conditions))


def count_new_households(group_ids: Iterable[int]) -> None:
    """Count active households inserted without the ORM (one group id per household)."""
    _add_to_groups(db.session.connection(), Counter(group_ids))


def count(transfer: Transfer, sign: int = 1) -> None:
    """Add a posted award or deduction to its month (sign -1 when it is reversed)."""
    if transfer.kind not in _COUNTED or transfer.household_id is None:
        return
    _upsert(
        transfer.household_id, month_of(transfer), _figures(transfer.kind, transfer.amount, sign)
    )


def _household_chunks() -> Iterator[tuple[int | None, int | None]]:
    """Yield (after, upto) household id bounds of CHUNK_HOUSEHOLDS households each, in order.

    None leaves a side open, so the chunks together cover every id, even one no household has.
    """
    after = None
    while True:
        query = sa.select(Household.id).order_by(Household.id)
        if after is not None:
            query = query.where(Household.id > after)
        upto = db.session.scalar(query.offset(CHUNK_HOUSEHOLDS - 1).limit(1))
        yield after, upto
        if upto is None:
            return
        after = upto


def _within(column, households: tuple[int | None, int | None]):
    after, upto = households
    conditions = []
    if after is not None:
        conditions.append(column > after)
    if upto is not None:
        conditions.append(column <= upto)
    return sa.and_(sa.true(), *conditions)


def recompute(
    households: tuple[int | None, int | None] = (None, None),
) -> dict[tuple[int, date], dict[str, int]]:
    """Return {(household, month): figures} derived from the posted transfers alone, for the
    households with ids in (after, upto] (None: unbounded)."""
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
            _within(Transfer.household_id, households),
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


def stored(
    households: tuple[int | None, int | None] = (None, None),
) -> dict[tuple[int, date], dict[str, int]]:
    """Return the stored monthly figures of the households with ids in (after, upto], leaving
    out rows that are all zero."""
    rows = db.session.execute(
        sa.select(
            HouseholdMonth.household_id,
            HouseholdMonth.month,
            *(getattr(HouseholdMonth, name) for name in _FIGURES),
        ).where(_within(HouseholdMonth.household_id, households))
    )
    result = {}
    for household_id, month, *values in rows:
        if any(values):
            result[(household_id, month)] = dict(zip(_FIGURES, values, strict=True))
    return result


def stale_copies() -> list[str]:
    """Return a line for every household month whose copied place or tie order is out of date."""
    place = _place().subquery()
    stored = [getattr(HouseholdMonth, name) for name in _COPIED]
    current = [place.c[name] for name in _COPIED]
    rows = db.session.execute(
        sa.select(HouseholdMonth.household_id, HouseholdMonth.month, *stored, *current)
        .join(place, place.c.household_id == HouseholdMonth.household_id)
        .where(sa.or_(*(have != want for have, want in zip(stored, current, strict=True))))
        .order_by(HouseholdMonth.household_id, HouseholdMonth.month)
    )
    lines = []
    for household_id, month, *values in rows:
        pairs = zip(_COPIED, values[: len(_COPIED)], values[len(_COPIED) :], strict=True)
        differ = [(name, have, want) for name, have, want in pairs if have != want]
        stored_copy = {name: have for name, have, _want in differ}
        household_now = {name: want for name, _have, want in differ}
        lines.append(
            f"household {household_id} month {month:%Y-%m}: stored {stored_copy}, "
            f"the household's now {household_now}"
        )
    return lines


def stale_counts() -> list[str]:
    """Return a line for every group whose count of active households is wrong."""
    counted = (
        sa.select(sa.func.count(Household.id))
        .where(Household.group_id == Group.id, Household.is_active.is_(True))
        .scalar_subquery()
    )
    rows = db.session.execute(
        sa.select(Group.id, Group.active_households, counted)
        .where(Group.active_households != counted)
        .order_by(Group.id)
    )
    return [f"group {g}: stored {have} active households, counted {want}" for g, have, want in rows]


def check() -> list[str]:
    """Return a line for every household month whose stored figures differ from the ledger's
    or whose copy of the household's place and tie order is out of date, and for every group
    whose count of active households is wrong."""
    lines = []
    # A chunk of households at a time, so memory stays bounded whatever the county's size;
    # chunks go up by household id, so the lines come out sorted as a whole.
    for households in _household_chunks():
        want, have = recompute(households), stored(households)
        lines += [
            f"household {household} month {month:%Y-%m}: stored {have.get((household, month))}, "
            f"from transfers {want.get((household, month))}"
            for household, month in sorted(set(want) | set(have))
            if want.get((household, month)) != have.get((household, month))
        ]
    return lines + stale_copies() + stale_counts()


def rebuild() -> int:
    """Replace every stored monthly figure by what the transfers say; return the rows written."""
    db.session.execute(sa.delete(HouseholdMonth))
    written = 0
    for households in _household_chunks():
        totals = recompute(households)
        places = {
            place.household_id: place
            for place in db.session.execute(_place().where(_within(Household.id, households)))
        }
        rows = [
            {
                "household_id": household_id,
                "month": month,
                **{name: getattr(places[household_id], name) for name in _COPIED},
                **figures,
            }
            for (household_id, month), figures in totals.items()
        ]
        if rows:  # the table was emptied: plain inserts, many rows per statement
            db.session.execute(sa.insert(HouseholdMonth.__table__), rows)
        written += len(rows)
    db.session.flush()
    return written
