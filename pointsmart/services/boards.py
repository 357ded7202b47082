"""Publishing notice boards: the monthly red list and "needs improvement" list (红黑榜), and the
star households of a courtyard rating round.

Publishing freezes a snapshot: the board's content never changes afterwards, whatever the ledger
does. A later correction of the figures is published as a new version that names the board it
corrects and says why. Names on the improvement list are stored only as the village chose to
show them (full, masked 王*明, or the group alone), so nothing unmasked is ever kept on a board.
"""

from __future__ import annotations

import logging
from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

from .. import access
from ..extensions import db
from ..models import (
    Board,
    BoardKind,
    BoardNames,
    Household,
    HouseholdMonth,
    RatingRound,
    RatingRoundStatus,
    Role,
    User,
    Village,
    VillagerGroup,
)
from ..timeutil import to_local
from . import audit, rankings, ratings
from .errors import AlreadyResolved, Forbidden, InvalidInput

log = logging.getLogger(__name__)

DEFAULT_SIZE = 10
MAX_SIZE = 50
MAX_NOTE_LENGTH = 300
#: Courtyard results list households rated this many stars or more (and confirmed).
STAR_HOUSEHOLD_MIN = ratings.STAR_HOUSEHOLD_MIN_STARS


def mask(name: str) -> str:
    """Return a name with its middle hidden: 王建明 → 王*明, 王明 → 王*, 欧阳建国 → 欧**国."""
    name = (name or "").strip()
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def shown_name(name: str, setting: BoardNames) -> str | None:
    """Return how the improvement list shows a household under the village's setting."""
    if setting is BoardNames.FULL:
        return name
    if setting is BoardNames.MASKED:
        return mask(name)
    return None  # the group alone


def _require_committee(actor: User, village: Village) -> None:
    if not access.covers_village(actor, village, Role.COMMITTEE):
        raise Forbidden()


def list_size(value) -> int:
    """Return the list size a form asked for (None: the default). Raises InvalidInput."""
    text = str(value if value is not None else DEFAULT_SIZE).strip()
    # isdecimal, not isdigit: int() refuses ² and ①, which isdigit lets through.
    if not text.isdecimal() or not 1 <= int(text) <= MAX_SIZE:
        raise InvalidInput(
            _l("The list size must be a whole number from 1 to %(max)s.", max=MAX_SIZE)
        )
    return int(text)


def monthly_content(village: Village, month: date, size: int) -> dict:
    """Return what a monthly board of the village would show now (the snapshot to freeze)."""
    period = rankings.month_period(month)
    rows = db.session.execute(
        sa.select(
            Household.id,
            Household.name,
            VillagerGroup.name,
            HouseholdMonth.points,
            HouseholdMonth.deducted,
            HouseholdMonth.deductions,
        )
        .join(Household, HouseholdMonth.household_id == Household.id)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .where(
            HouseholdMonth.village_id == village.id,
            HouseholdMonth.month == period.start,
            Household.is_active.is_(True),
        )
    ).all()
    house_order = {
        h.id: (len(h.house_number), h.house_number)
        for h in db.session.scalars(
            sa.select(Household).where(Household.id.in_([r[0] for r in rows]))
        )
    }
    # Red list: most points, equal points share a rank, ties listed by group and house number.
    positive = sorted((r for r in rows if r[3] > 0), key=lambda r: (-r[3], r[2], house_order[r[0]]))
    red, rank, previous = [], 0, None
    for position, (_hid, name, group, points, _d, _n) in enumerate(positive, start=1):
        if points != previous:
            rank, previous = position, points
        if rank > size:
            break
        red.append({"rank": rank, "name": name, "group": group, "points": int(points)})
    # Needs improvement: most points deducted; shown as the village chose.
    deducted = sorted((r for r in rows if r[4] > 0), key=lambda r: (-r[4], r[2], house_order[r[0]]))
    improvement, rank, previous = [], 0, None
    for position, (_hid, name, group, _p, points, count) in enumerate(deducted, start=1):
        if points != previous:
            rank, previous = position, points
        if rank > size:
            break
        improvement.append(
            {
                "rank": rank,
                "name": shown_name(name, village.board_names),
                "group": group,
                "deducted": int(points),
                "deductions": int(count),
            }
        )
    return {
        "village": village.name,
        "month": f"{month:%Y-%m}",
        "size": size,
        "names": village.board_names.value,
        "red": red,
        "improvement": improvement,
        "households": rankings.count_households(
            rankings.Scope(rankings.ScopeKind.VILLAGE, village)
        ),
        "participants": sum(1 for r in rows if r[3] > 0),
    }


def latest(
    village: Village, kind: BoardKind, *, period: date | None = None, rating_round=None
) -> Board | None:
    """Return the newest version of a month's board or of a round's board, if published."""
    stmt = sa.select(Board).where(Board.village_id == village.id, Board.kind == kind)
    if rating_round is not None:
        stmt = stmt.where(Board.rating_round_id == rating_round.id)
    else:
        stmt = stmt.where(Board.period == period)
    return db.session.scalar(stmt.order_by(Board.version.desc()).limit(1))


def _publish(
    village: Village,
    kind: BoardKind,
    period: date,
    content: dict,
    actor: User,
    note: str | None,
    rating_round: RatingRound | None = None,
) -> Board:
    previous = latest(village, kind, period=period, rating_round=rating_round)
    note = (note or "").strip() or None
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        raise InvalidInput(_l("The note may be at most %(max)s characters.", max=MAX_NOTE_LENGTH))
    if previous is not None:
        if previous.content == content:
            raise AlreadyResolved(
                _l(
                    "This board is already published and nothing has changed since; nothing was published."
                )
            )
        if note is None:
            raise InvalidInput(
                _l("This board was published before: say what the correction changes and why.")
            )
    board = Board(
        village_id=village.id,
        kind=kind,
        period=period,
        rating_round=rating_round,
        version=previous.version + 1 if previous else 1,
        corrects_id=previous.id if previous else None,
        correction_note=note if previous else None,
        content=content,
        published_by=actor,
    )
    try:
        with db.session.begin_nested():
            db.session.add(board)
            db.session.flush()
    except IntegrityError:  # someone published the same version a moment ago
        raise AlreadyResolved(
            _l("Someone else published this board a moment ago; check it before publishing again.")
        ) from None
    audit.record(
        "board.publish",
        actor,
        board,
        summary=f"{village.name} {kind.value} {period:%Y-%m} v{board.version}"
        + (f": {board.correction_note}" if board.correction_note else ""),
    )
    log.info(
        "user %s published %s board %s v%s of village %s",
        actor.id,
        kind.value,
        board.id,
        board.version,
        village.id,
    )
    return board


def publish_monthly(
    village: Village, month: date, actor: User, *, size=DEFAULT_SIZE, note: str | None = None
) -> Board:
    """Publish the red list and improvement list of a month, or a correction of them.

    Raises Forbidden, InvalidInput, AlreadyResolved.
    """
    _require_committee(actor, village)
    size = list_size(size)
    month = month.replace(day=1)
    if month > rankings.this_month():
        raise InvalidInput(_l("This month has not begun yet; nothing was published."))
    return _publish(
        village, BoardKind.MONTHLY, month, monthly_content(village, month, size), actor, note
    )


def courtyard_content(rating_round: RatingRound) -> dict:
    """Return the star households of a closed rating round (the snapshot to freeze).

    As the round's page lists them: a household whose award was rejected or still waits for
    approval is not a star household (yet).
    """
    rows = sorted(
        (
            {
                "name": result.household.name,
                "group": result.household.group.name,
                "house_number": result.household.house_number,
                "stars": result.stars,
            }
            for result in ratings.star_households(rating_round)
            if result.household.is_active
        ),
        key=lambda r: (-r["stars"], r["group"], len(r["house_number"]), r["house_number"]),
    )
    return {
        "village": rating_round.village.name,
        "title": rating_round.title,
        "criteria": list(rating_round.criteria),
        "rated": len(rating_round.ratings),
        "min_stars": STAR_HOUSEHOLD_MIN,
        "households": rows,
    }


def publish_courtyard(rating_round: RatingRound, actor: User, *, note: str | None = None) -> Board:
    """Publish the star households of a closed courtyard rating round (or a correction).

    Raises Forbidden, InvalidInput, AlreadyResolved.
    """
    village = rating_round.village
    _require_committee(actor, village)
    if rating_round.status is not RatingRoundStatus.CLOSED:
        raise InvalidInput(_l("Close the rating round before publishing its results."))
    period = to_local(rating_round.closed_at).date().replace(day=1)
    return _publish(
        village,
        BoardKind.COURTYARD,
        period,
        courtyard_content(rating_round),
        actor,
        note,
        rating_round=rating_round,
    )


def set_board_names(village: Village, editor: User, setting: BoardNames | str) -> Village:
    """Set how the improvement list names households on boards published from now on.

    Boards already published keep the names they were published with. The village's
    committee or the town's administrators set it. Raises Forbidden, InvalidInput.
    """
    if not access.covers_village(editor, village, (Role.COMMITTEE, Role.ADMIN)):
        raise Forbidden()
    try:
        setting = BoardNames(setting)
    except ValueError:
        raise InvalidInput(
            _l("Choose full names, masked names or the group only for the improvement list.")
        ) from None
    if village.board_names is not setting:
        village.board_names = setting
        db.session.flush()
        audit.record(
            "settings.board_names",
            editor,
            village,
            summary=f"{village.name}: {setting.value}",
            after={"board_names": setting.value},
        )
        log.info("user %s set board names of village %s to %s", editor.id, village.id, setting)
    return village


def published(village: Village, limit: int = 24) -> list[Board]:
    """Return the village's boards in force (latest version of each), newest period first."""
    boards = db.session.scalars(
        sa.select(Board)
        .where(Board.village_id == village.id, ~Board.corrected_by.has())
        .order_by(Board.period.desc(), Board.published_at.desc())
        .limit(limit)
    ).all()
    return list(boards)


def history(board: Board) -> list[Board]:
    """Return every version of a board, oldest first."""
    chain = [board]
    while chain[0].corrects is not None:
        chain.insert(0, chain[0].corrects)
    while chain[-1].corrected_by is not None:
        chain.append(chain[-1].corrected_by)
    return chain
