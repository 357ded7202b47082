"""The committee's approval queue over HTTP: rows, filters, single and bulk actions, record history."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import gettext

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    Approval,
    Category,
    Photo,
    Role,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import ledger, places, rules
from pointsmart.services.rules import RuleData
from pointsmart.timeutil import to_local, utcnow

ROW = re.compile(r'<li class="entry" id="transfer-(\d+)">(.*?)</li>', re.S)


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    with app.test_request_context():
        return gettext(message, **values)


def rows(page: str) -> dict[int, str]:
    """Return the queue's rows by transfer id."""
    return {int(i): body for i, body in ROW.findall(page)}


def local(moment) -> str:
    return to_local(moment).strftime("%Y-%m-%d %H:%M")


def snapshot():
    return (
        db.session.execute(
            sa.select(Transfer.id, Transfer.status, Transfer.void_reason).order_by(Transfer.id)
        ).all(),
        db.session.execute(sa.select(Approval.transfer_id, Approval.user_id)).all(),
        db.session.execute(sa.select(Account.id, Account.balance).order_by(Account.id)).all(),
    )


@pytest.fixture
def q(make):
    """A village with two groups, a rule revised once, pending records; a neighbour village."""
    village = make.village(name="青山村")
    east, west = make.group(village, "东组"), make.group(village, "西组")
    q = SimpleNamespace(village=village, east=east, west=west)
    q.zhang = places.create_household(east, "E-101", "张建国")
    q.xiaoming = places.add_member(q.zhang, "张小明")
    q.wang = places.create_household(west, "W-201", "王桂兰")
    q.li = make.staff(Role.CADRE, village)
    q.li.display_name = "李网格"
    q.zhao = make.staff(Role.CADRE, village)
    q.zhao.display_name = "赵网格"
    q.me = make.staff(Role.COMMITTEE, village)
    q.me.display_name = "王主任"
    q.second = make.staff(Role.COMMITTEE, village)
    q.second.display_name = "陈委员"
    q.third = make.staff(Role.COMMITTEE, village)
    q.sorting_v1 = rules.create(
        RuleData("垃圾分类合格", Category.WASTE_SORTING, 5), q.me, village=village
    )
    q.old = record(q, q.zhang, q.sorting_v1, q.li, note="上周的")
    q.sorting = rules.revise(
        q.sorting_v1, RuleData("垃圾分类合格", Category.WASTE_SORTING, 6), q.me
    )
    q.tree = rules.create(RuleData("植树造林", Category.TREE_PLANTING, 40), q.me, village=village)
    q.sort_zhang = record(q, q.zhang, q.sorting, q.li, member=q.xiaoming, note="分得很干净")
    q.tree_wang = record(q, q.wang, q.tree, q.zhao)
    q.mine = ledger.record(
        kind=TransferKind.AWARD,
        household=q.wang,
        points=3,
        reason="我自己记的",
        recorded_by=q.me,
        key="mine",
    )
    for n in range(2):
        db.session.add(
            Photo(
                village_id=village.id,
                sha256=f"{n:064d}",
                width=10,
                height=10,
                size_bytes=100,
                uploaded_by_id=q.li.id,
                transfer_id=q.sort_zhang.id,
            )
        )
    # The old record was made ten days ago.
    db.session.execute(
        sa.update(Transfer)
        .where(Transfer.id == q.old.id)
        .values(created_at=utcnow() - timedelta(days=10))
    )
    neighbour = make.village(village.town, name="柳溪村")
    q.neighbour_group = make.group(neighbour, "外组")
    q.neighbour_rule = rules.create(
        RuleData("外村细则", Category.OTHER, 5),
        make.staff(Role.COMMITTEE, neighbour),
        village=neighbour,
    )
    q.theirs = record(
        q,
        make.household(q.neighbour_group, "刘德胜"),
        q.neighbour_rule,
        make.staff(Role.CADRE, neighbour),
    )
    db.session.commit()
    return q


_n = iter(range(1, 10_000))


def record(q, household, rule, recorder, **extra) -> Transfer:
    return ledger.record(
        kind=TransferKind.DEDUCTION if rule.is_deduction else TransferKind.AWARD,
        household=household,
        points=abs(rule.points),
        reason=rule.name,
        category=rule.category,
        recorded_by=recorder,
        key=f"queue-{next(_n)}",
        rule=rule,
        **extra,
    )


def status(transfer) -> TransferStatus:
    db.session.expire_all()
    return db.session.get(Transfer, transfer.id).status


def approvers(transfer) -> list[int]:
    return list(
        db.session.scalars(
            sa.select(Approval.user_id)
            .where(Approval.transfer_id == transfer.id)
            .order_by(Approval.id)
        )
    )


def two_approvers_above(q, points: int) -> None:
    q.village.two_approver_min = points
    db.session.commit()


# --- the queue --------------------------------------------------------------------------------


def test_each_row_tells_who_what_when_and_with_what_evidence(app, client, login_as, q):
    login_as(q.me)
    page = text(client.get("/committee/"))

    listed = rows(page)
    assert set(listed) == {q.old.id, q.sort_zhang.id, q.tree_wang.id, q.mine.id}
    assert "外村细则" not in page and "刘德胜" not in page
    row = listed[q.sort_zhang.id]
    for part in (
        "张建国",
        "东组",
        "E-101",
        "垃圾分类合格",
        "+6",
        "张小明",
        "李网格",
        local(q.sort_zhang.created_at),
        "分得很干净",
        translated(app, "Photos: %(n)s", n=2),
        translated(app, "rule version %(version)s", version=2),
    ):
        assert part in row, part
    assert translated(app, "Photos: %(n)s", n=0) in listed[q.tree_wang.id]
    assert translated(app, "rule version %(version)s", version=1) in listed[q.old.id]
    # Oldest first.
    assert list(listed) == [q.old.id, q.sort_zhang.id, q.tree_wang.id, q.mine.id]
    # The recorder sees no approve button on their own record, but may reject it.
    assert f'action="/committee/transfers/{q.mine.id}/approve"' not in page
    assert f'action="/committee/transfers/{q.mine.id}/reject"' in page
    assert translated(app, "Recorded by you") in listed[q.mine.id]
    assert f'action="/committee/transfers/{q.tree_wang.id}/approve"' in page


def test_a_two_approver_row_shows_progress_and_hides_a_second_tap(app, client, login_as, q):
    two_approvers_above(q, 30)
    login_as(q.me)
    progress0 = translated(app, "%(given)s of %(needed)s approvals", given=0, needed=2)
    assert progress0 in rows(text(client.get("/committee/")))[q.tree_wang.id]

    response = client.post(f"/committee/transfers/{q.tree_wang.id}/approve", follow_redirects=True)
    page = text(response)
    assert (
        translated(
            app,
            "Your approval is recorded: %(reason)s for %(household)s still needs a second committee member.",
            reason="植树造林",
            household="王桂兰",
        )
        in page
    )
    assert status(q.tree_wang) is TransferStatus.PENDING
    row = rows(page)[q.tree_wang.id]
    assert translated(app, "%(given)s of %(needed)s approvals", given=1, needed=2) in row
    assert translated(app, "you approved") in row
    assert f'action="/committee/transfers/{q.tree_wang.id}/approve"' not in row
    # Records at or below the threshold need one approver: no progress shown.
    assert "of 2" not in rows(page)[q.sort_zhang.id]

    login_as(q.second)
    row = rows(text(client.get("/committee/")))[q.tree_wang.id]
    assert translated(app, "%(given)s of %(needed)s approvals", given=1, needed=2) in row
    assert translated(app, "you approved") not in row
    response = client.post(f"/committee/transfers/{q.tree_wang.id}/approve", follow_redirects=True)
    assert translated(
        app, "Approved: %(reason)s for %(household)s.", reason="植树造林", household="王桂兰"
    ) in text(response)
    assert status(q.tree_wang) is TransferStatus.POSTED
    assert approvers(q.tree_wang) == [q.me.id, q.second.id]
    assert ledger.balance_of(q.wang) == ledger.Balance(40, 40)


# --- filters ----------------------------------------------------------------------------------


def listed(client, **query) -> set[int]:
    response = client.get("/committee/", query_string=query)
    assert response.status_code == 200
    return set(rows(text(response)))


def test_filters_by_group_rule_recorder_and_dates(client, login_as, q):
    login_as(q.me)
    everything = {q.old.id, q.sort_zhang.id, q.tree_wang.id, q.mine.id}
    assert listed(client) == everything
    assert listed(client, group=q.east.id) == {q.old.id, q.sort_zhang.id}
    assert listed(client, group=q.west.id) == {q.tree_wang.id, q.mine.id}
    # A rule matches every version of it.
    assert listed(client, rule=q.sorting.id) == {q.old.id, q.sort_zhang.id}
    assert listed(client, rule=q.sorting_v1.id) == {q.old.id, q.sort_zhang.id}
    assert listed(client, rule=q.tree.id) == {q.tree_wang.id}
    assert listed(client, recorder=q.zhao.id) == {q.tree_wang.id}
    assert listed(client, recorder=q.me.id) == {q.mine.id}
    today = to_local(utcnow()).date()
    assert listed(client, **{"from": today.isoformat()}) == everything - {q.old.id}
    assert listed(client, to=(today - timedelta(days=5)).isoformat()) == {q.old.id}
    ten_days_ago = (today - timedelta(days=10)).isoformat()
    assert listed(client, **{"from": ten_days_ago, "to": ten_days_ago}) == {q.old.id}
    assert listed(client, group=q.east.id, recorder=q.li.id, **{"from": today.isoformat()}) == {
        q.sort_zhang.id
    }
    assert listed(client, group=q.west.id, rule=q.sorting.id) == set()


def test_the_filter_form_keeps_the_choice_and_offers_only_our_villages(client, login_as, q):
    login_as(q.me)
    page = text(client.get("/committee/", query_string={"group": q.west.id}))
    assert f'<option value="{q.west.id}" selected>' in page
    assert "外组" not in page and "外村细则" not in page
    assert f'<option value="{q.zhao.id}"' in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"group": "abc"}, "There is no such group in your villages; filter ignored."),
        ({"group": "99999999999"}, "There is no such group in your villages; filter ignored."),
        ("neighbour_group", "There is no such group in your villages; filter ignored."),
        ({"rule": "999999"}, "There is no such rule in your villages; filter ignored."),
        ("neighbour_rule", "There is no such rule in your villages; filter ignored."),
        (
            {"recorder": "999999"},
            "Nobody by that id recorded anything in your villages; filter ignored.",
        ),
        (
            {"from": "2026-13-01"},
            "Dates must be written like 2026-05-01; that date filter was ignored.",
        ),
        (
            {"from": "2026-05-02", "to": "2026-05-01"},
            "The end date is before the start date; the dates were ignored.",
        ),
    ],
)
def test_a_bad_filter_is_named_and_ignored(app, client, login_as, q, query, message):
    if query == "neighbour_group":
        query = {"group": q.neighbour_group.id}
    elif query == "neighbour_rule":
        query = {"rule": q.neighbour_rule.id}
    login_as(q.me)
    response = client.get("/committee/", query_string=query)
    assert response.status_code == 200
    page = text(response)
    assert translated(app, message) in page
    assert set(rows(page)) == {q.old.id, q.sort_zhang.id, q.tree_wang.id, q.mine.id}


# --- single actions ---------------------------------------------------------------------------


def test_approving_an_already_rejected_record_says_so_and_changes_nothing(app, client, login_as, q):
    login_as(q.second)
    client.post(f"/committee/transfers/{q.tree_wang.id}/reject", data={"reason": "照片看不清"})
    assert status(q.tree_wang) is TransferStatus.VOIDED
    before = snapshot()

    login_as(q.me)
    response = client.post(f"/committee/transfers/{q.tree_wang.id}/approve", follow_redirects=True)

    assert response.status_code == 200
    assert translated(app, "This record has already been rejected; nothing was changed.") in text(
        response
    )
    assert snapshot() == before


def test_an_action_returns_to_the_page_it_came_from_inside_the_committee_pages(client, login_as, q):
    login_as(q.me)
    detail = f"/committee/transfers/{q.tree_wang.id}"
    response = client.post(f"{detail}/approve", data={"next": detail})
    assert response.headers["Location"] == detail
    response = client.post(
        f"/committee/transfers/{q.sort_zhang.id}/approve", data={"next": "https://evil.example/"}
    )
    assert response.headers["Location"] == "/committee/"
    response = client.post(
        f"/committee/transfers/{q.old.id}/approve", data={"next": "/committee//evil.example"}
    )
    assert response.headers["Location"] == "/committee/"


def test_a_huge_record_id_is_not_found(client, login_as, q):
    login_as(q.me)
    assert client.get("/committee/transfers/99999999999").status_code == 404
    assert client.post("/committee/transfers/99999999999/approve").status_code == 404


# --- bulk -------------------------------------------------------------------------------------


def bulk(client, ids, action="approve", **data):
    return client.post(
        "/committee/transfers/bulk",
        data={"transfer_id": [str(i) for i in ids], "action": action, **data},
        follow_redirects=True,
    )


def test_bulk_approval_posts_every_ticked_record(app, client, login_as, q):
    login_as(q.me)
    response = bulk(client, [q.sort_zhang.id, q.tree_wang.id, q.old.id])
    assert response.status_code == 200
    assert translated(app, "Approved %(n)s record(s).", n=3) in text(response)
    for transfer in (q.sort_zhang, q.tree_wang, q.old):
        assert status(transfer) is TransferStatus.POSTED
        assert db.session.get(Transfer, transfer.id).approved_by_id == q.me.id
    assert ledger.balance_of(q.zhang) == ledger.Balance(11, 11)
    assert ledger.balance_of(q.wang) == ledger.Balance(40, 40)
    assert set(rows(text(client.get("/committee/")))) == {q.mine.id}


def test_bulk_approval_counts_records_that_still_need_a_second_member(app, client, login_as, q):
    two_approvers_above(q, 30)
    login_as(q.me)
    page = text(bulk(client, [q.sort_zhang.id, q.tree_wang.id]))
    assert (
        translated(app, "Approved %(n)s record(s).", n=2)
        + " "
        + translated(app, "%(n)s of them still need a second committee member.", n=1)
        in page
    )
    assert status(q.sort_zhang) is TransferStatus.POSTED
    assert status(q.tree_wang) is TransferStatus.PENDING
    assert approvers(q.tree_wang) == [q.me.id]


def describe(transfer) -> str:
    points = transfer.signed_points
    sign = "+" if points > 0 else ""
    return f"#{transfer.id} {transfer.household.name} · {transfer.reason} {sign}{points}"


def test_bulk_is_all_or_nothing_and_names_the_record_it_refused(app, client, login_as, q):
    login_as(q.me)
    before = snapshot()

    # The own record sits between two others: the first one's approval is undone too.
    response = bulk(client, [q.sort_zhang.id, q.mine.id, q.tree_wang.id])

    assert response.status_code == 200
    page = text(response)
    assert (
        translated(
            app,
            "Nothing was changed. %(item)s: %(error)s",
            item=describe(q.mine),
            error=translated(
                app, "You recorded this yourself; another committee member must approve it."
            ),
        )
        in page
    )
    assert snapshot() == before


def test_bulk_with_an_already_rejected_record_changes_nothing(app, client, login_as, q):
    login_as(q.second)
    client.post(f"/committee/transfers/{q.tree_wang.id}/reject", data={"reason": "重复"})
    login_as(q.me)
    before = snapshot()
    page = text(bulk(client, [q.sort_zhang.id, q.tree_wang.id]))
    assert describe(q.tree_wang) in page
    assert translated(app, "This record has already been rejected; nothing was changed.") in page
    assert snapshot() == before


def test_bulk_rejection_needs_a_reason_and_then_rejects_all(app, client, login_as, q):
    login_as(q.me)
    before = snapshot()
    for reason in ("", "   "):
        page = text(bulk(client, [q.sort_zhang.id, q.mine.id], "reject", reason=reason))
        assert translated(app, "Please give a reason for rejection.") in page
        assert snapshot() == before

    page = text(bulk(client, [q.sort_zhang.id, q.mine.id], "reject", reason="重复记录"))
    assert translated(app, "Rejected %(n)s record(s).", n=2) in page
    for transfer in (q.sort_zhang, q.mine):
        stored = db.session.get(Transfer, transfer.id)
        assert (stored.status, stored.void_reason, stored.voided_by_id) == (
            TransferStatus.VOIDED,
            "重复记录",
            q.me.id,
        )
    assert status(q.tree_wang) is TransferStatus.PENDING


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "approve"}, "Please tick at least one record."),
        ({"transfer_id": "1"}, "Please choose to approve or to reject the ticked records."),
        (
            {"transfer_id": "1", "action": "delete"},
            "Please choose to approve or to reject the ticked records.",
        ),
    ],
)
def test_bulk_without_records_or_action_is_refused(app, client, login_as, q, data, message):
    login_as(q.me)
    before = snapshot()
    response = client.post("/committee/transfers/bulk", data=data, follow_redirects=True)
    assert translated(app, message) in text(response)
    assert snapshot() == before


def test_bulk_with_another_villages_or_a_bogus_id_is_not_found(client, login_as, q):
    login_as(q.me)
    before = snapshot()
    for bad in (q.theirs.id, "abc", "99999999999", q.theirs.id + 1000):
        response = client.post(
            "/committee/transfers/bulk",
            data={"transfer_id": [str(q.sort_zhang.id), str(bad)], "action": "approve"},
        )
        assert response.status_code == 404
    assert snapshot() == before


def test_a_cadre_cannot_use_bulk(make, client, login_as, q):
    login_as(q.li)
    response = client.post(
        "/committee/transfers/bulk", data={"transfer_id": str(q.tree_wang.id), "action": "approve"}
    )
    assert response.status_code == 403
    assert status(q.tree_wang) is TransferStatus.PENDING


# --- a record's history -----------------------------------------------------------------------


def test_the_history_shows_recorder_approvers_rule_version_and_photos(app, client, login_as, q):
    two_approvers_above(q, 5)
    ledger.post(q.sort_zhang, q.me)
    ledger.post(q.sort_zhang, q.second)
    db.session.commit()
    transfer = db.session.get(Transfer, q.sort_zhang.id)
    first, second = transfer.approvals
    login_as(q.third)

    page = text(client.get(f"/committee/transfers/{transfer.id}"))

    history = re.search(r'<ol class="timeline" id="history">(.*?)</ol>', page, re.S).group(1)
    steps = [s.strip() for s in re.findall(r"<li[^>]*>(.*?)</li>", history, re.S)]
    assert steps == [
        translated(app, "Recorded by %(name)s", name="李网格") + " · " + local(transfer.created_at),
        translated(app, "Approved by %(name)s", name="王主任") + " · " + local(first.created_at),
        translated(app, "Approved by %(name)s", name="陈委员") + " · " + local(second.created_at),
        translated(app, "Posted: the points moved, approved by %(name)s", name="陈委员")
        + " · "
        + local(transfer.posted_at),
    ]
    rule = re.search(r'<dd id="rule">(.*?)</dd>', page, re.S).group(1)
    assert "垃圾分类合格" in rule
    assert translated(app, "version %(version)s", version=2) in rule
    assert translated(app, "%(points)s points in that version", points="+6") in rule
    assert f'href="/committee/rules/{q.sorting.id}"' in rule
    assert "张小明" in page and "分得很干净" in page
    assert translated(app, "Evidence photos: %(n)s", n=2) in page
    for photo in db.session.scalars(sa.select(Photo).where(Photo.transfer_id == transfer.id)):
        assert f'<a href="/photos/{photo.token}"><img src="/photos/{photo.token}/thumb"' in page
    assert "/approve" not in page  # posted: nothing left to do


def test_the_history_of_a_rejected_and_of_an_automatic_record(app, client, login_as, q):
    ledger.void(q.tree_wang, q.second, "照片看不清")
    automatic = record(q, q.wang, q.sorting, q.li)
    ledger.auto_post(automatic)
    db.session.commit()
    login_as(q.me)

    page = text(client.get(f"/committee/transfers/{q.tree_wang.id}"))
    voided = db.session.get(Transfer, q.tree_wang.id)
    assert (
        translated(app, "Rejected by %(name)s", name="陈委员")
        + " · "
        + local(voided.voided_at)
        + " · "
        + translated(app, "Reason: %(reason)s", reason="照片看不清")
        in page
    )
    assert translated(app, "No photos.") in page

    page = text(client.get(f"/committee/transfers/{automatic.id}"))
    assert translated(app, "Posted automatically under the village approval settings") in page


def test_a_pending_record_page_offers_the_actions_the_member_may_take(app, client, login_as, q):
    login_as(q.me)
    page = text(client.get(f"/committee/transfers/{q.tree_wang.id}"))
    assert f'action="/committee/transfers/{q.tree_wang.id}/approve"' in page
    assert f'action="/committee/transfers/{q.tree_wang.id}/reject"' in page
    assert (
        translated(app, "Waiting for approval: %(given)s of %(needed)s", given=0, needed=1) in page
    )

    page = text(client.get(f"/committee/transfers/{q.mine.id}"))
    assert f'action="/committee/transfers/{q.mine.id}/approve"' not in page
    assert translated(app, "Recorded by you: another committee member must approve it.") in page


def test_another_villages_record_is_not_found(client, login_as, q):
    login_as(q.me)
    assert client.get(f"/committee/transfers/{q.theirs.id}").status_code == 404


def test_a_forged_approval_of_ones_own_record_is_refused(app, client, login_as, q):
    login_as(q.me)
    before = snapshot()
    response = client.post(f"/committee/transfers/{q.mine.id}/approve", follow_redirects=True)
    assert translated(
        app, "You recorded this yourself; another committee member must approve it."
    ) in text(response)
    assert snapshot() == before
