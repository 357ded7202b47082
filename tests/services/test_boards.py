"""Notice boards: masked names, monthly snapshots, corrections as new versions, courtyard results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import Board, BoardKind, BoardNames, Role, TransferKind
from pointsmart.services import boards, ledger, rankings, ratings
from pointsmart.services.errors import AlreadyResolved, Forbidden, InvalidInput

FOUR_STARS = {"洁": 4, "净": 4, "绿": 4, "美": 4}
FIVE_STARS = {"洁": 5, "净": 5, "绿": 5, "美": 5}
THREE_STARS = {"洁": 3, "净": 3, "绿": 3, "美": 3}


@pytest.fixture(autouse=True)
def books_stay_clean(app):
    yield
    db.session.rollback()
    assert ledger.check() == ([], [])


@pytest.fixture
def w(make):
    """A village (deductions may go below zero) with two groups and its staff; committed."""
    town = make.town()
    village = make.village(town, "青山村", allow_negative_balance=True)
    group1, group2 = make.group(village, "一组"), make.group(village, "二组")
    elsewhere = make.village(town, "绿水村")
    world = SimpleNamespace(
        village=village,
        group1=group1,
        group2=group2,
        wang=make.household(group1, "王建明"),
        li=make.household(group1, "李秀英"),
        zhao=make.household(group2, "赵四"),
        ouyang=make.household(group2, "欧阳建国"),
        cadre=make.staff(Role.CADRE, village),
        committee=make.staff(Role.COMMITTEE, village),
        committee2=make.staff(Role.COMMITTEE, village),
        elsewhere=elsewhere,
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
    )
    db.session.commit()
    return world


def posted(w, household, points, kind=TransferKind.AWARD, reason="垃圾分类"):
    """Record and approve an award (or a deduction) this month."""
    transfer = ledger.record(
        kind=kind,
        household=household,
        points=points,
        reason=reason,
        recorded_by=w.cadre,
        key=f"board-{household.id}-{kind.value}-{points}-{reason}",
    )
    return ledger.post(transfer, w.committee)


def english(error) -> str:
    with force_locale("en"):
        return str(error.value.message)


def month_of_now():
    return rankings.this_month()


def a_month(w):
    """Awards and deductions of this month: 王 30, 李 30 (tie), 赵 10; 欧阳 -15 in two records."""
    posted(w, w.wang, 30)
    posted(w, w.li, 30)
    posted(w, w.zhao, 10)
    posted(w, w.ouyang, 10, TransferKind.DEDUCTION, "乱倒垃圾")
    posted(w, w.ouyang, 5, TransferKind.DEDUCTION, "焚烧秸秆")
    posted(w, w.zhao, 3, TransferKind.DEDUCTION, "乱倒垃圾")
    db.session.commit()


# --- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, masked",
    [
        ("王", "*"),
        ("王明", "王*"),
        ("王建明", "王*明"),
        ("欧阳建国", "欧**国"),
        (" 王建明 ", "王*明"),
    ],
)
def test_mask_hides_the_middle_of_names_of_every_length(name, masked):
    assert boards.mask(name) == masked


def test_shown_name_follows_the_village_setting():
    assert boards.shown_name("王建明", BoardNames.FULL) == "王建明"
    assert boards.shown_name("王建明", BoardNames.MASKED) == "王*明"
    assert boards.shown_name("王建明", BoardNames.GROUP_ONLY) is None


# --- publishing a month -------------------------------------------------------------------------


def test_a_monthly_board_freezes_both_lists_with_ranks_and_masked_names(w):
    a_month(w)
    board = boards.publish_monthly(w.village, month_of_now(), w.committee)
    db.session.commit()
    db.session.expire_all()
    board = db.session.get(Board, board.id)
    assert board.kind is BoardKind.MONTHLY
    assert board.version == 1 and board.corrects_id is None and board.correction_note is None
    assert board.period == month_of_now()
    assert board.published_by_id == w.committee.id
    content = board.content
    assert content["village"] == "青山村" and content["size"] == 10
    assert content["month"] == f"{month_of_now():%Y-%m}"
    # Equal points share a rank; the tie is listed by group then house number (王 before 李).
    assert content["red"] == [
        {"rank": 1, "name": "王建明", "group": "一组", "points": 30},
        {"rank": 1, "name": "李秀英", "group": "一组", "points": 30},
        {"rank": 3, "name": "赵四", "group": "二组", "points": 7},
    ]
    # Masked by default; most points deducted first.
    assert content["names"] == "masked"
    assert content["improvement"] == [
        {"rank": 1, "name": "欧**国", "group": "二组", "deducted": 15, "deductions": 2},
        {"rank": 2, "name": "赵*", "group": "二组", "deducted": 3, "deductions": 1},
    ]
    assert content["households"] == 4 and content["participants"] == 3
    assert "欧阳建国" not in str(content)


def test_the_list_size_cuts_each_list_but_keeps_a_tie_at_the_last_place(w):
    a_month(w)
    content = boards.monthly_content(w.village, month_of_now(), 1)
    assert [e["name"] for e in content["red"]] == ["王建明", "李秀英"]  # both share rank 1
    assert [e["name"] for e in content["improvement"]] == ["欧**国"]


def test_an_empty_month_publishes_empty_lists(w):
    board = boards.publish_monthly(w.village, month_of_now(), w.committee, size=5)
    assert board.content["red"] == [] and board.content["improvement"] == []
    assert board.content["participants"] == 0 and board.content["households"] == 4


def test_publishing_the_same_content_again_is_refused_and_adds_nothing(w):
    a_month(w)
    boards.publish_monthly(w.village, month_of_now(), w.committee)
    db.session.commit()
    with pytest.raises(AlreadyResolved) as error:
        boards.publish_monthly(w.village, month_of_now(), w.committee2, note="再发一次")
    assert "nothing has changed" in english(error)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Board)) == 1


def test_a_published_board_never_changes_and_a_correction_needs_a_note(w):
    a_month(w)
    first = boards.publish_monthly(w.village, month_of_now(), w.committee)
    db.session.commit()
    frozen = dict(first.content)

    # The ledger moves on: another award for 赵, and 王's award is reversed.
    posted(w, w.zhao, 40, reason="植树")
    wang_award = ledger.find(f"board-{w.wang.id}-award-30-垃圾分类")
    ledger.reverse(wang_award, w.committee, "记错了户", key="board-reverse-wang")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Board, first.id).content == frozen

    with pytest.raises(InvalidInput) as error:
        boards.publish_monthly(w.village, month_of_now(), w.committee, note="  ")
    assert "say what the correction changes" in english(error)
    db.session.rollback()

    second = boards.publish_monthly(
        w.village, month_of_now(), w.committee2, note="王建明的奖励记错，已冲正；赵四补记植树"
    )
    db.session.commit()
    db.session.expire_all()
    first, second = db.session.get(Board, first.id), db.session.get(Board, second.id)
    assert first.content == frozen  # the old version stays as published
    assert second.version == 2 and second.corrects_id == first.id
    assert second.correction_note == "王建明的奖励记错，已冲正；赵四补记植树"
    assert first.corrected_by.id == second.id and second.corrects.id == first.id
    assert [b.id for b in boards.history(first)] == [first.id, second.id]
    assert [b.id for b in boards.history(second)] == [first.id, second.id]
    # The correction shows the new figures.
    assert second.content["red"] == [
        {"rank": 1, "name": "赵四", "group": "二组", "points": 47},
        {"rank": 2, "name": "李秀英", "group": "一组", "points": 30},
    ]
    # Only the latest version is in force.
    assert [b.id for b in boards.published(w.village)] == [second.id]
    assert boards.latest(w.village, BoardKind.MONTHLY, period=month_of_now()).id == second.id


def test_a_too_long_note_is_refused(w):
    a_month(w)
    boards.publish_monthly(w.village, month_of_now(), w.committee)
    posted(w, w.zhao, 40, reason="植树")
    with pytest.raises(InvalidInput) as error:
        boards.publish_monthly(w.village, month_of_now(), w.committee, note="改" * 301)
    assert "at most 300" in english(error)


@pytest.mark.parametrize("size", [0, -1, 51, "abc", "", "1.5", "²", "①", "10" * 10])
def test_a_bad_list_size_is_refused(w, size):
    with pytest.raises(InvalidInput) as error:
        boards.publish_monthly(w.village, month_of_now(), w.committee, size=size)
    assert "whole number from 1 to 50" in english(error)


@pytest.mark.parametrize(
    "size, expected", [(None, 10), ("7", 7), (" 50 ", 50), (1, 1), ("１０", 10)]
)
def test_list_size_reads_whole_numbers_and_defaults_to_ten(size, expected):
    assert boards.list_size(size) == expected


def test_a_future_month_is_refused(w):
    this = month_of_now()
    next_month = (
        this.replace(year=this.year + 1, month=1)
        if this.month == 12
        else this.replace(month=this.month + 1)
    )
    with pytest.raises(InvalidInput) as error:
        boards.publish_monthly(w.village, next_month, w.committee)
    assert "not begun" in english(error)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Board)) == 0


@pytest.mark.parametrize("who", ["far_committee", "cadre"])
def test_only_the_villages_committee_publishes(w, who):
    with pytest.raises(Forbidden):
        boards.publish_monthly(w.village, month_of_now(), getattr(w, who))


# --- the village's naming setting ---------------------------------------------------------------


def test_a_masked_board_stays_masked_after_the_village_switches_to_full_names(w):
    a_month(w)
    masked = boards.publish_monthly(w.village, month_of_now(), w.committee)
    db.session.commit()
    boards.set_board_names(w.village, w.committee, "full")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Board, masked.id).content["improvement"][0]["name"] == "欧**国"
    # Boards published afterwards follow the new setting (a correction, as the names differ).
    full = boards.publish_monthly(w.village, month_of_now(), w.committee, note="改为显示全名")
    assert full.content["names"] == "full"
    assert full.content["improvement"][0]["name"] == "欧阳建国"


def test_group_only_boards_hold_no_names_on_the_improvement_list(w):
    a_month(w)
    boards.set_board_names(w.village, w.committee, BoardNames.GROUP_ONLY)
    board = boards.publish_monthly(w.village, month_of_now(), w.committee)
    assert [e["name"] for e in board.content["improvement"]] == [None, None]
    assert [e["group"] for e in board.content["improvement"]] == ["二组", "二组"]
    assert "欧阳" not in str(board.content["improvement"])
    assert "赵四" not in str(board.content["improvement"])


def test_the_naming_setting_is_the_committees_and_must_be_one_of_three(w):
    with pytest.raises(Forbidden):
        boards.set_board_names(w.village, w.far_committee, "full")
    with pytest.raises(InvalidInput) as error:
        boards.set_board_names(w.village, w.committee, "initials")
    assert "full names, masked names or the group only" in english(error)
    db.session.rollback()
    assert db.session.get(type(w.village), w.village.id).board_names is BoardNames.MASKED


# --- courtyard results --------------------------------------------------------------------------


def rated_round(w, *, close=True, approve=True):
    round_ = ratings.open_round(w.village, title="秋季评比", opener=w.committee)
    awards = []
    for household, scores in (
        (w.wang, FIVE_STARS),
        (w.li, FOUR_STARS),
        (w.zhao, FOUR_STARS),
        (w.ouyang, THREE_STARS),
    ):
        rating, _ = ratings.rate(round_, household, inspector=w.cadre, scores=scores)
        awards.append(rating.transfer)
    if approve:
        for transfer in awards[:2]:
            ledger.post(transfer, w.committee)
        ledger.void(awards[2], w.committee, "照片不清楚")  # 赵's four stars were rejected
    if close:
        ratings.close_round(round_, w.committee)
    db.session.commit()
    return round_


def test_courtyard_results_are_published_only_for_a_closed_round(w):
    round_ = rated_round(w, close=False)
    with pytest.raises(InvalidInput) as error:
        boards.publish_courtyard(round_, w.committee)
    assert "Close the rating round" in english(error)
    db.session.rollback()
    ratings.close_round(round_, w.committee)
    board = boards.publish_courtyard(round_, w.committee)
    assert board.kind is BoardKind.COURTYARD and board.rating_round_id == round_.id
    assert board.period == month_of_now()


def test_courtyard_results_list_confirmed_star_households_only(w):
    round_ = rated_round(w)
    board = boards.publish_courtyard(round_, w.committee)
    content = board.content
    assert content["title"] == "秋季评比" and content["rated"] == 4 and content["min_stars"] == 4
    # 赵's award was rejected, 欧阳 has three stars: neither is a star household.
    assert [(h["name"], h["stars"]) for h in content["households"]] == [
        ("王建明", 5),
        ("李秀英", 4),
    ]
    with pytest.raises(AlreadyResolved):
        boards.publish_courtyard(round_, w.committee)


def test_courtyard_results_of_another_village_are_refused(w):
    round_ = rated_round(w)
    with pytest.raises(Forbidden):
        boards.publish_courtyard(round_, w.far_committee)


def test_a_monthly_board_and_a_courtyard_board_of_the_same_month_are_both_in_force(w):
    a_month(w)
    monthly = boards.publish_monthly(w.village, month_of_now(), w.committee)
    courtyard = boards.publish_courtyard(rated_round(w), w.committee)
    assert {b.id for b in boards.published(w.village)} == {monthly.id, courtyard.id}
    assert boards.published(w.elsewhere) == []
