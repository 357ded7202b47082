"""Inspection round pages: open for a covered group, mark every household, submit once."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    Category,
    InspectionRound,
    LimitPeriod,
    Role,
    RoundMark,
    RoundStatus,
    RuleWarning,
    Transfer,
    TransferStatus,
)
from pointsmart.services import awards, places, rounds, rules


def rule(committee, village, name, points, **extra):
    return rules.create(
        rules.RuleData(name, Category.WASTE_SORTING, points, **extra), committee, village=village
    )


@pytest.fixture
def w(make):
    village = make.village(name="青山村")
    group = make.group(village, "一组")
    other_group = make.group(village, "二组")
    far = make.village(village.town, "柳溪村")
    far_group = make.group(far, "远组")
    committee = make.staff(Role.COMMITTEE, village)
    far_committee = make.staff(Role.COMMITTEE, far)
    gone = places.create_household(group, "9", "已迁出")
    gone.is_active = False
    world = SimpleNamespace(
        village=village,
        group=group,
        other_group=other_group,
        far_group=far_group,
        households=[places.create_household(group, str(n), f"户{n}") for n in (1, 2, 3)],
        gone=gone,
        cadre=make.staff(Role.CADRE, group),
        village_cadre=make.staff(Role.CADRE, village),
        other_cadre=make.staff(Role.CADRE, other_group),
        committee=committee,
        far_cadre=make.staff(Role.CADRE, far),
        good=rule(committee, village, "分类合格", 5, limit_count=1, limit_period=LimitPeriod.WEEK),
        bad=rule(committee, village, "分类不合格", -3),
        extra=rule(committee, village, "义务保洁", 8),
        photo=rule(committee, village, "植树", 10, photo_required=True),
        far_rule=rule(far_committee, far, "外村细则", 5),
    )
    db.session.commit()
    world.round = rounds.open_round(
        group, world.cadre, "垃圾分类检查", pass_rule=world.good, fail_rule=world.bad
    )
    world.far_round = rounds.open_round(far_group, world.far_cadre, "远方检查")
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


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot():
    db.session.expire_all()
    return (
        count(InspectionRound),
        count(Transfer),
        count(RuleWarning),
        count(RoundMark),
        dict(db.session.execute(sa.select(InspectionRound.id, InspectionRound.status)).all()),
        dict(db.session.execute(sa.select(Account.id, Account.balance)).all()),
    )


def round_url(round_) -> str:
    return f"/cadre/rounds/{round_.id}"


def marks(w, *values) -> dict[str, str]:
    """Form fields for the group's households in order: 'pass', 'fail', 'absent' or a rule."""
    form = {}
    for household, value in zip(w.households, values, strict=True):
        if isinstance(value, str):
            form[f"mark-{household.id}"] = value
        else:
            form[f"mark-{household.id}"] = "rule"
            form[f"rule-{household.id}"] = str(value.id)
    return form


# --- the list and opening ---------------------------------------------------------------------


def test_the_list_shows_open_rounds_and_the_groups_to_open_one_for(w, as_user):
    page = text(as_user(w.cadre).get("/cadre/rounds/"))

    assert "垃圾分类检查" in page and f'href="{round_url(w.round)}"' in page
    assert f'href="/cadre/groups/{w.group.id}/rounds/new"' in page
    assert f"/cadre/groups/{w.other_group.id}/" not in page
    assert "远方检查" not in page


def test_the_cadre_home_links_to_the_rounds(w, as_user):
    assert 'href="/cadre/rounds/"' in as_user(w.cadre).get("/cadre/").get_data(as_text=True)


def test_a_cadre_opens_a_round(w, as_user):
    client = as_user(w.cadre)
    form = client.get(f"/cadre/groups/{w.group.id}/rounds/new")
    assert form.status_code == 200
    page = text(form)
    assert "分类合格 +5 · 1× a week" in page and "分类不合格 -3" in page
    assert "植树" not in page  # a rule needing a photo cannot be used in a round

    response = client.post(
        f"/cadre/groups/{w.group.id}/rounds/new",
        data={"title": "周检查", "pass_rule": str(w.extra.id), "fail_rule": ""},
    )

    assert response.status_code == 302
    round_ = db.session.scalar(sa.select(InspectionRound).where(InspectionRound.title == "周检查"))
    assert response.headers["Location"] == round_url(round_)
    assert (round_.pass_rule_id, round_.fail_rule_id) == (w.extra.id, None)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"title": ""}, "Please give the round a title."),
        ({"title": "检查", "pass_rule": "bad"}, "The rule for pass must be an award"),
        (
            {"title": "检查", "fail_rule": "far"},
            "There is no such rule in this village's catalogue.",
        ),
        ({"title": "检查", "pass_rule": "999999"}, "There is no such rule"),
        ({"title": "检查", "pass_rule": "photo"}, "needs a photo as evidence"),
    ],
)
def test_bad_round_settings_show_a_message_and_open_nothing(w, as_user, data, says):
    named = {"bad": w.bad.id, "far": w.far_rule.id, "photo": w.photo.id}
    data = {k: str(named.get(v, v)) for k, v in data.items()}
    client = as_user(w.cadre)
    before = snapshot()

    response = client.post(f"/cadre/groups/{w.group.id}/rounds/new", data=data)

    assert response.status_code == 200
    assert says in text(response)
    assert snapshot() == before


def test_a_group_the_cadre_does_not_cover_is_refused_with_a_clear_message(w, as_user):
    client = as_user(w.other_cadre)
    before = snapshot()

    for response in (
        client.get(f"/cadre/groups/{w.group.id}/rounds/new"),
        client.post(f"/cadre/groups/{w.group.id}/rounds/new", data={"title": "越界"}),
        client.get(round_url(w.round)),
        client.post(round_url(w.round), data=marks(w, "pass", "pass", "pass")),
    ):
        assert response.status_code == 403
        assert "You do not cover 一组; only its own cadres can inspect it." in text(response)
    assert snapshot() == before


def test_a_group_of_another_village_is_not_found(w, as_user):
    client = as_user(w.cadre)

    assert client.get(f"/cadre/groups/{w.far_group.id}/rounds/new").status_code == 404
    assert client.get(round_url(w.far_round)).status_code == 404
    assert client.post(round_url(w.far_round), data={}).status_code == 404


# --- the round page ---------------------------------------------------------------------------


def test_the_round_page_lists_every_active_household_with_its_choices(w, as_user):
    page = text(as_user(w.cadre).get(round_url(w.round)))

    for household in w.households:
        assert f'name="mark-{household.id}" value="pass"' in page
        assert f'name="mark-{household.id}" value="fail"' in page
        assert f'name="mark-{household.id}" value="absent"' in page
        assert f'name="rule-{household.id}"' in page
    assert f"mark-{w.gone.id}" not in page
    assert "Submit the round (3 households)" in page


def test_submitting_records_every_household_and_shows_the_result(w, as_user):
    client = as_user(w.cadre)

    response = client.post(
        round_url(w.round), data=marks(w, "pass", "fail", "absent"), follow_redirects=True
    )

    page = text(response)
    assert "Round submitted: 1 awarded, 1 deducted, 0 warned, 1 not at home." in page
    assert "Awarded under 分类合格" in page and "Deducted under 分类不合格" in page
    assert "Not at home: nothing recorded" in page
    assert page.count("Pending approval") == 2
    assert count(Transfer) == 2 and count(RoundMark) == 3
    db.session.expire_all()
    assert db.session.get(InspectionRound, w.round.id).status is RoundStatus.SUBMITTED
    # Submitted, it is listed among the recent rounds and no longer among the open ones.
    listing = text(client.get("/cadre/rounds/"))
    assert "No open rounds." in listing and "垃圾分类检查" in listing


def test_a_rule_per_row(w, as_user):
    client = as_user(w.cadre)

    client.post(round_url(w.round), data=marks(w, w.extra, "pass", "absent"))

    rows = {t.household_id: t for t in db.session.scalars(sa.select(Transfer))}
    assert rows[w.households[0].id].rule_id == w.extra.id
    assert rows[w.households[1].id].rule_id == w.good.id


def test_a_refused_row_lands_nothing_and_keeps_the_choices(w, as_user):
    awards.record_by_rule(household=w.households[1], rule=w.good, recorded_by=w.cadre, key="x")
    db.session.commit()
    client = as_user(w.cadre)
    before = snapshot()

    response = client.post(round_url(w.round), data=marks(w, "fail", "pass", w.extra))

    assert response.status_code == 200
    page = text(response)
    assert "户2 (2): Limit reached: 分类合格 may be recorded 1 time(s) per week" in page
    assert "Nothing in this round was recorded." in page
    assert snapshot() == before
    first, second, third = w.households
    assert f'name="mark-{first.id}" value="fail" checked' in page
    assert f'name="mark-{second.id}" value="pass" checked' in page
    assert f'<option value="{w.extra.id}" selected>' in page
    assert f'class="round-row refused" id="h{second.id}"' in page


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ("missing", "户3 (3): Please choose pass, fail, not at home or a rule."),
        ("unknown rule", "户3 (3): There is no such rule in this village's catalogue."),
        ("far rule", "户3 (3): There is no such rule in this village's catalogue."),
        ("photo rule", "户3 (3): This rule needs a photo as evidence."),
    ],
)
def test_bad_rows_name_the_household(w, as_user, form, says):
    data = marks(w, "pass", "absent", "absent")
    third = w.households[2].id
    if form == "missing":
        del data[f"mark-{third}"]
    else:
        data[f"mark-{third}"] = "rule"
        data[f"rule-{third}"] = {
            "unknown rule": "999999",
            "far rule": str(w.far_rule.id),
            "photo rule": str(w.photo.id),
        }[form]
    client = as_user(w.cadre)
    before = snapshot()

    response = client.post(round_url(w.round), data=data)

    assert response.status_code == 200
    assert says in text(response)
    assert snapshot() == before


def test_resubmitting_shows_the_result_and_records_nothing_more(w, as_user):
    client = as_user(w.cadre)
    client.post(round_url(w.round), data=marks(w, "pass", "fail", "absent"))
    before = snapshot()

    # The back button, a double tap, or a second cadre of the group with other marks.
    again = client.post(
        round_url(w.round), data=marks(w, "fail", "fail", "fail"), follow_redirects=True
    )
    other = as_user(w.village_cadre).post(
        round_url(w.round), data=marks(w, "pass", "pass", "pass"), follow_redirects=True
    )

    assert snapshot() == before
    for response in (again, other):
        page = text(response)
        assert "This round was already submitted by" in page
        assert "nothing was recorded twice" in page
        assert "Awarded under 分类合格" in page  # the result of the first submission


def test_the_result_shows_warnings_and_approval_status(w, as_user):
    graduated = rule(
        w.committee,
        w.village,
        "焚烧秸秆",
        -10,
        warning_first=True,
        limit_count=1,
        limit_period=LimitPeriod.MONTH,
    )
    w.village.auto_approve_max = 5
    round_ = rounds.open_round(w.group, w.cadre, "秸秆巡查", pass_rule=w.good, fail_rule=graduated)
    db.session.commit()
    client = as_user(w.cadre)

    page = text(
        client.post(
            round_url(round_), data=marks(w, "fail", "pass", "absent"), follow_redirects=True
        )
    )

    assert "Round submitted: 1 awarded, 0 deducted, 1 warned, 1 not at home." in page
    assert "Warning under 焚烧秸秆; no points deducted" in page
    assert "Posted" in page  # the auto-approved award
    assert db.session.scalar(sa.select(Transfer.status)) is TransferStatus.POSTED
    assert count(RuleWarning) == 1


def test_the_round_page_is_phone_sized(w, as_user):
    page = as_user(w.cadre).get(round_url(w.round)).get_data(as_text=True)

    assert 'name="viewport"' in page
    assert re.search(r'class="mark-choice[^"]*"><input type="radio"', page)
    assert "<script" not in page
