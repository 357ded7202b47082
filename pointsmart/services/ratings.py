"""Beautiful-courtyard ratings (美丽庭院评比): rounds, ratings, their awards and results.

The committee opens a round with its criteria and a stars-to-points table; cadres and
committee members rate households (1-5 stars per criterion). A household is rated once
per round: the unique (round, household) pair is the rating's idempotency key, so a double
tap or two inspectors at the same moment leave one rating. A rating whose stars earn points
records a pending courtyard award that goes through the normal approval queue.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from .. import access
from ..extensions import db
from ..models import (
    Category,
    Household,
    Photo,
    Rating,
    RatingRound,
    RatingRoundStatus,
    Role,
    TransferKind,
    TransferStatus,
    User,
    Village,
    VillagerGroup,
)
from ..timeutil import utcnow
from . import audit, awards, ledger
from .errors import AlreadyResolved, Forbidden, InvalidInput

log = logging.getLogger(__name__)

DEFAULT_CRITERIA = ("洁", "净", "绿", "美")
DEFAULT_STAR_POINTS = (0, 0, 5, 10, 20)
MAX_CRITERIA = 8
MAX_CRITERION_LENGTH = 12
MAX_TITLE_LENGTH = 60
#: Points for one rating; a courtyard award larger than this is a typing mistake.
MAX_STAR_POINTS = 1000
MAX_PHOTOS = 4
#: A "star household" (星级庭院) has at least this many overall stars.
STAR_HOUSEHOLD_MIN_STARS = 4

_SEPARATORS = re.compile(r"[,，、;；]")


# --- validation -------------------------------------------------------------------------


def split_criteria(text: str) -> list[str]:
    """Split '洁、净，绿, 美' into names; empty pieces (a trailing comma) are dropped."""
    return [part.strip() for part in _SEPARATORS.split(text or "") if part.strip()]


def check_criteria(criteria: Iterable[str] | None) -> list[str]:
    """Return the cleaned criterion names: 1 to 8 unique, non-empty names. Raises InvalidInput."""
    if criteria is None:
        return list(DEFAULT_CRITERIA)
    if isinstance(criteria, str):
        raise InvalidInput(_l("The criteria must be a list of names."))
    names = [name.strip() if isinstance(name, str) else "" for name in criteria]
    if not 1 <= len(names) <= MAX_CRITERIA:
        raise InvalidInput(_l("A round needs 1 to %(max)s criteria.", max=MAX_CRITERIA))
    if any(not name or len(name) > MAX_CRITERION_LENGTH for name in names):
        raise InvalidInput(
            _l("Each criterion needs a name of 1 to %(max)s characters.", max=MAX_CRITERION_LENGTH)
        )
    if len(set(names)) != len(names):
        raise InvalidInput(_l("Each criterion may appear only once."))
    return names


def check_star_points(star_points: Sequence[int]) -> list[int]:
    """Return the stars-to-points table: five whole numbers, 0 to the maximum, never falling.

    Raises InvalidInput.
    """
    values = list(star_points) if isinstance(star_points, list | tuple) else None
    if values is None or len(values) != 5:
        raise InvalidInput(_l("The star table needs exactly five numbers, for 1 to 5 stars."))
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(_l("The star table may hold whole numbers only."))
        if not 0 <= value <= MAX_STAR_POINTS:
            raise InvalidInput(
                _l("Each star level gives 0 to %(max)s points.", max=MAX_STAR_POINTS)
            )
    if any(later < earlier for earlier, later in itertools.pairwise(values)):
        raise InvalidInput(_l("More stars may not give fewer points than fewer stars."))
    return values


def check_scores(round_: RatingRound, scores: dict) -> dict[str, int]:
    """Return the stars per criterion: every criterion of the round, each 1 to 5.

    Raises InvalidInput.
    """
    if not isinstance(scores, dict):
        raise InvalidInput(_l("Please give stars for every criterion."))
    unknown = [name for name in scores if name not in round_.criteria]
    if unknown:
        raise InvalidInput(
            _l("This round has no criterion called %(name)s.", name=str(unknown[0])[:20])
        )
    cleaned = {}
    for name in round_.criteria:
        value = scores.get(name)
        if value is None:
            raise InvalidInput(_l("Please give stars for %(name)s.", name=name))
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise InvalidInput(
                _l("Stars for %(name)s must be a whole number from 1 to 5.", name=name)
            )
        cleaned[name] = value
    return cleaned


def overall_stars(scores: dict[str, int]) -> int:
    """Return the rounded mean of the criteria's stars, halves rounded up (4.5 -> 5).

    Whole-number arithmetic, so no float rounding (Python's round() would round 4.5 to 4).
    """
    total, count = sum(scores.values()), len(scores)
    return (2 * total + count) // (2 * count)


def points_for(round_: RatingRound, stars: int) -> int:
    """Return the points the round's table gives for an overall rating of ``stars``."""
    return round_.star_points[stars - 1]


def is_star_household(stars: int) -> bool:
    """Return whether a rating of ``stars`` makes a star household (星级庭院)."""
    return stars >= STAR_HOUSEHOLD_MIN_STARS


# --- rounds -----------------------------------------------------------------------------


def open_round(
    village: Village,
    *,
    title: str,
    opener: User,
    criteria: Iterable[str] | None = None,
    star_points: Sequence[int] = DEFAULT_STAR_POINTS,
) -> RatingRound:
    """Open a rating round for a village; a repeat of the same request returns the same round.

    Raises Forbidden (not a committee member of the village), InvalidInput.
    """
    if not access.covers_village(opener, village, Role.COMMITTEE):
        raise Forbidden()
    title = (title or "").strip()
    if not title or len(title) > MAX_TITLE_LENGTH:
        raise InvalidInput(_l("The title must be 1 to %(max)s characters.", max=MAX_TITLE_LENGTH))
    criteria = check_criteria(criteria)
    star_points = check_star_points(star_points)
    # Serialize openers of one village, so a double tap cannot open two rounds.
    db.session.execute(sa.select(Village.id).where(Village.id == village.id).with_for_update())
    same_title = db.session.scalar(
        sa.select(RatingRound).where(
            RatingRound.village_id == village.id,
            RatingRound.status == RatingRoundStatus.OPEN,
            RatingRound.title == title,
        )
    )
    if same_title is not None:
        if (
            same_title.opened_by_id == opener.id
            and same_title.criteria == criteria
            and same_title.star_points == star_points
        ):
            return same_title  # the same request again
        raise InvalidInput(_l("A round called %(title)s is already open.", title=title))
    round_ = RatingRound(
        village_id=village.id,
        title=title,
        criteria=criteria,
        star_points=star_points,
        status=RatingRoundStatus.OPEN,
        opened_by_id=opener.id,
    )
    db.session.add(round_)
    db.session.flush()
    audit.record("rating_round.open", opener, round_, summary=round_.title)
    log.info("user %s opened rating round %s in village %s", opener.id, round_.id, village.id)
    return round_


def close_round(round_: RatingRound, actor: User) -> RatingRound:
    """Close an open round, once: no rating can be added afterwards.

    A second close by the same member (a double tap) returns the closed round.
    Raises Forbidden, AlreadyResolved (closed by someone else).
    """
    if not access.covers_village(actor, round_.village, Role.COMMITTEE):
        raise Forbidden()
    moved = db.session.execute(
        sa.update(RatingRound)
        .where(RatingRound.id == round_.id, RatingRound.status == RatingRoundStatus.OPEN)
        .values(status=RatingRoundStatus.CLOSED, closed_by_id=actor.id, closed_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(round_)
    if moved != 1:
        if round_.closed_by_id == actor.id:
            return round_
        raise AlreadyResolved(
            _l(
                "This round was already closed by %(name)s.",
                name=round_.closed_by.display_name if round_.closed_by else "",
            )
        )
    audit.record("rating_round.close", actor, round_, summary=round_.title)
    log.info("user %s closed rating round %s", actor.id, round_.id)
    return round_


def rounds_of(village_ids: Iterable[int]) -> list[RatingRound]:
    """Return the rounds of these villages: open ones first, then the newest."""
    return list(
        db.session.scalars(
            sa.select(RatingRound)
            .where(RatingRound.village_id.in_(list(village_ids)))
            .order_by(
                sa.case((RatingRound.status == RatingRoundStatus.OPEN, 0), else_=1),
                RatingRound.created_at.desc(),
                RatingRound.id.desc(),
            )
        )
    )


def inspector_villages(inspector: User):
    """Return a SQL selection of the ids of villages where the user rates some households."""
    return (
        sa.select(VillagerGroup.village_id)
        .join(Household, Household.group_id == VillagerGroup.id)
        .where(access.household_filter(inspector, access.RECORDERS))
        .distinct()
    )


def can_inspect(inspector: User, round_: RatingRound) -> bool:
    """Return whether the user may rate some household of this round's village."""
    return round_.village_id in set(db.session.scalars(inspector_villages(inspector)))


def open_rounds_for(inspector: User) -> list[RatingRound]:
    """Return the open rounds of the villages where the user may rate households."""
    return list(
        db.session.scalars(
            sa.select(RatingRound)
            .where(
                RatingRound.status == RatingRoundStatus.OPEN,
                RatingRound.village_id.in_(inspector_villages(inspector)),
            )
            .order_by(RatingRound.created_at.desc(), RatingRound.id.desc())
        )
    )


def unrated_households(round_: RatingRound, inspector: User) -> list[Household]:
    """Return the active households in the user's reach that this round has not rated yet."""
    rated = sa.select(Rating.household_id).where(Rating.round_id == round_.id)
    return list(
        db.session.scalars(
            sa.select(Household)
            .join(VillagerGroup, Household.group_id == VillagerGroup.id)
            .where(
                VillagerGroup.village_id == round_.village_id,
                Household.is_active.is_(True),
                access.household_filter(inspector, access.RECORDERS),
                Household.id.not_in(rated),
            )
            .options(selectinload(Household.group))
            .order_by(VillagerGroup.name, Household.house_number, Household.id)
        )
    )


# --- rating -----------------------------------------------------------------------------


def find_rating(round_: RatingRound, household: Household) -> Rating | None:
    """Return the household's rating in this round, if any."""
    return db.session.scalar(
        sa.select(Rating).where(Rating.round_id == round_.id, Rating.household_id == household.id)
    )


def rate(
    round_: RatingRound,
    household: Household,
    *,
    inspector: User,
    scores: dict,
    photos: Sequence[Photo] = (),
) -> tuple[Rating, bool]:
    """Rate a household once in an open round; return (rating, created).

    The same inspector sending the same stars again (a double tap) gets the existing
    rating back with created False; any other second rating is refused. When the star
    table gives points, a pending courtyard award is recorded (auto-approved if the
    village's settings say so). Raises Forbidden, InvalidInput, AlreadyResolved.
    """
    if household.group.village_id != round_.village_id:
        raise InvalidInput(_l("This household is not in the village of this round."))
    if not access.covers_household(inspector, household, access.RECORDERS):
        raise Forbidden()
    if not household.is_active:
        raise InvalidInput(_l("This household is no longer active."))
    scores = check_scores(round_, scores)
    if len(photos) > MAX_PHOTOS:
        raise InvalidInput(_l("At most %(n)s photos per record.", n=MAX_PHOTOS))
    if any(photo.village_id != round_.village_id for photo in photos):
        raise InvalidInput(_l("A photo belongs to another village."))
    existing = find_rating(round_, household)
    if existing is not None:
        return _replay(existing, inspector, scores), False
    # A shared lock on the round: ratings proceed side by side, but a concurrent close
    # (an UPDATE of this row) waits for them, and a rating waiting behind a close sees it.
    status = db.session.scalar(
        sa.select(RatingRound.status).where(RatingRound.id == round_.id).with_for_update(read=True)
    )
    if status is not RatingRoundStatus.OPEN:
        raise InvalidInput(_l("This round is closed; no more ratings can be added."))
    stars = overall_stars(scores)
    rating = Rating(
        round_id=round_.id,
        household_id=household.id,
        inspector_id=inspector.id,
        scores=scores,
        stars=stars,
    )
    try:
        # A savepoint: losing the race for (round, household) leaves the transaction usable.
        with db.session.begin_nested():
            db.session.add(rating)
            db.session.flush()
    except IntegrityError:
        existing = find_rating(round_, household)
        if existing is None:
            raise
        return _replay(existing, inspector, scores), False
    points = points_for(round_, stars)
    if points > 0:
        transfer = ledger.record(
            kind=TransferKind.AWARD,
            household=household,
            points=points,
            reason=f"美丽庭院 {stars}星 — {round_.title}",
            category=Category.COURTYARD,
            recorded_by=inspector,
            key=f"rating-{rating.id}",
            source=("rating", rating.id),
        )
        rating.transfer = transfer
        awards.auto_approve(transfer)
    for photo in photos:
        photo.attach(rating=rating)
    db.session.flush()
    audit.record(
        "rating.rate",
        inspector,
        rating,
        summary=f"{household.name}: {stars}★ ({round_.title})",
        town_id=household.group.village.town_id,
        village_id=household.group.village_id,
    )
    log.info(
        "user %s rated household %s %s stars in round %s (%s points)",
        inspector.id,
        household.id,
        stars,
        round_.id,
        points,
    )
    return rating, True


def _replay(existing: Rating, inspector: User, scores: dict[str, int]) -> Rating:
    if existing.inspector_id == inspector.id and existing.scores == scores:
        return existing
    raise AlreadyResolved(
        _l(
            "%(household)s was already rated in this round: %(stars)s stars, by %(name)s.",
            household=existing.household.name,
            stars=existing.stars,
            name=existing.inspector.display_name,
        )
    )


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingResult:
    """One rated household of a round, with its award's approval status."""

    rating: Rating
    household: Household
    stars: int
    points: int
    #: None when the stars give no points; otherwise pending, posted or voided (rejected).
    award_status: TransferStatus | None

    @property
    def is_star(self) -> bool:
        return is_star_household(self.stars)

    @property
    def confirmed(self) -> bool:
        """The result stands: no award to approve, or its award was approved."""
        return self.award_status in (None, TransferStatus.POSTED)


def results(round_: RatingRound) -> list[RatingResult]:
    """Return the round's rated households: most stars first, then by household name."""
    ratings = db.session.scalars(
        sa.select(Rating)
        .join(Household, Rating.household_id == Household.id)
        .where(Rating.round_id == round_.id)
        .options(
            selectinload(Rating.household).selectinload(Household.group),
            selectinload(Rating.transfer),
            selectinload(Rating.inspector),
        )
        .order_by(Rating.stars.desc(), Household.name, Household.id)
    )
    return [
        RatingResult(
            rating=rating,
            household=rating.household,
            stars=rating.stars,
            points=rating.transfer.amount if rating.transfer else 0,
            award_status=rating.transfer.status if rating.transfer else None,
        )
        for rating in ratings
    ]


def star_households(round_: RatingRound) -> list[RatingResult]:
    """Return the star households to publish: none until the round is closed.

    A star household has at least STAR_HOUSEHOLD_MIN_STARS stars and a confirmed result
    (its award approved, or no award to approve); a rejected or still pending award keeps
    the household off the published list.
    """
    if round_.status is not RatingRoundStatus.CLOSED:
        return []
    return [result for result in results(round_) if result.is_star and result.confirmed]
