"""Claims and reports through the pages: villagers submit, cadres verify or reject, history shows."""

from __future__ import annotations

import html
import io
import re

import pytest
import sqlalchemy as sa
from flask_babel import format_datetime, gettext

from pointsmart.extensions import db
from pointsmart.models import (
    Claim,
    Photo,
    Report,
    RuleWarning,
    SubmissionStatus,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import ledger, submissions
from tests.conftest import login
from tests.services.test_submissions import World, png

KEY = re.compile(r'name="key" type="hidden" value="([^"]+)"')
ENTRY = re.compile(r'<li class="entry[^"]*"[^>]*>(.*?)</li>', re.S)


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    with app.app_context(), app.test_request_context():
        return gettext(message, **values)


def shown(app, moment) -> str:
    """Return a time as pages show it (the localtime filter)."""
    with app.app_context(), app.test_request_context():
        return format_datetime(moment, "yyyy-MM-dd HH:mm")


def key_on(page: str) -> str:
    match = KEY.search(page)
    assert match, "no idempotency key on the page"
    return match.group(1)


def counts() -> dict[str, int]:
    return {
        model.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (Claim, Report, Photo, Transfer, RuleWarning)
    }


@pytest.fixture
def w(make, app, tmp_path):
    app.config["PHOTO_FOLDER"] = str(tmp_path / "photos")
    world = World(make)
    db.session.commit()
    return world


def upload(data: bytes, name: str = "photo.png"):
    return (io.BytesIO(data), name)


def post_claim(client, description="我今天打扫了池塘边的小路", uploads=None, key=None, rule="0"):
    key = key or key_on(client.get("/me/claims/new").get_data(as_text=True))
    data = {"description": description, "rule": rule, "key": key}
    data["photos"] = [upload(png())] if uploads is None else uploads
    return client.post("/me/claims/new", data=data, content_type="multipart/form-data")


def post_report(client, what="有人往河里倒垃圾", where="村东桥下", anonymous=False, uploads=None):
    key = key_on(client.get("/me/reports/new").get_data(as_text=True))
    data = {"what": what, "where": where, "key": key}
    if anonymous:
        data["anonymous"] = "y"
    data["photos"] = [upload(png((90, 60, 20)))] if uploads is None else uploads
    return client.post("/me/reports/new", data=data, content_type="multipart/form-data")


def only(model):
    db.session.expire_all()
    rows = db.session.scalars(sa.select(model)).all()
    assert len(rows) == 1, rows
    return rows[0]


# --- villagers ----------------------------------------------------------------------------


def test_the_villager_home_links_to_claims_and_reports(client, login_as, w):
    login_as(w.villager)
    page = client.get("/me/").get_data(as_text=True)
    for path in ("/me/claims/new", "/me/reports/new", "/me/submissions"):
        assert f'href="{path}"' in page


def test_a_villager_claims_with_a_photo_and_sees_it_waiting(app, client, login_as, w):
    login_as(w.villager)
    form = client.get("/me/claims/new")
    assert form.status_code == 200
    page = text(form)
    assert 'enctype="multipart/form-data"' in page
    assert f"{w.sweep.name} (+5)" in page and w.dumping.name not in page  # awards only

    response = post_claim(client, rule=str(w.sweep.id), uploads=[upload(png()), upload(png())])
    assert response.status_code == 302
    assert response.headers["Location"] == "/me/submissions"
    claim = only(Claim)
    assert (claim.household_id, claim.rule_id, len(claim.photos)) == (w.household.id, w.sweep.id, 2)

    listing = text(client.get("/me/submissions"))
    assert claim.description in listing
    assert translated(app, "Waiting for a cadre to check") in listing
    for photo in claim.photos:
        assert f"/photos/{photo.token}/thumb" in listing


def test_a_double_tapped_claim_is_stored_once(client, login_as, w):
    login_as(w.villager)
    key = key_on(client.get("/me/claims/new").get_data(as_text=True))
    assert post_claim(client, key=key).status_code == 302
    assert post_claim(client, key=key).status_code == 302
    assert counts()["Claim"] == 1 and counts()["Photo"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"description": ""}, "Please describe what you did."),
        ({"description": "   "}, "Please describe what you did."),
        ({"uploads": [upload(png())] * 5}, ("At most %(n)s photos per record.", {"n": 4})),
        (
            {"uploads": [upload(b"GIF89a not really", "x.jpg")]},
            "This file is not a photo: only JPEG, PNG or WebP are accepted.",
        ),
    ],
    ids=["empty", "blank", "five-photos", "fake-image"],
)
def test_a_bad_claim_form_says_why_and_stores_nothing(app, client, login_as, w, change, message):
    login_as(w.villager)
    before = counts()
    response = post_claim(client, **change)
    assert response.status_code == 200
    message, values = message if isinstance(message, tuple) else (message, {})
    assert translated(app, message, **values) in text(response)
    assert counts() == before


def test_a_rule_of_another_village_cannot_be_chosen(client, login_as, w):
    login_as(w.villager)
    before = counts()
    response = post_claim(client, rule=str(w.away_rule.id))
    assert response.status_code == 200
    assert counts() == before


def test_a_villager_reports_anonymously_and_sees_the_status(app, client, login_as, w):
    login_as(w.villager)
    page = text(client.get("/me/reports/new"))
    assert 'type="checkbox"' in page and 'name="anonymous"' in page
    assert post_report(client, anonymous=True).status_code == 302
    report = only(Report)
    assert report.anonymous and report.location == "村东桥下"
    listing = text(client.get("/me/submissions"))
    assert report.what in listing and "村东桥下" in listing
    assert translated(app, "Anonymous to other villagers") in listing
    assert translated(app, "Waiting for a cadre to check") in listing


def test_a_report_without_where_says_so(app, client, login_as, w):
    login_as(w.villager)
    response = post_report(client, where="")
    assert translated(app, "Please say where it was.") in text(response)
    assert counts()["Report"] == 0 and counts()["Photo"] == 0


def test_forms_carry_csrf_tokens_that_are_checked(app, client, login_as, w):
    app.config["WTF_CSRF_ENABLED"] = True
    login_as(w.villager)
    page = client.get("/me/claims/new").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    data = {"description": "扫地", "rule": "0", "key": key_on(page)}
    assert client.post("/me/claims/new", data=data).status_code == 400  # no token: refused
    assert counts()["Claim"] == 0
    assert client.post("/me/claims/new", data={**data, "csrf_token": token}).status_code == 302
    assert counts()["Claim"] == 1


# --- cadres -------------------------------------------------------------------------------


def submitted(w, same_photo: bytes | None = None):
    """A claim and an anonymous report of the villager, and a claim from another village."""
    claim = submissions.submit_claim(
        w.villager, "打扫了池塘边", [same_photo or png()], key="c1", rule=w.sweep
    )
    report = submissions.submit_report(
        w.villager, "有人往河里倒垃圾", "村东桥下", [png((5, 5, 5))], anonymous=True, key="r1"
    )
    away = submissions.submit_claim(w.away_villager, "外村的申报", [png()], key="c2")
    db.session.commit()
    return claim, report, away


def test_the_cadre_home_links_to_the_queue(client, login_as, w):
    login_as(w.cadre)
    assert 'href="/cadre/verify/"' in client.get("/cadre/").get_data(as_text=True)


def test_the_queue_shows_the_scopes_submissions_with_photos_and_duplicate_flags(
    app, client, login_as, w
):
    same = png((1, 2, 3))
    earlier = submissions.submit_claim(w.neighbour_villager, "上次的申报", [same], key="c0")
    submissions.reject_claim(earlier, w.cadre, "重复")
    claim, report, away = submitted(w, same_photo=same)

    login_as(w.cadre)
    page = text(client.get("/cadre/verify/"))
    assert f"/cadre/verify/claims/{claim.id}" in page
    assert f"/cadre/verify/reports/{report.id}" in page
    assert f"/cadre/verify/claims/{away.id}" not in page and "外村的申报" not in page
    assert f"/cadre/verify/claims/{earlier.id}" not in page  # already resolved
    assert f"/photos/{claim.photos[0].token}/thumb" in page
    assert page.count(translated(app, "Possible duplicate photo")) == 1

    detail = text(client.get(f"/cadre/verify/claims/{claim.id}"))
    assert (
        translated(
            app,
            "This photo was already submitted on %(date)s with claim #%(n)s.",
            date=shown(app, earlier.photos[0].created_at),
            n=earlier.id,
        )
        in detail
    )
    assert f"/photos/{claim.photos[0].token}" in detail


def test_a_cadre_verifies_a_claim_and_the_villager_follows_it_to_the_history(
    app, client, login_as, w
):
    claim, _report, _away = submitted(w)
    login_as(w.cadre)
    page = text(client.get(f"/cadre/verify/claims/{claim.id}"))
    assert f'<option selected value="{w.sweep.id}">' in page  # the villager's suggestion
    response = client.post(
        f"/cadre/verify/claims/{claim.id}/verify",
        data={"rule": w.sweep.id, "key": key_on(page)},
        follow_redirects=True,
    )
    assert translated(app, "Verified: the award now waits for committee approval.") in text(
        response
    )
    award = only(Transfer)
    assert (award.source_type, award.source_id, award.status) == (
        "claim",
        claim.id,
        TransferStatus.PENDING,
    )

    villager = app.test_client()
    login(villager, w.villager)
    listing = text(villager.get("/me/submissions"))
    assert translated(app, "Checked by a cadre") in listing
    assert translated(app, "Pending approval") in listing

    ledger.post(award, w.committee)
    db.session.commit()
    home = villager.get("/me/").get_data(as_text=True)
    [line] = [e for e in ENTRY.findall(home) if w.sweep.name in e]
    token = claim.photos[0].token
    assert f'href="/photos/{token}"' in line and f'src="/photos/{token}/thumb"' in line
    assert villager.get(f"/photos/{token}/thumb").status_code == 200


def test_verifying_twice_is_refused_with_a_message(app, client, login_as, w):
    claim, _report, _away = submitted(w)
    login_as(w.cadre)
    key = key_on(client.get(f"/cadre/verify/claims/{claim.id}").get_data(as_text=True))
    client.post(f"/cadre/verify/claims/{claim.id}/verify", data={"rule": w.sweep.id, "key": key})
    other = app.test_client()
    login(other, w.cadre2)
    response = other.post(
        f"/cadre/verify/claims/{claim.id}/verify",
        data={"rule": w.sweep.id, "key": "another-key"},
        follow_redirects=True,
    )
    assert translated(app, "This claim has already been verified or rejected.") in text(response)
    assert counts()["Transfer"] == 1


def test_verifying_without_a_rule_or_rejecting_without_a_reason_changes_nothing(
    app, client, login_as, w
):
    claim, report, _away = submitted(w)
    before = counts()
    login_as(w.cadre)
    for url, data, message in (
        (
            f"/cadre/verify/claims/{claim.id}/verify",
            {"key": "k"},
            "Please choose the rule to award.",
        ),
        (
            f"/cadre/verify/claims/{claim.id}/reject",
            {"reason": " "},
            "Please give a reason for rejection.",
        ),
        (
            f"/cadre/verify/reports/{report.id}/verify",
            {"key": "k"},
            "Please choose the reward rule.",
        ),
        (f"/cadre/verify/reports/{report.id}/reject", {}, "Please give a reason for rejection."),
    ):
        response = client.post(url, data=data, follow_redirects=True)
        assert translated(app, message) in text(response), url
    assert counts() == before
    db.session.expire_all()
    assert claim.status is report.status is SubmissionStatus.SUBMITTED


def test_a_rejected_claim_shows_the_reason_to_the_villager(app, client, login_as, w):
    claim, _report, _away = submitted(w)
    login_as(w.cadre)
    response = client.post(
        f"/cadre/verify/claims/{claim.id}/reject",
        data={"reason": "照片里不是你家门口"},
        follow_redirects=True,
    )
    assert translated(app, "Claim rejected; the villager will see your reason.") in text(response)
    villager = app.test_client()
    login(villager, w.villager)
    listing = text(villager.get("/me/submissions"))
    assert translated(app, "Not accepted") in listing
    assert "照片里不是你家门口" in listing
    assert counts()["Transfer"] == 0


def test_another_villages_claim_and_report_are_not_found(app, login_as, client, w):
    _claim, _report, away = submitted(w)
    away_report = submissions.submit_report(w.away_villager, "外村", "外村路口", key="r9")
    db.session.commit()
    before = counts()
    login_as(w.cadre)
    assert client.get(f"/cadre/verify/claims/{away.id}").status_code == 404
    assert client.get(f"/cadre/verify/reports/{away_report.id}").status_code == 404
    for url, data in (
        (f"/cadre/verify/claims/{away.id}/verify", {"rule": w.sweep.id, "key": "k"}),
        (f"/cadre/verify/claims/{away.id}/reject", {"reason": "不属实"}),
        (f"/cadre/verify/reports/{away_report.id}/verify", {"rule": w.reward.id, "key": "k"}),
        (f"/cadre/verify/reports/{away_report.id}/reject", {"reason": "不属实"}),
        ("/cadre/verify/claims/999999/verify", {"rule": w.sweep.id, "key": "k"}),
    ):
        assert client.post(url, data=data).status_code == 404, url
    assert counts() == before
    db.session.expire_all()
    assert away.status is away_report.status is SubmissionStatus.SUBMITTED


def test_a_group_cadre_sees_only_their_groups_submissions(client, login_as, w):
    claim, report, _away = submitted(w)  # the villager lives outside the group cadre's group
    login_as(w.group_cadre)
    page = client.get("/cadre/verify/").get_data(as_text=True)
    assert f"/cadre/verify/claims/{claim.id}" not in page
    assert client.get(f"/cadre/verify/claims/{claim.id}").status_code == 404
    assert client.get(f"/cadre/verify/reports/{report.id}").status_code == 404


def test_a_verified_report_rewards_the_reporter_and_the_offender_never_learns_who(
    app, client, login_as, make, w
):
    make.funded(w.neighbour, 20)
    _claim, report, _away = submitted(w)
    login_as(w.cadre)
    page = text(client.get(f"/cadre/verify/reports/{report.id}"))
    # The verifying cadre sees who reported, marked as anonymous.
    assert w.household.name in page
    assert (
        translated(
            app,
            "Anonymous report: the reporter asked not to be named to other villagers. "
            "Do not tell anyone outside the committee who reported it.",
        )
        in page
    )
    assert w.neighbour.name in page  # offered as the household responsible
    assert f'<option selected value="{w.reward.id}">' in page  # the reporting reward first
    response = client.post(
        f"/cadre/verify/reports/{report.id}/verify",
        data={
            "rule": w.reward.id,
            "offender": w.neighbour.id,
            "deduction_rule": w.dumping.id,
            "key": key_on(page),
        },
    )
    assert response.status_code == 302
    transfers = db.session.scalars(
        sa.select(Transfer).where(Transfer.source_type == "report").order_by(Transfer.id)
    ).all()
    assert [(t.household_id, t.kind, t.amount) for t in transfers] == [
        (w.household.id, TransferKind.AWARD, 3),
        (w.neighbour.id, TransferKind.DEDUCTION, 10),
    ]
    for transfer in transfers:
        ledger.post(transfer, w.committee)
    db.session.commit()

    offender = app.test_client()
    login(offender, w.neighbour_villager)
    home = text(offender.get("/me/"))
    [line] = [e for e in ENTRY.findall(home) if w.dumping.name in e]
    assert f"/photos/{report.photos[0].token}/thumb" in line  # the evidence is shown
    for reporter in (w.household.name, w.villager.display_name, w.household.members[0].name):
        assert reporter not in home
    assert offender.get(f"/photos/{report.photos[0].token}").status_code == 200

    reporter = app.test_client()
    login(reporter, w.villager)
    listing = text(reporter.get("/me/submissions"))
    assert translated(app, "Points: %(points)s", points="+3") in listing
    assert ledger.balance_of(w.household).spendable == 3


def test_a_report_verified_with_an_offender_but_no_deduction_rule_is_refused(
    app, client, login_as, w
):
    _claim, report, _away = submitted(w)
    before = counts()
    login_as(w.cadre)
    response = client.post(
        f"/cadre/verify/reports/{report.id}/verify",
        data={"rule": w.reward.id, "offender": w.neighbour.id, "key": "k"},
        follow_redirects=True,
    )
    assert translated(
        app, "To deduct points, choose both the responsible household and a deduction rule."
    ) in text(response)
    assert counts() == before


def test_a_rejected_report_shows_the_reason(app, client, login_as, w):
    _claim, report, _away = submitted(w)
    login_as(w.cadre)
    client.post(f"/cadre/verify/reports/{report.id}/reject", data={"reason": "现场已清理"})
    villager = app.test_client()
    login(villager, w.villager)
    assert "现场已清理" in text(villager.get("/me/submissions"))
    db.session.expire_all()
    assert db.session.get(Report, report.id).status is SubmissionStatus.REJECTED
