"""Recording in the field: a household's page and its award/deduction form, on a phone."""

from __future__ import annotations

import html
import io
import re
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from PIL import Image

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    Category,
    LimitPeriod,
    Photo,
    Role,
    RuleWarning,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import awards, ledger, places, rules

KEY = re.compile(r'name="key" type="hidden" value="([0-9a-f]{32})"')


def rule(committee, village, name, points, **extra):
    return rules.create(
        rules.RuleData(name, Category.WASTE_SORTING, points, **extra), committee, village=village
    )


@pytest.fixture
def w(make):
    village = make.village(name="青山村")
    group = make.group(village, "东组")
    household = places.create_household(group, "E-1", "张建国", head_phone="13811112222")
    places.add_member(household, "张小明")
    far = make.village(village.town, "柳溪村")
    committee = make.staff(Role.COMMITTEE, village)
    far_committee = make.staff(Role.COMMITTEE, far)
    world = SimpleNamespace(
        village=village,
        group=group,
        household=household,
        neighbour=places.create_household(group, "E-2", "赵秀英"),
        other_group_household=places.create_household(make.group(village, "西组"), "W-1", "王桂兰"),
        far_household=places.create_household(make.group(far, "远组"), "F-1", "刘德胜"),
        cadre=make.staff(Role.CADRE, village),
        group_cadre=make.staff(Role.CADRE, group),
        committee=committee,
        far_cadre=make.staff(Role.CADRE, far),
        sorting=rule(committee, village, "垃圾分类", 5),
        daily=rule(committee, village, "义务保洁", 3, limit_count=1, limit_period=LimitPeriod.DAY),
        photo=rule(committee, village, "植树", 10, photo_required=True),
        burning=rule(
            committee,
            village,
            "焚烧秸秆",
            -10,
            warning_first=True,
            limit_count=2,
            limit_period=LimitPeriod.MONTH,
        ),
        far_rule=rule(far_committee, far, "外村细则", 5),
    )
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


def jpeg(colour=(20, 120, 20)) -> tuple[io.BytesIO, str]:
    """An upload as the test client sends one: (file, file name)."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "JPEG")
    buffer.seek(0)
    return buffer, "photo.jpg"


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot():
    """Rows and balances a refused form must leave as they were."""
    db.session.expire_all()
    return (
        count(Transfer),
        count(RuleWarning),
        count(Photo),
        dict(db.session.execute(sa.select(Account.id, Account.balance)).all()),
    )


def page_url(household) -> str:
    return f"/cadre/households/{household.id}"


def fresh_key(client, household) -> str:
    response = client.get(page_url(household))
    assert response.status_code == 200
    return KEY.search(response.get_data(as_text=True)).group(1)


def submit(client, household, the_rule=None, *, key=None, photos=(), **fields):
    data = {
        "rule": str(the_rule.id) if the_rule is not None else "",
        "member": "",
        "note": "",
        "key": key or fresh_key(client, household),
        **fields,
    }
    if photos:
        data["photos"] = list(photos)
    return client.post(
        page_url(household),
        data=data,
        content_type="multipart/form-data",
        follow_redirects=True,
    )


# --- the page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["cadre", "group_cadre", "committee"])
def test_the_page_shows_the_household_and_its_record_form(w, as_user, who):
    ledger.post(
        awards.record_by_rule(household=w.household, rule=w.sorting, recorded_by=w.cadre, key="a"),
        w.committee,
    )
    db.session.commit()
    client = as_user(getattr(w, who))

    response = client.get(page_url(w.household))

    assert response.status_code == 200
    page = text(response)
    for expected in ("张建国", "张小明", "东组", "E-1", "13811112222", 'id="spendable">5<'):
        assert expected in page
    assert "垃圾分类" in page  # the recent record
    assert 'enctype="multipart/form-data"' in page
    awards_group, deductions_group = page.split('<optgroup label="Awards">')[1].split(
        '<optgroup label="Deductions">'
    )
    assert "垃圾分类 +5" in awards_group and "植树 +10 · photo required" in awards_group
    assert "义务保洁 +3 · 1× a day" in awards_group
    assert "焚烧秸秆 -10 · 2× a month · first time a warning" in deductions_group
    assert "外村细则" not in page
    assert KEY.search(response.get_data(as_text=True))


def test_each_form_carries_a_new_key(w, as_user):
    client = as_user(w.cadre)

    assert fresh_key(client, w.household) != fresh_key(client, w.household)


@pytest.mark.parametrize(
    ("who", "whose"),
    [
        ("far_cadre", "household"),  # another village
        ("cadre", "far_household"),
        ("group_cadre", "other_group_household"),  # another group of the village
    ],
)
def test_a_household_out_of_scope_is_not_found(w, as_user, who, whose):
    client = as_user(getattr(w, who))
    household = getattr(w, whose)
    before = snapshot()

    assert client.get(page_url(household)).status_code == 404
    response = client.post(page_url(household), data={"rule": str(w.sorting.id), "key": "k"})
    assert response.status_code == 404
    assert snapshot() == before


def test_search_results_link_to_the_household_page(w, as_user):
    client = as_user(w.cadre)

    page = client.get("/cadre/", query_string={"q": "1381111"}).get_data(as_text=True)

    assert f'href="{page_url(w.household)}"' in page
    assert f'href="{page_url(w.neighbour)}"' not in page
    assert 'type="search"' in page and 'class="big"' in page


# --- recording --------------------------------------------------------------------------------


def test_an_award_is_recorded_and_waits_for_approval(w, as_user):
    client = as_user(w.cadre)
    member = w.household.members[-1]

    response = submit(
        client, w.household, w.photo, member=str(member.id), note="种了三棵树", photos=[jpeg()]
    )

    assert response.status_code == 200
    assert "Recorded: +10 points for 张建国 (植树), waiting for approval." in text(response)
    transfer = db.session.scalar(sa.select(Transfer))
    assert transfer.status is TransferStatus.PENDING and transfer.rule_id == w.photo.id
    assert (transfer.member_id, transfer.note) == (member.id, "种了三棵树")
    assert transfer.recorded_by_id == w.cadre.id
    assert [p.transfer_id for p in db.session.scalars(sa.select(Photo))] == [transfer.id]


def test_a_small_award_is_posted_at_once_where_the_village_says_so(w, as_user):
    w.village.auto_approve_max = 5
    db.session.commit()
    client = as_user(w.cadre)

    response = submit(client, w.household, w.sorting)

    assert "Posted: +5 points for 张建国 (垃圾分类), auto-approved." in text(response)
    assert ledger.balance_of(w.household).spendable == 5


def test_a_first_offence_records_a_warning_only(w, as_user):
    client = as_user(w.cadre)

    first = text(submit(client, w.household, w.burning))
    second = text(submit(client, w.household, w.burning))

    assert "First offence: a warning was recorded for 张建国 under “焚烧秸秆”; " in first
    assert "no points were deducted." in first
    assert "Recorded: -10 points for 张建国 (焚烧秸秆), waiting for approval." in second
    assert count(RuleWarning) == 1
    assert db.session.scalar(sa.select(Transfer.kind)) is TransferKind.DEDUCTION
    assert "Warnings (no points deducted)" in second


def test_a_double_tap_records_once(w, as_user):
    client = as_user(w.cadre)
    key = fresh_key(client, w.household)

    submit(client, w.household, w.sorting, key=key)
    again = submit(client, w.household, w.sorting, key=key, photos=[jpeg()])

    assert "Already saved, nothing added: Recorded: +5 points for 张建国" in text(again)
    assert count(Transfer) == 1
    assert count(Photo) == 0  # the repeat stored no photo


def test_an_old_page_sent_again_with_other_content_records_nothing(w, as_user):
    client = as_user(w.cadre)
    key = fresh_key(client, w.household)
    submit(client, w.household, w.sorting, key=key)
    before = snapshot()

    # The back button brings the old form (and its key) back; another rule is chosen.
    response = submit(client, w.household, w.daily, key=key, photos=[jpeg()])

    page = response.get_data(as_text=True)
    assert "already submitted with different content" in text(response)
    assert snapshot() == before
    new_key = KEY.search(page).group(1)
    assert new_key != key
    assert "waiting for approval" in text(submit(client, w.household, w.daily, key=new_key))


def test_a_double_tapped_warning_records_once(w, as_user):
    client = as_user(w.cadre)
    key = fresh_key(client, w.household)

    submit(client, w.household, w.burning, key=key)
    again = submit(client, w.household, w.burning, key=key)

    assert "Already saved, nothing added: First offence" in text(again)
    assert count(RuleWarning) == 1 and count(Transfer) == 0


def test_a_committee_member_may_record_too(w, as_user):
    client = as_user(w.committee)

    response = submit(client, w.household, w.sorting)

    assert "waiting for approval" in text(response)
    assert db.session.scalar(sa.select(Transfer.recorded_by_id)) == w.committee.id


# --- bad input: a clear message, nothing changed ----------------------------------------------


def text_file() -> io.BytesIO:
    return io.BytesIO(b"this is not a photo at all\n" * 10)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("unknown rule", "There is no such rule in this village's catalogue."),
        ("rule of another village", "There is no such rule in this village's catalogue."),
        ("no rule", "Please choose a rule."),
        ("text file renamed .jpg", "This file is not a photo"),
        ("five photos", "At most 4 photos per record."),
        ("missing required photo", "This rule needs a photo as evidence."),
        ("member of another household", "That person is not a member of this household."),
        ("unknown member", "That person is not a member of this household."),
        ("withdrawn rule", "This rule is not in force today."),
        ("limit reached", "Limit reached: 义务保洁 may be recorded 1 time(s) per day"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(w, as_user, case, says):
    if case == "limit reached":
        awards.record_by_rule(household=w.household, rule=w.daily, recorded_by=w.cadre, key="d")
    if case == "withdrawn rule":
        rules.withdraw(w.sorting, w.committee)
    db.session.commit()
    client = as_user(w.cadre)
    key = fresh_key(client, w.household)
    fields = {
        "unknown rule": dict(the_rule=None, rule="999999"),
        "rule of another village": dict(the_rule=w.far_rule),
        "no rule": dict(the_rule=None),
        "text file renamed .jpg": dict(the_rule=w.photo, photos=[(text_file(), "tree.jpg")]),
        "five photos": dict(the_rule=w.photo, photos=[jpeg() for _ in range(5)]),
        "missing required photo": dict(the_rule=w.photo),
        "member of another household": dict(
            the_rule=w.sorting, member=str(w.neighbour.members[0].id)
        ),
        "unknown member": dict(the_rule=w.sorting, member="nobody"),
        "withdrawn rule": dict(the_rule=w.sorting),
        "limit reached": dict(the_rule=w.daily),
    }[case]
    before = snapshot()

    response = submit(client, w.household, key=key, **fields)

    assert response.status_code == 200
    page = text(response)
    assert says in page
    assert "Nothing was recorded" in page
    assert snapshot() == before
    # The form comes back with the same key: nothing was recorded under it.
    assert key in response.get_data(as_text=True)


def test_a_fake_image_among_good_ones_stores_none(w, as_user):
    client = as_user(w.cadre)
    before = snapshot()

    response = submit(
        client, w.household, w.photo, photos=[jpeg(), (text_file(), "b.jpg"), jpeg((1, 2, 3))]
    )

    assert "This file is not a photo" in text(response)
    assert snapshot() == before


def test_an_inactive_household_takes_no_record(w, as_user):
    client = as_user(w.cadre)
    key = fresh_key(client, w.household)
    w.household.is_active = False
    db.session.commit()
    before = snapshot()

    response = submit(client, w.household, w.sorting, key=key)

    assert "This household is no longer active." in text(response)
    assert snapshot() == before
