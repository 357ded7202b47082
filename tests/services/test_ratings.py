"""Courtyard ratings: rounds, validation, one rating per household, awards through approval."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from PIL import Image

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import (
    Category,
    Household,
    Photo,
    Rating,
    RatingRound,
    RatingRoundStatus,
    Role,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
)
from pointsmart.services import ledger, photos, ratings
from pointsmart.services.errors import AlreadyResolved, Forbidden, InvalidInput, SelfApproval
from tests.conftest import app_config, empty_tables
from tests.test_concurrency import race

TABLE = [0, 0, 5, 10, 20]
FOUR_STARS = {"洁": 4, "净": 4, "绿": 4, "美": 4}


@pytest.fixture
def app(migrated):
    """The usual test app, with a pool big enough for the race tests' threads."""
    options = {"pool_size": 15, "max_overflow": 0, "pool_timeout": 60, "pool_pre_ping": True}
    app = create_app(app_config(migrated, SQLALCHEMY_ENGINE_OPTIONS=options))
    with app.app_context():
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


@pytest.fixture(autouse=True)
def books_stay_clean(app):
    yield
    db.session.rollback()
    assert ledger.check() == ([], [])


@pytest.fixture
def w(make):
    """A village with two groups, its staff, and a village elsewhere; committed."""
    town = make.town()
    village = make.village(town)
    group1, group2 = make.group(village, "一组"), make.group(village, "二组")
    elsewhere = make.village(town)
    world = SimpleNamespace(
        village=village,
        group1=group1,
        group2=group2,
        zhang=make.household(group1, "张家"),
        li=make.household(group1, "李家"),
        wang=make.household(group2, "王家"),
        cadre=make.staff(Role.CADRE, village),
        group_cadre=make.staff(Role.CADRE, group1),
        committee=make.staff(Role.COMMITTEE, village),
        committee2=make.staff(Role.COMMITTEE, village),
        clerk=make.staff(Role.CLERK, make.shop(village)),
        elsewhere=elsewhere,
        far_household=make.household(make.group(elsewhere), "远家"),
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
        far_cadre=make.staff(Role.CADRE, elsewhere),
    )
    world.villager = make.villager(world.zhang)
    world.round = ratings.open_round(
        village, title="春季评比", opener=world.committee, star_points=TABLE
    )
    db.session.commit()
    return world


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def english(error) -> str:
    with force_locale("en"):
        return str(error.value.message)


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, "PNG")
    return buffer.getvalue()


# --- opening a round --------------------------------------------------------------------


def test_a_round_opens_with_the_default_criteria_and_table(w):
    round_ = ratings.open_round(w.village, title=" 秋季 ", opener=w.committee)
    assert round_.title == "秋季"
    assert round_.criteria == ["洁", "净", "绿", "美"]
    assert round_.star_points == [0, 0, 5, 10, 20]
    assert round_.status is RatingRoundStatus.OPEN
    assert round_.opened_by_id == w.committee.id


def test_a_round_keeps_the_villages_own_criteria(w):
    round_ = ratings.open_round(
        w.village,
        title="庭院之星",
        opener=w.committee,
        criteria=[" 整洁 ", "绿化", "文明"],
        star_points=[1, 2, 3, 4, 50],
    )
    db.session.commit()
    db.session.expire_all()
    assert round_.criteria == ["整洁", "绿化", "文明"]
    assert round_.star_points == [1, 2, 3, 4, 50]


def test_criteria_text_splits_on_commas_and_enumeration_commas():
    assert ratings.split_criteria("洁、净，绿, 美;文明；") == ["洁", "净", "绿", "美", "文明"]
    assert ratings.split_criteria("  ") == []


@pytest.mark.parametrize(
    "criteria, message",
    [
        ([], "A round needs 1 to 8 criteria."),
        ([f"项{i}" for i in range(9)], "A round needs 1 to 8 criteria."),
        (["洁", " "], "Each criterion needs a name of 1 to 12 characters."),
        (["洁", "净" * 13], "Each criterion needs a name of 1 to 12 characters."),
        (["洁", None], "Each criterion needs a name of 1 to 12 characters."),
        (["洁", "净", "洁 "], "Each criterion may appear only once."),
        ("洁净绿美", "The criteria must be a list of names."),
    ],
)
def test_bad_criteria_are_refused_and_open_nothing(w, criteria, message):
    with pytest.raises(InvalidInput) as error:
        ratings.open_round(w.village, title="秋季", opener=w.committee, criteria=criteria)
    assert english(error) == message
    assert count(RatingRound) == 1


@pytest.mark.parametrize(
    "table, message",
    [
        ([0, 5, 10, 20], "The star table needs exactly five numbers, for 1 to 5 stars."),
        ([0, 0, 5, 10, 20, 30], "The star table needs exactly five numbers, for 1 to 5 stars."),
        ("0,0,5,10,20", "The star table needs exactly five numbers, for 1 to 5 stars."),
        ([0, 0, "5", 10, 20], "The star table may hold whole numbers only."),
        ([0, 0, 5.0, 10, 20], "The star table may hold whole numbers only."),
        ([0, 0, True, 10, 20], "The star table may hold whole numbers only."),
        ([-1, 0, 5, 10, 20], "Each star level gives 0 to 1000 points."),
        ([0, 0, 5, 10, 1001], "Each star level gives 0 to 1000 points."),
        ([0, 0, 20, 10, 5], "More stars may not give fewer points than fewer stars."),
    ],
)
def test_a_bad_star_table_is_refused_and_opens_nothing(w, table, message):
    with pytest.raises(InvalidInput) as error:
        ratings.open_round(w.village, title="秋季", opener=w.committee, star_points=table)
    assert english(error) == message
    assert count(RatingRound) == 1


@pytest.mark.parametrize("title", ["", "   ", "长" * 61])
def test_a_title_is_required_and_short(w, title):
    with pytest.raises(InvalidInput):
        ratings.open_round(w.village, title=title, opener=w.committee)
    assert count(RatingRound) == 1


@pytest.mark.parametrize("who", ["cadre", "clerk", "villager", "far_committee"])
def test_only_the_villages_committee_opens_rounds(w, who):
    with pytest.raises(Forbidden):
        ratings.open_round(w.village, title="秋季", opener=getattr(w, who))
    assert count(RatingRound) == 1


def test_the_same_request_twice_opens_one_round_and_a_clash_is_refused(w):
    again = ratings.open_round(w.village, title="春季评比", opener=w.committee, star_points=TABLE)
    assert again.id == w.round.id
    with pytest.raises(InvalidInput) as error:
        ratings.open_round(w.village, title="春季评比", opener=w.committee2, star_points=TABLE)
    assert english(error) == "A round called 春季评比 is already open."
    assert count(RatingRound) == 1
    # Once closed, the title is free again (next year's spring round).
    ratings.close_round(w.round, w.committee)
    fresh = ratings.open_round(w.village, title="春季评比", opener=w.committee2)
    assert fresh.id != w.round.id


# --- stars ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stars, overall",
    [
        ([4, 4, 5, 5], 5),  # 4.5 rounds up
        ([3, 4], 4),  # 3.5 rounds up
        ([1, 2], 2),  # 1.5 rounds up
        ([4, 4, 4, 5], 4),  # 4.25
        ([5, 5, 5, 4], 5),  # 4.75
        ([2, 2, 3], 2),  # 2.33
        ([2, 3, 3], 3),  # 2.67
        ([1], 1),
        ([5, 5, 5, 5, 5, 5, 5, 5], 5),
    ],
)
def test_overall_stars_are_the_mean_rounded_half_up(stars, overall):
    assert ratings.overall_stars({f"c{i}": s for i, s in enumerate(stars)}) == overall


def test_star_households_have_four_stars_or_more():
    assert [s for s in range(1, 6) if ratings.is_star_household(s)] == [4, 5]


# --- rating -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, message",
    [
        ({"洁": 4, "净": 4, "绿": 4}, "Please give stars for 美."),
        ({"洁": 4, "净": 4, "绿": 4, "美": None}, "Please give stars for 美."),
        ({"洁": 0, "净": 4, "绿": 4, "美": 4}, "Stars for 洁 must be a whole number from 1 to 5."),
        ({"洁": 6, "净": 4, "绿": 4, "美": 4}, "Stars for 洁 must be a whole number from 1 to 5."),
        (
            {"洁": "5", "净": 4, "绿": 4, "美": 4},
            "Stars for 洁 must be a whole number from 1 to 5.",
        ),
        (
            {"洁": "很好", "净": 4, "绿": 4, "美": 4},
            "Stars for 洁 must be a whole number from 1 to 5.",
        ),
        (
            {"洁": 4.5, "净": 4, "绿": 4, "美": 4},
            "Stars for 洁 must be a whole number from 1 to 5.",
        ),
        (
            {"洁": True, "净": 4, "绿": 4, "美": 4},
            "Stars for 洁 must be a whole number from 1 to 5.",
        ),
        ({**FOUR_STARS, "香": 5}, "This round has no criterion called 香."),
        ([4, 4, 4, 4], "Please give stars for every criterion."),
    ],
)
def test_bad_scores_are_refused_and_change_nothing(w, scores, message):
    with pytest.raises(InvalidInput) as error:
        ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=scores)
    assert english(error) == message
    assert count(Rating) == 0
    assert count(Transfer) == 0


def test_a_rating_records_a_pending_courtyard_award_from_the_table(w):
    rating, created = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    db.session.commit()

    assert created
    assert rating.stars == 4
    assert rating.scores == FOUR_STARS
    assert rating.inspector_id == w.cadre.id
    award = rating.transfer
    assert award.kind is TransferKind.AWARD
    assert award.status is TransferStatus.PENDING
    assert award.amount == 10  # the table gives 10 points for 4 stars
    assert award.category is Category.COURTYARD
    assert award.reason == "美丽庭院 4星 — 春季评比"
    assert (award.source_type, award.source_id) == ("rating", rating.id)
    assert award.idempotency_key == f"rating-{rating.id}"
    assert award.recorded_by_id == w.cadre.id
    assert award.household_id == w.zhang.id
    # Pending: nothing moves until a committee member approves.
    assert ledger.balance_of(w.zhang) == ledger.Balance(0, 0)


def test_five_stars_give_the_top_points(w):
    rating, _ = ratings.rate(
        w.round, w.zhang, inspector=w.cadre, scores={"洁": 5, "净": 5, "绿": 4, "美": 4}
    )
    assert rating.stars == 5  # 4.5 rounds up
    assert rating.transfer.amount == 20


@pytest.mark.parametrize("stars", [1, 2])
def test_stars_worth_zero_points_record_no_award(w, stars):
    scores = dict.fromkeys(FOUR_STARS, stars)
    rating, created = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=scores)
    db.session.commit()
    assert created and rating.stars == stars
    assert rating.transfer is None
    assert count(Transfer) == 0


def test_the_award_goes_through_the_normal_approval_queue(w):
    rating, _ = ratings.rate(w.round, w.zhang, inspector=w.committee, scores=FOUR_STARS)
    db.session.commit()
    award = rating.transfer
    queue = db.session.scalars(
        sa.select(Transfer).where(
            Transfer.village_id == w.village.id, Transfer.status == TransferStatus.PENDING
        )
    ).all()
    assert queue == [award]
    # The committee member who rated cannot approve their own award.
    with pytest.raises(SelfApproval):
        ledger.post(award, w.committee)
    db.session.rollback()
    ledger.post(award, w.committee2)
    db.session.commit()
    assert award.status is TransferStatus.POSTED
    assert award.approved_by_id == w.committee2.id
    assert ledger.balance_of(w.zhang) == ledger.Balance(10, 10)


def test_a_rejected_award_leaves_the_rating_but_no_points(w):
    rating, _ = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    ledger.void(rating.transfer, w.committee, "照片不清楚")
    db.session.commit()
    assert rating.transfer.status is TransferStatus.VOIDED
    assert ledger.balance_of(w.zhang) == ledger.Balance(0, 0)
    assert [r.award_status for r in ratings.results(w.round)] == [TransferStatus.VOIDED]


def test_the_villages_auto_approve_setting_applies_to_ratings(w):
    w.village.auto_approve_max = 10
    small, _ = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    big, _ = ratings.rate(w.round, w.li, inspector=w.cadre, scores=dict.fromkeys(FOUR_STARS, 5))
    db.session.commit()
    assert small.transfer.status is TransferStatus.POSTED
    assert small.transfer.approved_by_id is None
    assert ledger.balance_of(w.zhang) == ledger.Balance(10, 10)
    assert big.transfer.status is TransferStatus.PENDING  # 20 points > 10
    assert ledger.balance_of(w.li) == ledger.Balance(0, 0)


def test_rating_in_a_closed_round_is_refused(w):
    ratings.close_round(w.round, w.committee)
    db.session.commit()
    with pytest.raises(InvalidInput) as error:
        ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    assert english(error) == "This round is closed; no more ratings can be added."
    assert count(Rating) == 0
    assert count(Transfer) == 0


def test_a_household_of_another_village_is_refused(w):
    with pytest.raises(InvalidInput) as error:
        ratings.rate(w.round, w.far_household, inspector=w.far_committee, scores=FOUR_STARS)
    assert english(error) == "This household is not in the village of this round."
    assert count(Rating) == 0


@pytest.mark.parametrize(
    "who, household",
    [
        ("group_cadre", "wang"),  # group 2 is not theirs
        ("far_cadre", "zhang"),
        ("far_committee", "zhang"),
        ("clerk", "zhang"),
        ("villager", "zhang"),
    ],
)
def test_only_inspectors_who_reach_the_household_rate_it(w, who, household):
    with pytest.raises(Forbidden):
        ratings.rate(w.round, getattr(w, household), inspector=getattr(w, who), scores=FOUR_STARS)
    assert count(Rating) == 0
    assert count(Transfer) == 0


@pytest.mark.parametrize("who", ["cadre", "group_cadre", "committee"])
def test_cadres_of_the_village_or_group_and_committee_members_rate(w, who):
    rating, created = ratings.rate(w.round, w.zhang, inspector=getattr(w, who), scores=FOUR_STARS)
    assert created and rating.inspector_id == getattr(w, who).id


def test_an_inactive_household_is_not_rated(w):
    w.zhang.is_active = False
    with pytest.raises(InvalidInput):
        ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    assert count(Rating) == 0


def test_a_household_is_rated_once_per_round(w):
    first, created = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    db.session.commit()
    assert created

    # A double tap: the same inspector and stars get the same rating back.
    again, created = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=dict(FOUR_STARS))
    assert (again.id, created) == (first.id, False)

    # Other stars, or another inspector: refused, and the first rating stands.
    with pytest.raises(AlreadyResolved) as error:
        ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=dict.fromkeys(FOUR_STARS, 5))
    name = w.cadre.display_name
    assert english(error) == f"张家 was already rated in this round: 4 stars, by {name}."
    with pytest.raises(AlreadyResolved):
        ratings.rate(w.round, w.zhang, inspector=w.committee, scores=FOUR_STARS)
    db.session.rollback()
    assert count(Rating) == 1
    assert count(Transfer) == 1

    # The next round rates the household afresh.
    autumn = ratings.open_round(w.village, title="秋季", opener=w.committee)
    _, created = ratings.rate(autumn, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    assert created


def test_photos_become_evidence_of_the_rating(w):
    stored = photos.store_many([png(), png((10, 200, 10))], uploader=w.cadre, village=w.village)
    rating, _ = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS, photos=stored)
    db.session.commit()
    db.session.expire_all()
    assert sorted(p.id for p in rating.photos) == sorted(p.id for p in stored)
    assert all(p.transfer_id is None for p in stored)


def test_too_many_photos_or_another_villages_photo_are_refused(w):
    five = photos.store_many([png()] * 5, uploader=w.cadre, village=w.village, limit=5)
    with pytest.raises(InvalidInput):
        ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS, photos=five)
    far = photos.store(png(), uploader=w.far_cadre, village=w.elsewhere)
    with pytest.raises(InvalidInput) as error:
        ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS, photos=[far])
    assert english(error) == "A photo belongs to another village."
    assert count(Rating) == 0
    assert db.session.scalar(sa.select(sa.func.count()).where(Photo.rating_id.is_not(None))) == 0


# --- closing ----------------------------------------------------------------------------


def test_a_round_closes_once(w):
    closed = ratings.close_round(w.round, w.committee)
    db.session.commit()
    assert closed.status is RatingRoundStatus.CLOSED
    assert closed.closed_by_id == w.committee.id
    closed_at = closed.closed_at
    assert closed_at is not None

    # The same member again (a double tap): the same closed round, unchanged.
    again = ratings.close_round(w.round, w.committee)
    assert (again.closed_by_id, again.closed_at) == (w.committee.id, closed_at)

    # Another member: told who closed it, nothing changes.
    with pytest.raises(AlreadyResolved) as error:
        ratings.close_round(w.round, w.committee2)
    assert english(error) == f"This round was already closed by {w.committee.display_name}."
    db.session.rollback()
    db.session.refresh(w.round)
    assert (w.round.closed_by_id, w.round.closed_at) == (w.committee.id, closed_at)


@pytest.mark.parametrize("who", ["cadre", "far_committee", "villager"])
def test_only_the_villages_committee_closes_a_round(w, who):
    with pytest.raises(Forbidden):
        ratings.close_round(w.round, getattr(w, who))
    db.session.rollback()
    assert db.session.get(RatingRound, w.round.id).status is RatingRoundStatus.OPEN


# --- results ----------------------------------------------------------------------------


def test_results_are_ordered_by_stars_then_name_with_their_award_status(w, make):
    chen = make.household(w.group2, "陈家")
    ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    ratings.rate(w.round, w.wang, inspector=w.cadre, scores=dict.fromkeys(FOUR_STARS, 2))
    ratings.rate(w.round, w.li, inspector=w.cadre, scores=dict.fromkeys(FOUR_STARS, 5))
    ratings.rate(w.round, chen, inspector=w.cadre, scores=FOUR_STARS)
    db.session.commit()

    rows = ratings.results(w.round)
    names = sorted(["张家", "陈家"])  # the database's order of equal-star names
    assert [(r.household.name, r.stars) for r in rows] == [
        ("李家", 5),
        (names[0], 4),
        (names[1], 4),
        ("王家", 2),
    ]
    assert [r.points for r in rows] == [20, 10, 10, 0]
    assert [r.award_status for r in rows] == [TransferStatus.PENDING] * 3 + [None]
    assert [r.is_star for r in rows] == [True, True, True, False]


def test_star_households_are_published_after_closing_and_approval(w):
    li, _ = ratings.rate(w.round, w.li, inspector=w.cadre, scores=dict.fromkeys(FOUR_STARS, 5))
    zhang, _ = ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    wang, _ = ratings.rate(w.round, w.wang, inspector=w.cadre, scores=dict.fromkeys(FOUR_STARS, 3))
    ledger.post(li.transfer, w.committee)
    db.session.commit()
    assert ratings.star_households(w.round) == []  # still open

    ratings.close_round(w.round, w.committee)
    db.session.commit()
    # 张家's award still waits for approval, 王家 has 3 stars: only 李家 is published.
    assert [r.household.name for r in ratings.star_households(w.round)] == ["李家"]

    ledger.post(zhang.transfer, w.committee)  # approving after the close is fine
    db.session.commit()
    assert [r.household.name for r in ratings.star_households(w.round)] == ["李家", "张家"]


def test_a_star_tier_without_points_needs_no_approval_to_be_published(w):
    round_ = ratings.open_round(
        w.village, title="评星", opener=w.committee, star_points=[0, 0, 0, 0, 0]
    )
    ratings.rate(round_, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    ratings.close_round(round_, w.committee)
    assert [r.household.name for r in ratings.star_households(round_)] == ["张家"]


def test_unrated_households_are_those_in_reach_not_yet_rated(w, make):
    gone = make.household(w.group1, "搬走")
    gone.is_active = False
    ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=FOUR_STARS)
    db.session.commit()
    assert [h.name for h in ratings.unrated_households(w.round, w.cadre)] == ["李家", "王家"]
    assert [h.name for h in ratings.unrated_households(w.round, w.group_cadre)] == ["李家"]
    assert ratings.unrated_households(w.round, w.far_cadre) == []


def test_open_rounds_are_listed_for_the_inspectors_who_reach_the_village(w):
    spare = ratings.open_round(w.village, title="备用", opener=w.committee)
    ratings.close_round(spare, w.committee)
    db.session.commit()
    for who in ("cadre", "group_cadre", "committee"):
        assert ratings.open_rounds_for(getattr(w, who)) == [w.round]
        assert ratings.can_inspect(getattr(w, who), w.round)
    assert ratings.open_rounds_for(w.far_cadre) == []
    assert not ratings.can_inspect(w.far_cadre, w.round)
    assert not ratings.can_inspect(w.clerk, w.round)


# --- at the same moment -----------------------------------------------------------------


def _load(k, inspector_key):
    def load(i):
        round_ = db.session.get(RatingRound, k["round"])
        household = db.session.get(Household, k["household"])
        household.group.village  # noqa: B018  (load now, before the race)
        inspector = db.session.get(User, k[inspector_key(i)])
        inspector.grants  # noqa: B018
        return round_, household, inspector

    return load


@pytest.mark.concurrency
def test_two_inspectors_rating_one_household_at_once_make_one_rating(app, w):
    k = {"round": w.round.id, "household": w.zhang.id, "a": w.cadre.id, "b": w.group_cadre.id}
    db.session.commit()  # threads must find no transaction of ours holding a lock

    def act(i, round_, household, inspector):
        return ratings.rate(round_, household, inspector=inspector, scores=FOUR_STARS)[0]

    outcomes = race(app, 2, _load(k, lambda i: "ab"[i]), act)

    assert sorted(type(o.error).__name__ for o in outcomes) == ["AlreadyResolved", "NoneType"]
    refused = next(o for o in outcomes if o.error is not None)
    assert refused.message_en.startswith("张家 was already rated in this round: 4 stars, by ")
    assert count(Rating) == 1
    assert count(Transfer) == 1
    rating = db.session.scalars(sa.select(Rating)).one()
    winner = next(i for i, o in enumerate(outcomes) if o.error is None)
    assert rating.inspector_id == k["ab"[winner]]
    assert rating.transfer.amount == 10


@pytest.mark.concurrency
def test_one_inspector_tapping_many_times_at_once_makes_one_rating(app, w):
    k = {"round": w.round.id, "household": w.zhang.id, "cadre": w.cadre.id}
    db.session.commit()  # threads must find no transaction of ours holding a lock

    def act(i, round_, household, inspector):
        return ratings.rate(round_, household, inspector=inspector, scores=FOUR_STARS)[0]

    outcomes = race(app, 8, _load(k, lambda i: "cadre"), act)

    assert [o.error for o in outcomes] == [None] * 8
    assert len({o.transfer_id for o in outcomes}) == 1  # the rating's id, for every thread
    assert count(Rating) == 1
    assert count(Transfer) == 1


@pytest.mark.concurrency
def test_two_members_closing_at_once_close_once(app, w):
    k = {"round": w.round.id, "a": w.committee.id, "b": w.committee2.id}
    db.session.commit()  # threads must find no transaction of ours holding a lock

    def load(i):
        round_ = db.session.get(RatingRound, k["round"])
        round_.village  # noqa: B018
        actor = db.session.get(User, k["ab"[i]])
        actor.grants  # noqa: B018
        return round_, actor

    outcomes = race(app, 2, load, lambda i, round_, actor: ratings.close_round(round_, actor))

    assert sorted(type(o.error).__name__ for o in outcomes) == ["AlreadyResolved", "NoneType"]
    winner = next(i for i, o in enumerate(outcomes) if o.error is None)
    round_ = db.session.get(RatingRound, k["round"])
    assert round_.status is RatingRoundStatus.CLOSED
    assert round_.closed_by_id == k["ab"[winner]]
