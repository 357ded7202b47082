"""Courtyard rating pages: committee rounds and results, cadres rating households on a phone."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from PIL import Image

from pointsmart.extensions import db
from pointsmart.models import (
    Photo,
    Rating,
    RatingRound,
    RatingRoundStatus,
    Role,
    Transfer,
    TransferStatus,
)
from pointsmart.services import ledger, ratings

FOUR = {"c0": "4", "c1": "4", "c2": "4", "c3": "4"}


@pytest.fixture
def w(make):
    town = make.town()
    village = make.village(town, "幸福村")
    group1, group2 = make.group(village, "一组"), make.group(village, "二组")
    far = make.village(town, "远方村")
    world = SimpleNamespace(
        village=village,
        zhang=make.household(group1, "张家"),
        li=make.household(group1, "李家"),
        wang=make.household(group2, "王家"),
        cadre=make.staff(Role.CADRE, village),
        group_cadre=make.staff(Role.CADRE, group1),
        committee=make.staff(Role.COMMITTEE, village),
        committee2=make.staff(Role.COMMITTEE, village),
        far=far,
        far_household=make.household(make.group(far), "远家"),
        far_committee=make.staff(Role.COMMITTEE, far),
    )
    world.round = ratings.open_round(
        village, title="春季评比", opener=world.committee, star_points=[0, 0, 5, 10, 20]
    )
    world.far_round = ratings.open_round(far, title="远方评比", opener=world.far_committee)
    db.session.commit()
    return world


@pytest.fixture
def as_user(client, login_as):
    """Log in as a user, with English pages so messages can be compared."""

    def log_in(user):
        login_as(user)
        client.post("/language", data={"locale": "en", "next": "/"})
        return client

    return log_in


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot() -> tuple[int, ...]:
    db.session.expire_all()
    return count(RatingRound), count(Rating), count(Transfer), count(Photo)


def png(colour=(200, 30, 30)) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), colour).save(buffer, "PNG")
    buffer.seek(0)
    return buffer


def rate_url(w, household=None, round_=None) -> str:
    round_ = round_ or w.round
    household = household or w.zhang
    return f"/cadre/ratings/{round_.id}/households/{household.id}"


def page(response) -> str:
    return response.get_data(as_text=True)


# --- links ------------------------------------------------------------------------------


def test_committee_and_cadre_homes_link_to_the_ratings(w, as_user, client):
    as_user(w.committee)
    assert 'href="/committee/ratings/"' in page(client.get("/committee/"))
    as_user(w.cadre)
    assert 'href="/cadre/ratings/"' in page(client.get("/cadre/"))


# --- committee --------------------------------------------------------------------------


def test_committee_lists_the_rounds_of_their_village_only(w, as_user, client):
    as_user(w.committee)
    html = page(client.get("/committee/ratings/"))
    assert "春季评比" in html and "远方评比" not in html
    assert "洁、净、绿、美" in html


def test_the_open_form_shows_the_default_criteria_and_table(w, as_user, client):
    as_user(w.committee)
    html = page(client.get("/committee/ratings/new"))
    assert 'value="洁、净、绿、美"' in html
    for stars, points in enumerate([0, 0, 5, 10, 20], start=1):
        assert re.search(rf'name="star{stars}"[^>]*value="{points}"', html)
    assert "幸福村" in html and "远方村" not in html


def test_committee_opens_a_round_with_their_own_criteria(w, as_user, client):
    as_user(w.committee)
    response = client.post(
        "/committee/ratings/new",
        data={
            "village_id": w.village.id,
            "title": "秋季庭院之星",
            "criteria": "整洁，绿化、 文明",
            "star1": "0",
            "star2": "1",
            "star3": "2",
            "star4": "8",
            "star5": "15",
        },
    )
    round_ = db.session.scalars(
        sa.select(RatingRound).where(RatingRound.title == "秋季庭院之星")
    ).one()
    assert response.status_code == 302
    assert response.location == f"/committee/ratings/{round_.id}"
    assert round_.criteria == ["整洁", "绿化", "文明"]
    assert round_.star_points == [0, 1, 2, 8, 15]
    assert round_.opened_by_id == w.committee.id
    assert "Rating round opened: 秋季庭院之星." in page(client.get(response.location))


GOOD = {
    "title": "秋季",
    "criteria": "洁、净",
    "star1": "0",
    "star2": "0",
    "star3": "5",
    "star4": "10",
    "star5": "20",
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"criteria": "、，, "}, "A round needs 1 to 8 criteria."),
        ({"criteria": "洁、净、洁"}, "Each criterion may appear only once."),
        ({"criteria": "、".join(f"项{i}" for i in range(9))}, "A round needs 1 to 8 criteria."),
        ({"star3": "五"}, "Not a valid integer value."),
        ({"star3": ""}, "This field is required."),
        ({"star5": "-3"}, "Each star level gives 0 to 1000 points."),
        ({"star5": "100000"}, "Each star level gives 0 to 1000 points."),
        ({"star4": "30"}, "More stars may not give fewer points than fewer stars."),
        ({"title": ""}, "This field is required."),
        ({"village_id": "far"}, "Not a valid choice."),
    ],
)
def test_bad_round_input_is_explained_and_opens_nothing(w, as_user, client, change, message):
    as_user(w.committee)
    data = {"village_id": w.village.id, **GOOD, **change}
    if data["village_id"] == "far":
        data["village_id"] = w.far.id
    before = snapshot()
    response = client.post("/committee/ratings/new", data=data)
    assert response.status_code == 200
    assert message in page(response)
    assert snapshot() == before


def test_committee_closes_a_round_once(w, as_user, client):
    as_user(w.committee)
    response = client.post(f"/committee/ratings/{w.round.id}/close")
    assert response.status_code == 302
    assert response.location == f"/committee/ratings/{w.round.id}"
    assert "Round closed: 春季评比." in page(client.get(response.location))
    db.session.expire_all()
    assert w.round.status is RatingRoundStatus.CLOSED
    closed_at = w.round.closed_at

    as_user(w.committee2)
    client.post(f"/committee/ratings/{w.round.id}/close")
    html = page(client.get(f"/committee/ratings/{w.round.id}"))
    assert f"This round was already closed by {w.committee.display_name}." in html
    db.session.expire_all()
    assert (w.round.closed_by_id, w.round.closed_at) == (w.committee.id, closed_at)


def test_results_page_is_a_printable_notice(w, as_user, client):
    ratings.rate(w.round, w.li, inspector=w.cadre, scores=dict.fromkeys("洁净绿美", 5))
    zhang, _ = ratings.rate(
        w.round, w.zhang, inspector=w.cadre, scores=dict.fromkeys("洁净绿美", 4)
    )
    ratings.rate(w.round, w.wang, inspector=w.cadre, scores=dict.fromkeys("洁净绿美", 2))
    db.session.commit()
    as_user(w.committee)

    html = page(client.get(f"/committee/ratings/{w.round.id}"))
    assert "幸福村 · 春季评比" in html
    assert re.search(r"Opened \d{4}-\d{2}-\d{2}", html)
    assert html.index("李家") < html.index("张家") < html.index("王家")  # most stars first
    assert "Pending approval" in html
    assert "Close the round" in html
    assert "Star households" not in html  # published only after closing

    ledger.post(zhang.transfer, w.committee)
    ratings.close_round(w.round, w.committee)
    db.session.commit()
    html = page(client.get(f"/committee/ratings/{w.round.id}"))
    notice = html.split("Star households")[1].split("All results")[0]
    assert "张家" in notice  # 4 stars, award approved
    assert "李家" not in notice  # award still waiting for approval
    assert "王家" not in notice  # 2 stars
    assert "Close the round" not in html
    assert re.search(r"Printed \d{4}-\d{2}-\d{2}", html)


@pytest.mark.parametrize("path", ["/committee/ratings/{id}", "/committee/ratings/{id}/close"])
def test_another_villages_round_is_not_found(w, as_user, client, path):
    as_user(w.committee)
    url = path.format(id=w.far_round.id)
    response = client.post(url) if url.endswith("close") else client.get(url)
    assert response.status_code == 404
    db.session.expire_all()
    assert w.far_round.status is RatingRoundStatus.OPEN


# --- cadre ------------------------------------------------------------------------------


def test_cadre_lists_open_rounds_of_their_villages(w, as_user, client, make):
    closed = ratings.open_round(w.village, title="去年评比", opener=w.committee)
    ratings.close_round(closed, w.committee)
    db.session.commit()
    as_user(w.group_cadre)
    html = page(client.get("/cadre/ratings/"))
    assert "春季评比" in html
    assert "2 households left to rate" in html  # 张家 and 李家 of group 1
    assert "去年评比" not in html and "远方评比" not in html


def test_round_page_lists_unrated_households_of_the_cadres_reach(w, as_user, client):
    ratings.rate(w.round, w.zhang, inspector=w.cadre, scores=dict.fromkeys("洁净绿美", 4))
    db.session.commit()
    as_user(w.group_cadre)
    html = page(client.get(f"/cadre/ratings/{w.round.id}"))
    assert "李家" in html
    assert "张家" not in html  # rated already
    assert "王家" not in html  # group 2 is not theirs
    assert rate_url(w, w.li) in html


def test_the_rating_form_has_big_star_choices_and_photos(w, as_user, client):
    as_user(w.cadre)
    html = page(client.get(rate_url(w)))
    assert 'enctype="multipart/form-data"' in html
    for i, name in enumerate("洁净绿美"):
        assert f"<legend>{name}</legend>" in html
        for stars in range(1, 6):
            assert re.search(rf'name="c{i}"[^>]* type="radio" value="{stars}"', html)
    assert 'type="file"' in html and "multiple" in html
    assert "<script" not in html


def test_cadre_rates_a_household_with_photos(w, as_user, client):
    as_user(w.cadre)
    response = client.post(
        rate_url(w),
        data={**FOUR, "photos": [(png(), "a.png"), (png((0, 90, 0)), "b.png")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    assert response.location == f"/cadre/ratings/{w.round.id}"
    assert "Saved: 张家, 4 stars; 10 points await approval." in page(client.get(response.location))

    rating = db.session.scalars(sa.select(Rating)).one()
    assert (rating.household_id, rating.stars, rating.inspector_id) == (w.zhang.id, 4, w.cadre.id)
    assert rating.scores == dict.fromkeys("洁净绿美", 4)
    assert len(rating.photos) == 2
    assert rating.transfer.status is TransferStatus.PENDING
    assert rating.transfer.amount == 10


def test_the_award_reaches_the_committee_queue_and_is_approved_there(w, as_user, client):
    as_user(w.cadre)
    client.post(rate_url(w), data=FOUR)
    award = db.session.scalars(sa.select(Transfer)).one()
    as_user(w.committee)
    assert "美丽庭院 4星 — 春季评比" in page(client.get("/committee/"))
    client.post(f"/committee/transfers/{award.id}/approve")
    db.session.expire_all()
    assert award.status is TransferStatus.POSTED
    assert ledger.balance_of(w.zhang) == ledger.Balance(10, 10)


def test_zero_point_stars_save_without_an_award(w, as_user, client):
    as_user(w.cadre)
    client.post(rate_url(w), data={"c0": "2", "c1": "2", "c2": "1", "c3": "2"})
    assert "Saved: 张家, 2 stars." in page(client.get(f"/cadre/ratings/{w.round.id}"))
    assert count(Rating) == 1 and count(Transfer) == 0


def test_an_auto_approved_award_says_so(w, as_user, client):
    w.village.auto_approve_max = 10
    db.session.commit()
    as_user(w.cadre)
    client.post(rate_url(w), data=FOUR)
    assert "Saved: 张家, 4 stars; 10 points added." in page(
        client.get(f"/cadre/ratings/{w.round.id}")
    )
    assert ledger.balance_of(w.zhang) == ledger.Balance(10, 10)


def fake_photo():
    return io.BytesIO(b"this is not a picture at all"), "photo.jpg"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"c0": "4", "c1": "4", "c2": "4"}, "Please give stars for 美."),
        ({**FOUR, "c0": "6"}, "Stars for 洁 must be a whole number from 1 to 5."),
        ({**FOUR, "c0": "0"}, "Stars for 洁 must be a whole number from 1 to 5."),
        ({**FOUR, "c1": "很好"}, "Stars for 净 must be a whole number from 1 to 5."),
        ({**FOUR, "photos": [fake_photo]}, "This file is not a photo"),
        ({**FOUR, "photos": [png] * 5}, "At most 4 photos per record."),
    ],
)
def test_bad_rating_input_is_explained_and_changes_nothing(w, as_user, client, data, message):
    as_user(w.cadre)
    if "photos" in data:  # fresh file objects for each run
        data = {
            **data,
            "photos": [f() if f is fake_photo else (f(), "p.png") for f in data["photos"]],
        }
    before = snapshot()
    response = client.post(rate_url(w), data=data, content_type="multipart/form-data")
    assert response.status_code == 200
    assert message in page(response)
    assert snapshot() == before
    assert ledger.balance_of(w.zhang) == ledger.Balance(0, 0)


def test_a_double_tap_saves_one_rating(w, as_user, client):
    as_user(w.cadre)
    client.post(rate_url(w), data={**FOUR, "photos": [(png(), "a.png")]})
    before = snapshot()
    response = client.post(
        rate_url(w),
        data={**FOUR, "photos": [(png(), "a.png")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    assert "This rating of 张家 was already saved." in page(client.get(response.location))
    assert snapshot() == before == (2, 1, 1, 1)


def test_a_second_inspector_is_told_who_rated_first(w, as_user, client):
    as_user(w.cadre)
    client.post(rate_url(w), data=FOUR)
    before = snapshot()
    as_user(w.group_cadre)
    html = page(client.get(rate_url(w)))
    assert f"Already rated: 4 stars, by {w.cadre.display_name}." in html
    assert 'type="radio"' not in html
    response = client.post(rate_url(w), data={**FOUR, "c0": "5"})
    assert response.status_code == 200
    assert f"张家 was already rated in this round: 4 stars, by {w.cadre.display_name}." in page(
        response
    )
    assert snapshot() == before


def test_a_closed_round_takes_no_ratings(w, as_user, client):
    ratings.close_round(w.round, w.committee)
    db.session.commit()
    as_user(w.cadre)
    assert "This round is closed" in page(client.get(f"/cadre/ratings/{w.round.id}"))
    html = page(client.get(rate_url(w)))
    assert "This round is closed" in html and 'type="radio"' not in html
    before = snapshot()
    response = client.post(rate_url(w), data=FOUR)
    assert "This round is closed; no more ratings can be added." in page(response)
    assert snapshot() == before


def test_a_committee_member_can_inspect_too(w, as_user, client):
    as_user(w.committee)
    assert "春季评比" in page(client.get("/cadre/ratings/"))
    client.post(rate_url(w, w.wang), data=FOUR)
    rating = db.session.scalars(sa.select(Rating)).one()
    assert (rating.household_id, rating.inspector_id) == (w.wang.id, w.committee.id)


@pytest.mark.parametrize(
    "who, household, round_",
    [
        ("group_cadre", "wang", "round"),  # another group of the same village
        ("cadre", "far_household", "round"),  # a household of another village
        ("cadre", "zhang", "far_round"),  # a round of another village
        ("far_committee", "zhang", "round"),
    ],
)
def test_out_of_reach_is_not_found(w, as_user, client, who, household, round_):
    as_user(getattr(w, who))
    url = rate_url(w, getattr(w, household), getattr(w, round_))
    before = snapshot()
    assert client.get(url).status_code == 404
    assert client.post(url, data=FOUR).status_code == 404
    assert snapshot() == before


def test_a_round_of_another_village_is_not_listed_or_shown(w, as_user, client):
    as_user(w.cadre)
    assert client.get(f"/cadre/ratings/{w.far_round.id}").status_code == 404
    assert client.get("/cadre/ratings/999999").status_code == 404
