"""Notice board pages: the committee prepares, previews and publishes; the public reads, no login."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import Board, BoardNames, Category, LimitPeriod, Role, TransferKind
from pointsmart.services import boards, ledger, places, rankings, ratings, rules
from pointsmart.timeutil import local_today, to_local

FOUR = {"c0": "4", "c1": "4", "c2": "4", "c3": "4"}
FOUR_STARS = {"洁": 4, "净": 4, "绿": 4, "美": 4}


@pytest.fixture
def w(make):
    """A village with households whose members have phones and ID digits; staff; another village."""
    town = make.town("青山镇")
    village = make.village(town, "青山村", allow_negative_balance=True)
    group1, group2 = make.group(village, "一组"), make.group(village, "二组")
    far = make.village(town, "绿水村")
    world = SimpleNamespace(
        town=town,
        village=village,
        wang=make.household(group1, "王建明", phone="13900001111"),
        li=make.household(group1, "李秀英", phone="13900002222"),
        zhao=make.household(group2, "赵四", phone="13900003333"),
        ouyang=make.household(group2, "欧阳建国", phone="13900004444"),
        cadre=make.staff(Role.CADRE, village),
        committee=make.staff(Role.COMMITTEE, village),
        committee2=make.staff(Role.COMMITTEE, village),
        far=far,
        far_household=make.household(make.group(far), "远方户"),
        far_committee=make.staff(Role.COMMITTEE, far),
    )
    world.villager = make.villager(world.ouyang, phone="13900009999")
    world.ouyang.members[0].id_last4 = "739X"
    extra = places.add_member(world.wang, "王小明", phone="13900005555")
    extra.id_last4 = "4821"
    world.shop = make.shop(village)
    world.clerk = make.staff(Role.CLERK, world.shop)
    db.session.commit()
    return world


@pytest.fixture
def as_user(client, login_as):
    """Log in as a user (or stay anonymous with None), with English pages."""

    def log_in(user=None):
        if user is not None:
            login_as(user)
        client.post("/language", data={"locale": "en", "next": "/"})
        return client

    return log_in


def posted(w, household, points, kind=TransferKind.AWARD, reason="垃圾分类"):
    transfer = ledger.record(
        kind=kind,
        household=household,
        points=points,
        reason=reason,
        recorded_by=w.cadre,
        key=f"page-{household.id}-{kind.value}-{points}-{reason}",
    )
    return ledger.post(transfer, w.committee)


def a_month(w):
    """王 30, 李 30, 赵 10 - 3; 欧阳 -15 (two deductions)."""
    posted(w, w.wang, 30)
    posted(w, w.li, 30)
    posted(w, w.zhao, 10)
    posted(w, w.zhao, 3, TransferKind.DEDUCTION, "乱倒垃圾")
    posted(w, w.ouyang, 10, TransferKind.DEDUCTION, "乱倒垃圾")
    posted(w, w.ouyang, 5, TransferKind.DEDUCTION, "焚烧秸秆")
    db.session.commit()


def this_month() -> str:
    return f"{rankings.this_month():%Y-%m}"


def next_month() -> str:
    month = rankings.this_month()
    following = (month + timedelta(days=32)).replace(day=1)
    return f"{following:%Y-%m}"


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def hidden_fields(page: str) -> dict[str, str]:
    """Return the hidden inputs of the publish form on a preview page."""
    form = re.search(
        r'<form method="post" action="/committee/boards/publish".*?</form>', page, re.S
    )
    assert form, "the preview has no publish form"
    fields = {}
    for tag in re.findall(r"<input[^>]*>", form.group(0)):
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if attributes.get("type") == "hidden":
            fields[attributes["name"]] = attributes.get("value", "")
    return fields


def preview(client, w, **args):
    query = {"village_id": w.village.id, "month": this_month(), "size": 10} | args
    return client.get("/committee/boards/preview", query_string=query)


def board_count() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Board))


def board_url(board) -> str:
    return f"/v/{board.village_id}/boards/{board.id}"


# --- the committee's boards page ----------------------------------------------------------------


def test_the_boards_page_offers_last_month_and_lists_published_boards(w, as_user):
    a_month(w)
    board = boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    db.session.commit()
    page = text(as_user(w.committee).get("/committee/boards"))
    assert "Prepare a monthly board" in page
    last = rankings.this_month() - timedelta(days=1)
    assert f'name="month" value="{last:%Y-%m}"' in page
    assert 'name="size" value="10"' in page
    assert f'href="{board_url(board)}"' in page
    assert f'href="/v/{w.village.id}"' in page  # the village's public page
    assert "绿水村" not in page  # another village's boards are not listed


@pytest.mark.parametrize("who", ["cadre", "villager", "clerk"])
def test_other_roles_cannot_open_the_committee_board_pages(w, as_user, who):
    client = as_user(getattr(w, who))
    assert client.get("/committee/boards").status_code == 403
    assert preview(client, w).status_code == 403
    assert client.post("/committee/boards/publish", data={}).status_code == 403
    assert board_count() == 0


def test_anonymous_users_are_sent_to_log_in(w, client):
    response = client.get("/committee/boards")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- preview and publish ------------------------------------------------------------------------


def test_the_preview_shows_what_would_be_published_with_masked_names(w, as_user):
    a_month(w)
    response = preview(as_user(w.committee), w)
    page = text(response)
    assert response.status_code == 200
    assert "Not published yet" in page
    assert "王建明" in page and "李秀英" in page  # the red list names households
    assert "欧**国" in page and "欧阳建国" not in page  # the improvement list is masked
    assert "masked names (王*明)" in page
    assert 'name="note"' not in page  # a first publication needs no note
    assert hidden_fields(page)["village_id"] == str(w.village.id)


def test_publishing_redirects_to_the_board_and_a_double_tap_publishes_once(w, as_user):
    a_month(w)
    client = as_user(w.committee)
    fields = hidden_fields(text(preview(client, w)))
    first = client.post("/committee/boards/publish", data=fields)
    assert first.status_code == 302
    board = db.session.scalar(sa.select(Board))
    assert first.headers["Location"] == board_url(board)
    assert board.content == boards.monthly_content(w.village, rankings.this_month(), 10)
    assert "Published: the board of" in text(client.get(first.headers["Location"]))

    second = client.post("/committee/boards/publish", data=fields)  # the double tap
    assert second.status_code == 302 and second.headers["Location"] == board_url(board)
    page = text(client.get(second.headers["Location"]))
    assert "already published and nothing has changed" in page
    assert board_count() == 1
    # The preview now says there is nothing to publish, and offers no button.
    page = text(preview(client, w))
    assert "Nothing has changed since" in page
    assert "/committee/boards/publish" not in page


def test_a_post_without_a_preview_is_sent_to_the_preview(w, as_user):
    client = as_user(w.committee)
    response = client.post(
        "/committee/boards/publish",
        data={"village_id": w.village.id, "month": this_month(), "size": "5"},
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/committee/boards/preview?")
    assert board_count() == 0


def test_figures_that_changed_after_the_preview_are_not_published_unseen(w, as_user):
    a_month(w)
    client = as_user(w.committee)
    fields = hidden_fields(text(preview(client, w)))
    posted(w, w.zhao, 40, reason="植树")
    db.session.commit()
    response = client.post("/committee/boards/publish", data=fields)
    assert response.status_code == 409
    page = text(response)
    assert "The figures changed since the preview" in page
    assert board_count() == 0
    # The page shows the new figures, ready to publish.
    assert hidden_fields(page)["digest"] != fields["digest"]
    assert client.post("/committee/boards/publish", data=hidden_fields(page)).status_code == 302
    assert board_count() == 1


def test_a_correction_shows_the_differences_needs_a_note_and_links_both_ways(w, as_user):
    a_month(w)
    first = boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    db.session.commit()
    posted(w, w.zhao, 40, reason="植树")  # 赵 7 → 47: from third to first
    db.session.commit()
    client = as_user(w.committee2)
    page = text(preview(client, w))
    assert "Already published on" in page
    assert "publishes a correction" in page
    changes = re.search(r'id="changes".*?</section>', page, re.S).group(0)
    assert "赵四" in changes and "3 → 1" in changes and "7 → 47" in changes
    assert "王建明" in changes and "1 → 2" in changes
    assert 'name="note"' in page

    fields = hidden_fields(page)
    refused = client.post("/committee/boards/publish", data=fields | {"note": " "})
    assert refused.status_code == 422
    assert "say what the correction changes and why" in text(refused)
    assert board_count() == 1

    done = client.post("/committee/boards/publish", data=fields | {"note": "赵四补记植树40分"})
    assert done.status_code == 302
    second = db.session.scalar(sa.select(Board).where(Board.version == 2))
    assert done.headers["Location"] == board_url(second)
    new_page = text(client.get(board_url(second)))
    published_on = f"{to_local(first.published_at):%Y-%m-%d}"
    assert f"Correction of the board published on {published_on}: 赵四补记植树40分" in new_page
    assert f'href="{board_url(first)}"' in new_page
    old_page = text(client.get(board_url(first)))
    assert "Corrected on" in old_page and f'href="{board_url(second)}"' in old_page
    # The committee's list shows the correction in force, marked as corrected.
    listing = text(client.get("/committee/boards"))
    assert board_url(second) in listing and board_url(first) not in listing
    assert "Corrected" in listing


def test_a_correction_note_longer_than_allowed_is_refused(w, as_user):
    a_month(w)
    boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    posted(w, w.zhao, 40, reason="植树")
    db.session.commit()
    client = as_user(w.committee)
    fields = hidden_fields(text(preview(client, w)))
    response = client.post("/committee/boards/publish", data=fields | {"note": "改" * 301})
    assert response.status_code == 422
    assert board_count() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        ({"month": "2026-13"}, "The month must be a month like 2026-11."),
        ({"month": "november"}, "The month must be a month like 2026-11."),
        ({"month": "1999-12"}, "PointSmart has no records before 2000."),
        ({"size": "0"}, "The list size must be a whole number from 1 to 50."),
        ({"size": "abc"}, "The list size must be a whole number from 1 to 50."),
        ({"size": "51"}, "The list size must be a whole number from 1 to 50."),
        ({"size": "²"}, "The list size must be a whole number from 1 to 50."),
    ],
)
def test_bad_input_gets_a_clear_message(w, as_user, args, message):
    client = as_user(w.committee)
    response = preview(client, w, **args)
    assert response.status_code == 422
    assert message in text(response)
    assert "Prepare a monthly board" in text(response)  # the form again, to fix it
    fields = {"village_id": w.village.id, "month": this_month(), "size": "10"} | args
    posted_ = client.post("/committee/boards/publish", data=fields)
    assert posted_.status_code == 422 and message in text(posted_)
    assert board_count() == 0


def test_a_future_month_gets_a_clear_message(w, as_user):
    response = preview(as_user(w.committee), w, month=next_month())
    assert response.status_code == 422
    assert "This period has not begun yet" in text(response)


def test_defaults_are_the_members_village_last_month_and_ten(w, as_user):
    response = as_user(w.committee).get("/committee/boards/preview")
    assert response.status_code == 200
    fields = hidden_fields(text(response))
    last = rankings.this_month() - timedelta(days=1)
    assert fields["village_id"] == str(w.village.id)
    assert fields["month"] == f"{last:%Y-%m}" and fields["size"] == "10"


def test_a_member_of_two_villages_must_choose_one(w, as_user):
    from pointsmart.services import accounts

    accounts.grant(w.committee, Role.COMMITTEE, w.far)
    db.session.commit()
    response = as_user(w.committee).get("/committee/boards/preview")
    assert response.status_code == 422
    assert "Choose one of your villages." in text(response)


@pytest.mark.parametrize("village_id", ["far", "999999", "99999999999", "abc"])
def test_another_or_no_village_is_not_found(w, as_user, village_id):
    value = str(w.far.id) if village_id == "far" else village_id
    client = as_user(w.committee)
    assert preview(client, w, village_id=value).status_code == 404
    response = client.post(
        "/committee/boards/publish",
        data={"village_id": value, "month": this_month(), "size": "10", "digest": "x"},
    )
    assert response.status_code == 404
    assert board_count() == 0


# --- courtyard results --------------------------------------------------------------------------


def a_round(w, close: bool):
    round_ = ratings.open_round(w.village, title="秋季评比", opener=w.committee)
    rating, _ = ratings.rate(round_, w.wang, inspector=w.cadre, scores=FOUR_STARS)
    ledger.post(rating.transfer, w.committee)
    if close:
        ratings.close_round(round_, w.committee)
    db.session.commit()
    return round_


def test_courtyard_results_are_published_from_a_closed_rounds_page(w, as_user):
    round_ = a_round(w, close=True)
    client = as_user(w.committee)
    page = text(client.get(f"/committee/ratings/{round_.id}"))
    assert f'action="/committee/ratings/{round_.id}/publish"' in page
    response = client.post(f"/committee/ratings/{round_.id}/publish", data={"note": ""})
    assert response.status_code == 302
    board = db.session.scalar(sa.select(Board))
    assert response.headers["Location"] == board_url(board)
    shown = text(client.get(board_url(board)))
    assert "Beautiful courtyards: 秋季评比" in shown and "王建明" in shown and "★★★★" in shown
    again = client.post(f"/committee/ratings/{round_.id}/publish", data={"note": ""})
    assert again.status_code == 302 and again.headers["Location"] == board_url(board)
    assert board_count() == 1


def test_an_open_round_offers_no_publishing_and_refuses_it(w, as_user):
    round_ = a_round(w, close=False)
    client = as_user(w.committee)
    assert "/publish" not in text(client.get(f"/committee/ratings/{round_.id}"))
    response = client.post(f"/committee/ratings/{round_.id}/publish", data={"note": ""})
    assert response.status_code == 302
    assert "Close the rating round before publishing" in text(
        client.get(response.headers["Location"])
    )
    assert board_count() == 0


def test_another_villages_round_is_not_found(w, as_user):
    round_ = a_round(w, close=True)
    assert (
        as_user(w.far_committee).post(f"/committee/ratings/{round_.id}/publish").status_code == 404
    )
    assert board_count() == 0


# --- the village setting ------------------------------------------------------------------------


def settings_form(w, **changes):
    data = {"auto_approve_max": "", "two_approver_min": "", "board_names": "masked"}
    return data | changes


def test_the_settings_page_sets_how_the_improvement_list_names_households(w, as_user):
    client = as_user(w.committee)
    page = text(client.get(f"/committee/villages/{w.village.id}/settings"))
    assert 'value="masked" checked' in page or re.search(r'checked[^>]*value="masked"', page)
    assert "boards published afterwards only" in page
    response = client.post(
        f"/committee/villages/{w.village.id}/settings", data=settings_form(w, board_names="full")
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert w.village.board_names is BoardNames.FULL
    bad = client.post(
        f"/committee/villages/{w.village.id}/settings", data=settings_form(w, board_names="nick")
    )
    assert bad.status_code == 200 and "Not a valid choice" in text(bad)
    db.session.expire_all()
    assert w.village.board_names is BoardNames.FULL


def test_another_villages_settings_are_not_found(w, as_user):
    client = as_user(w.far_committee)
    response = client.post(
        f"/committee/villages/{w.village.id}/settings", data=settings_form(w, board_names="full")
    )
    assert response.status_code == 404
    db.session.expire_all()
    assert w.village.board_names is BoardNames.MASKED


# --- the public pages ---------------------------------------------------------------------------


def test_the_village_page_needs_no_login_and_shows_boards_rules_and_totals(w, as_user):
    today = local_today()
    rules.create(
        rules.RuleData("垃圾分类", Category.WASTE_SORTING, 5, 1, LimitPeriod.DAY),
        w.committee,
        village=w.village,
    )
    rules.create(
        rules.RuleData("乱倒垃圾", Category.SANITATION, -10), w.committee, village=w.village
    )
    rules.create(
        rules.RuleData("明年的细则", Category.OTHER, 3, active_from=today + timedelta(days=400)),
        w.committee,
        village=w.village,
    )
    rules.withdraw(
        rules.create(rules.RuleData("已撤销", Category.OTHER, 2), w.committee, village=w.village),
        w.committee,
    )
    a_month(w)
    ledger.redeem(
        household=w.wang, shop=w.shop, points=12, clerk=w.clerk, key="page-buy", reason="兑换肥皂"
    )
    board = boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    db.session.commit()

    client = as_user(None)
    response = client.get(f"/v/{w.village.id}")
    assert response.status_code == 200
    page = text(response)
    assert "青山村" in page and "青山镇" in page
    assert f'href="{board_url(board)}"' in page
    assert "垃圾分类" in page and "+5" in page and "1 time(s) per day" in page
    assert "乱倒垃圾" in page and "-10" in page
    assert "明年的细则" not in page and "已撤销" not in page
    assert len(re.findall(r'<tr id="total-\d{4}-\d{2}">', page)) == 12
    row = re.search(rf'<tr id="total-{this_month()}">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r'class="num">(-?\d+)<', row) == ["70", "18", "12"]


def test_a_board_page_needs_no_login_and_states_village_period_date_and_tie_rule(w, as_user):
    a_month(w)
    board = boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    db.session.commit()
    page = text(as_user(None).get(board_url(board)))
    assert "青山村" in page
    assert f"Period: {this_month()}" in page
    assert f"Published {to_local(board.published_at):%Y-%m-%d}" in page
    assert "Equal points share a rank" in page
    assert "王建明" in page and "欧**国" in page


def test_unknown_villages_and_other_villages_boards_are_not_found_in_the_users_language(
    w, as_user, client
):
    board = boards.publish_monthly(w.far, rankings.this_month(), w.far_committee)
    db.session.commit()
    # Chinese by default.
    response = client.get("/v/999999")
    assert response.status_code == 404 and "页面或记录不存在" in text(response)
    as_user(None)
    for url in (
        "/v/999999",
        "/v/99999999999",
        f"/v/{w.village.id}/boards/{board.id}",  # a board of another village
        f"/v/{w.village.id}/boards/999999",
        f"/v/{w.village.id}/boards/99999999999",
        "/v/abc",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "There is no such page or record." in text(response), url
    assert client.get(f"/v/{w.far.id}/boards/{board.id}").status_code == 200


def test_public_pages_show_no_phone_or_id_numbers_and_no_unmasked_names(w, as_user):
    a_month(w)
    masked = boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    round_ = a_round(w, close=True)
    courtyard = boards.publish_courtyard(round_, w.committee)
    db.session.commit()
    # The village later chooses full names: the board published masked stays masked.
    boards.set_board_names(w.village, w.committee, BoardNames.FULL)
    db.session.commit()

    client = as_user(None)
    pages = [
        text(client.get(url))
        for url in (f"/v/{w.village.id}", board_url(masked), board_url(courtyard))
    ]
    secrets = ["739X", "4821"]
    secrets += [m.phone for h in (w.wang, w.li, w.zhao, w.ouyang) for m in h.members if m.phone]
    assert "13900009999" in secrets
    for page in pages:
        for secret in secrets:
            assert secret not in page
    assert "欧**国" in pages[1] and "欧阳建国" not in pages[1]

    # A villager, logged in, sees the same board the same way.
    villager_page = text(as_user(w.villager).get(board_url(masked)))
    assert "欧阳建国" not in villager_page


def test_the_villager_home_links_to_the_village_page(w, as_user):
    page = text(as_user(w.villager).get("/me/"))
    assert f'href="/v/{w.village.id}"' in page


def test_a_group_only_board_shows_no_household_column(w, as_user):
    a_month(w)
    boards.set_board_names(w.village, w.committee, BoardNames.GROUP_ONLY)
    board = boards.publish_monthly(w.village, rankings.this_month(), w.committee)
    db.session.commit()
    page = text(as_user(None).get(board_url(board)))
    improvement = re.search(r'class="board-list board-improvement".*?</section>', page, re.S).group(
        0
    )
    assert "欧" not in improvement and "赵" not in improvement
    assert improvement.count("二组") == 2
    assert "the group only" in page
