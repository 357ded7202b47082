"""Claims and reports: submitted by villagers, verified or rejected once by a cadre in scope."""

from __future__ import annotations

import io
import threading

import pytest
import sqlalchemy as sa
from flask import request_started
from flask_babel import force_locale
from PIL import Image

from pointsmart import create_app
from pointsmart.committee import evidence_counts
from pointsmart.extensions import db
from pointsmart.models import (
    Category,
    Claim,
    Household,
    LimitPeriod,
    Photo,
    Report,
    Role,
    RuleWarning,
    ScoringRule,
    SubmissionStatus,
    Transfer,
    TransferKind,
    TransferStatus,
    User,
)
from pointsmart.services import ledger, photos, rules, submissions
from pointsmart.services.errors import (
    AlreadyResolved,
    DomainError,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
)
from tests.conftest import _fresh_g, app_config, empty_tables

THREADS = 8


@pytest.fixture
def app(migrated):
    """The usual test app, with a pool that holds every racing thread's connection."""
    options = {"pool_size": THREADS + 5, "max_overflow": 0, "pool_timeout": 60}
    app = create_app(app_config(migrated, SQLALCHEMY_ENGINE_OPTIONS=options))
    with app.app_context(), request_started.connected_to(_fresh_g):
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


def png(color=(10, 120, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, "PNG")
    return out.getvalue()


def english(error: DomainError) -> str:
    with force_locale("en"):
        return str(error.message)


def rule(committee, village, name, points, category=Category.SANITATION, **options):
    data = rules.RuleData(name=name, category=category, points=points, **options)
    return rules.create(data, committee, village=village)


class World:
    """One village with two groups, a reporter, a neighbour, staff and a small catalogue."""

    def __init__(self, make):
        self.village = make.village()
        self.group = make.group(self.village)
        self.other_group = make.group(self.village)
        self.household = make.household(self.group)
        self.neighbour = make.household(self.other_group)
        self.villager = make.villager(self.household)
        self.neighbour_villager = make.villager(self.neighbour)
        self.cadre = make.staff(Role.CADRE, self.village)
        self.cadre2 = make.staff(Role.CADRE, self.village)
        self.group_cadre = make.staff(Role.CADRE, self.other_group)
        self.committee = make.staff(Role.COMMITTEE, self.village)
        self.sweep = rule(self.committee, self.village, "义务保洁", 5)
        self.daily = rule(
            self.committee,
            self.village,
            "门前三包",
            2,
            limit_count=1,
            limit_period=LimitPeriod.DAY,
        )
        self.photo_rule = rule(self.committee, self.village, "植树", 8, photo_required=True)
        self.reward = rule(self.committee, self.village, "举报奖励", 3, Category.REPORTING)
        self.dumping = rule(self.committee, self.village, "乱倒垃圾", -10)
        self.burning = rule(
            self.committee,
            self.village,
            "焚烧秸秆",
            -20,
            limit_count=2,
            limit_period=LimitPeriod.MONTH,
            warning_first=True,
        )
        elsewhere = make.village(self.village.town)
        self.away_household = make.household(make.group(elsewhere))
        self.away_villager = make.villager(self.away_household)
        self.away_cadre = make.staff(Role.CADRE, elsewhere)
        self.away_rule = rule(make.staff(Role.COMMITTEE, elsewhere), elsewhere, "义务保洁", 5)


@pytest.fixture
def w(make, app, tmp_path):
    app.config["PHOTO_FOLDER"] = str(tmp_path / "photos")
    return World(make)


def counts() -> dict[str, int]:
    """Row counts that bad input must leave alone."""
    return {
        model.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (Claim, Report, Photo, Transfer, RuleWarning)
    }


def claim_of(w, description="我今天打扫了池塘边的小路", key="claim-1", photos_=None, **kw):
    uploads = [png()] if photos_ is None else photos_
    return submissions.submit_claim(w.villager, description, uploads, key=key, **kw)


def report_of(w, key="report-1", anonymous=False, uploads=None):
    return submissions.submit_report(
        w.villager,
        "有人往河里倒垃圾",
        "村东桥下",
        [png((90, 60, 20))] if uploads is None else uploads,
        anonymous=anonymous,
        key=key,
    )


def status_of(record) -> SubmissionStatus:
    db.session.expire_all()
    return db.session.get(type(record), record.id).status


# --- the status rule -------------------------------------------------------------------


def test_a_submission_moves_from_submitted_once_and_never_back():
    s = SubmissionStatus
    assert s.SUBMITTED.can_become(s.VERIFIED)
    assert s.SUBMITTED.can_become(s.REJECTED)
    assert not s.SUBMITTED.can_become(s.SUBMITTED)
    for done in (s.VERIFIED, s.REJECTED):
        assert not any(done.can_become(new) for new in s)


# --- submitting a claim -------------------------------------------------------------------


def test_a_villager_claims_for_their_own_household_with_photos(w):
    claim = claim_of(w, photos_=[png(), png((1, 2, 3))], rule=w.sweep)
    db.session.commit()
    assert claim.household_id == w.household.id
    assert claim.member_id == w.villager.member_id
    assert claim.submitted_by_id == w.villager.id
    assert claim.rule_id == w.sweep.id
    assert claim.status is SubmissionStatus.SUBMITTED
    assert len(claim.photos) == 2
    assert all(
        p.village_id == w.village.id and p.uploaded_by_id == w.villager.id for p in claim.photos
    )


def test_a_retried_claim_is_the_same_claim_and_stores_no_more_photos(w):
    first = claim_of(w)
    db.session.commit()
    before = counts()
    again = claim_of(w)
    assert again.id == first.id
    assert counts() == before
    with pytest.raises(IdempotencyConflict):
        claim_of(w, description="别的事")
    db.session.rollback()
    with pytest.raises(IdempotencyConflict):  # another villager reusing a key gets nothing
        submissions.submit_claim(w.neighbour_villager, first.description, key="claim-1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"description": ""}, "Please describe what you did."),
        ({"description": "   \n "}, "Please describe what you did."),
        ({"description": "很" * 501}, "Please keep it to 500 characters or fewer."),
        ({"photos_": [png()] * 5}, "At most 4 photos per record."),
        (
            {"photos_": [png(), b"<html>not a photo</html>"]},
            "This file is not a photo: only JPEG, PNG or WebP are accepted.",
        ),
        ({"key": ""}, "The request has no valid idempotency key."),
        ({"rule": "away"}, "This rule belongs to another village's catalogue."),
        ({"rule": "dumping"}, "Choose a rule that awards points."),
    ],
    ids=[
        "empty",
        "blank",
        "too-long",
        "five-photos",
        "fake-image",
        "no-key",
        "other-village-rule",
        "deduction-rule",
    ],
)
def test_a_bad_claim_says_why_and_stores_nothing(w, kwargs, message):
    if kwargs.get("rule") == "away":
        kwargs["rule"] = w.away_rule
    elif kwargs.get("rule") == "dumping":
        kwargs["rule"] = w.dumping
    db.session.commit()
    before = counts()
    with pytest.raises(InvalidInput) as refused:
        claim_of(w, **kwargs)
    db.session.rollback()
    assert english(refused.value) == message
    assert counts() == before
    assert not any(photos.folder().iterdir())  # no file written either


def test_only_villagers_submit(w):
    with pytest.raises(Forbidden):
        submissions.submit_claim(w.cadre, "打扫", key="k")
    with pytest.raises(Forbidden):
        submissions.submit_report(w.committee, "垃圾", "路口", key="k2")


# --- submitting a report -------------------------------------------------------------------


def test_a_villager_reports_a_violation_optionally_anonymously(w):
    report = report_of(w, anonymous=True)
    db.session.commit()
    assert report.village_id == w.village.id
    assert report.reporter_household_id == w.household.id
    assert report.anonymous is True
    assert report.location == "村东桥下"
    assert len(report.photos) == 1
    assert report_of(w, anonymous=True).id == report.id  # a retry
    with pytest.raises(IdempotencyConflict):
        report_of(w, anonymous=False)


@pytest.mark.parametrize(
    ("what", "where", "message"),
    [
        ("", "桥下", "Please describe what you saw."),
        ("倒垃圾", " ", "Please say where it was."),
        ("倒垃圾", "桥" * 101, "Please keep it to 100 characters or fewer."),
    ],
)
def test_a_bad_report_says_why_and_stores_nothing(w, what, where, message):
    db.session.commit()
    before = counts()
    with pytest.raises(InvalidInput) as refused:
        submissions.submit_report(w.villager, what, where, [png()], key="r")
    db.session.rollback()
    assert english(refused.value) == message
    assert counts() == before


# --- verifying a claim -------------------------------------------------------------------


def test_verifying_a_claim_records_a_pending_award_under_the_rule_with_the_claims_evidence(w):
    claim = claim_of(w)
    db.session.commit()
    submissions.verify_claim(claim, w.cadre, w.sweep, key="v1")
    db.session.commit()

    assert claim.status is SubmissionStatus.VERIFIED
    assert claim.verified_by_id == w.cadre.id and claim.verified_at is not None
    award = claim.transfer
    assert award.status is TransferStatus.PENDING
    assert (award.kind, award.amount, award.rule_id) == (TransferKind.AWARD, 5, w.sweep.id)
    assert (award.source_type, award.source_id) == ("claim", claim.id)
    assert award.recorded_by_id == w.cadre.id
    assert award.member_id == w.villager.member_id
    assert award.note == claim.description
    # The photos stay the claim's; the history finds them through the source.
    assert [p.claim_id for p in claim.photos] == [claim.id]
    assert photos.evidence_for([award]) == {award.id: list(claim.photos)}

    ledger.post(award, w.committee)
    db.session.commit()
    assert ledger.balance_of(w.household).spendable == 5


def test_a_small_verified_claim_is_posted_at_once_where_the_village_auto_approves(w):
    w.village.auto_approve_max = 5
    claim = claim_of(w)
    submissions.verify_claim(claim, w.cadre, w.sweep, key="v1")
    db.session.commit()
    assert claim.transfer.status is TransferStatus.POSTED
    assert ledger.balance_of(w.household).honour == 5


def test_a_photo_rule_accepts_the_claims_photos_and_refuses_a_claim_without(w):
    with_photo = claim_of(w, key="a")
    submissions.verify_claim(with_photo, w.cadre, w.photo_rule, key="v1")
    without = claim_of(w, key="b", photos_=[])
    db.session.commit()
    before = counts()
    with pytest.raises(InvalidInput) as refused:
        submissions.verify_claim(without, w.cadre, w.photo_rule, key="v2")
    db.session.rollback()
    assert english(refused.value) == "This rule needs a photo as evidence."
    assert counts() == before
    assert status_of(without) is SubmissionStatus.SUBMITTED


def test_a_rule_limit_refuses_the_second_claim_of_the_day_and_leaves_it_waiting(w):
    first, second = claim_of(w, key="a"), claim_of(w, key="b")
    submissions.verify_claim(first, w.cadre, w.daily, key="v1")
    db.session.commit()
    before = counts()
    with pytest.raises(InvalidInput) as refused:
        submissions.verify_claim(second, w.cadre, w.daily, key="v2")
    db.session.rollback()
    assert "Limit reached" in english(refused.value)
    assert counts() == before
    assert status_of(second) is SubmissionStatus.SUBMITTED


def test_a_claim_is_verified_once(w):
    claim = claim_of(w)
    submissions.verify_claim(claim, w.cadre, w.sweep, key="v1")
    db.session.commit()
    before = counts()

    # The same cadre's double tap: the same claim back, nothing new.
    assert submissions.verify_claim(claim, w.cadre, w.sweep, key="v1") is claim
    assert counts() == before
    for cadre, key in ((w.cadre2, "v2"), (w.cadre, "v3")):
        with pytest.raises(AlreadyResolved) as refused:
            submissions.verify_claim(claim, cadre, w.sweep, key=key)
        db.session.rollback()
        assert english(refused.value) == "This claim has already been verified or rejected."
    with pytest.raises(AlreadyResolved):
        submissions.reject_claim(claim, w.cadre2, "照片不清楚")
    db.session.rollback()
    assert counts() == before
    assert status_of(claim) is SubmissionStatus.VERIFIED


@pytest.mark.parametrize(
    ("who", "which", "error", "message"),
    [
        ("away_cadre", "sweep", Forbidden, "You are not allowed to do this here."),
        ("group_cadre", "sweep", Forbidden, "You are not allowed to do this here."),
        ("villager", "sweep", Forbidden, "You are not allowed to do this here."),
        ("cadre", "away_rule", InvalidInput, "This rule belongs to another village's catalogue."),
        ("cadre", "dumping", InvalidInput, "Choose a rule that awards points."),
    ],
)
def test_a_claim_out_of_scope_or_under_a_wrong_rule_is_refused(w, who, which, error, message):
    claim = claim_of(w)
    db.session.commit()
    before = counts()
    with pytest.raises(error) as refused:
        submissions.verify_claim(claim, getattr(w, who), getattr(w, which), key="v")
    db.session.rollback()
    assert english(refused.value) == message
    assert counts() == before
    assert status_of(claim) is SubmissionStatus.SUBMITTED


def test_a_withdrawn_rule_cannot_be_used(w):
    claim = claim_of(w)
    rules.withdraw(w.sweep, w.committee)
    with pytest.raises(InvalidInput) as refused:
        submissions.verify_claim(claim, w.cadre, w.sweep, key="v")
    assert english(refused.value) == "This rule is not in force today."


def test_rejecting_needs_a_reason_and_happens_once(w):
    claim = claim_of(w)
    db.session.commit()
    before = counts()
    for reason in ("", "   ", "长" * 201):
        with pytest.raises(InvalidInput):
            submissions.reject_claim(claim, w.cadre, reason)
        db.session.rollback()
    assert status_of(claim) is SubmissionStatus.SUBMITTED

    submissions.reject_claim(claim, w.cadre, "  照片是别人家的  ")
    db.session.commit()
    assert claim.status is SubmissionStatus.REJECTED
    assert claim.reject_reason == "照片是别人家的"
    assert claim.verified_by_id == w.cadre.id
    assert submissions.reject_claim(claim, w.cadre, "照片是别人家的") is claim  # double tap
    with pytest.raises(AlreadyResolved):
        submissions.verify_claim(claim, w.cadre, w.sweep, key="v")
    db.session.rollback()
    with pytest.raises(AlreadyResolved):
        submissions.reject_claim(claim, w.cadre2, "另一个理由")
    db.session.rollback()
    assert counts() == before  # a rejection records no transfer
    assert status_of(claim) is SubmissionStatus.REJECTED


# --- verifying a report --------------------------------------------------------------------


def test_verifying_a_report_rewards_the_reporter_and_deducts_from_the_offender(w):
    report = report_of(w, anonymous=True)
    db.session.commit()
    submissions.verify_report(
        report, w.cadre, w.reward, key="v", offender=w.neighbour, deduction_rule=w.dumping
    )
    db.session.commit()

    assert report.status is SubmissionStatus.VERIFIED
    assert report.offender_household_id == w.neighbour.id
    reward, deduction = report.reward_transfer, report.deduction_transfer
    assert (reward.household_id, reward.kind, reward.amount) == (
        w.household.id,
        TransferKind.AWARD,
        3,
    )
    assert (deduction.household_id, deduction.kind, deduction.amount) == (
        w.neighbour.id,
        TransferKind.DEDUCTION,
        10,
    )
    for transfer in (reward, deduction):
        assert (transfer.source_type, transfer.source_id) == ("report", report.id)
        assert transfer.status is TransferStatus.PENDING
        assert transfer.recorded_by_id == w.cadre.id
    # The offender's record names the cadre, never the reporter.
    assert deduction.member_id is None
    assert w.villager.display_name not in (deduction.note or "")
    assert photos.evidence_for([deduction]) == {deduction.id: list(report.photos)}
    # The approval queue counts the report's photos for both records it gave.
    assert evidence_counts([reward, deduction]) == {reward.id: 1, deduction.id: 1}


def test_a_report_without_an_offender_only_rewards(w):
    report = report_of(w)
    submissions.verify_report(report, w.cadre, w.reward, key="v")
    db.session.commit()
    assert report.reward_transfer.amount == 3
    assert report.deduction_transfer_id is None and report.offender_household_id is None


def test_a_first_offence_under_a_graduated_rule_gives_a_warning(w):
    report = report_of(w)
    submissions.verify_report(
        report, w.cadre, w.reward, key="v", offender=w.neighbour, deduction_rule=w.burning
    )
    db.session.commit()
    assert report.deduction_transfer_id is None
    warning = db.session.scalar(sa.select(RuleWarning))
    assert (warning.household_id, warning.source_type, warning.source_id) == (
        w.neighbour.id,
        "report",
        report.id,
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"deduction_rule": "dumping"},
            InvalidInput,
            "To deduct points, choose both the responsible household and a deduction rule.",
        ),
        (
            {"offender": "neighbour"},
            InvalidInput,
            "To deduct points, choose both the responsible household and a deduction rule.",
        ),
        (
            {"offender": "household", "deduction_rule": "dumping"},
            InvalidInput,
            "The reporter's own household cannot be the one responsible.",
        ),
        (
            {"offender": "away_household", "deduction_rule": "dumping"},
            InvalidInput,
            "The responsible household must be an active household of this village.",
        ),
        (
            {"offender": "neighbour", "deduction_rule": "sweep"},
            InvalidInput,
            "Choose a rule that deducts points.",
        ),
        ({"reward": "dumping"}, InvalidInput, "Choose a rule that awards points."),
        (
            {"reward": "away_rule"},
            InvalidInput,
            "This rule belongs to another village's catalogue.",
        ),
        ({"cadre": "away_cadre"}, Forbidden, "You are not allowed to do this here."),
        ({"cadre": "group_cadre"}, Forbidden, "You are not allowed to do this here."),
    ],
)
def test_a_bad_verification_of_a_report_says_why_and_changes_nothing(w, change, error, message):
    report = report_of(w)
    db.session.commit()
    before = counts()
    with pytest.raises(error) as refused:
        submissions.verify_report(
            report,
            getattr(w, change.get("cadre", "cadre")),
            getattr(w, change.get("reward", "reward")),
            key="v",
            offender=getattr(w, change["offender"]) if "offender" in change else None,
            deduction_rule=getattr(w, change["deduction_rule"])
            if "deduction_rule" in change
            else None,
        )
    db.session.rollback()
    assert english(refused.value) == message
    assert counts() == before
    assert status_of(report) is SubmissionStatus.SUBMITTED


def test_an_offender_outside_the_cadres_groups_is_refused(make, w):
    # A cadre of the reporter's group only: the neighbour lives in another group.
    cadre = make.staff(Role.CADRE, w.group)
    report = report_of(w)
    db.session.commit()
    with pytest.raises(Forbidden) as refused:
        submissions.verify_report(
            report, cadre, w.reward, key="v", offender=w.neighbour, deduction_rule=w.dumping
        )
    assert english(refused.value) == "The responsible household is outside your area."


def test_a_report_is_verified_or_rejected_once(w):
    report = report_of(w)
    submissions.verify_report(report, w.cadre, w.reward, key="v")
    db.session.commit()
    before = counts()
    assert submissions.verify_report(report, w.cadre, w.reward, key="v") is report
    with pytest.raises(AlreadyResolved) as refused:
        submissions.verify_report(report, w.cadre2, w.reward, key="v2")
    db.session.rollback()
    assert english(refused.value) == "This report has already been verified or rejected."
    with pytest.raises(AlreadyResolved):
        submissions.reject_report(report, w.cadre2, "不属实")
    db.session.rollback()
    assert counts() == before

    other = report_of(w, key="report-2")
    with pytest.raises(InvalidInput):
        submissions.reject_report(other, w.cadre, " ")
    submissions.reject_report(other, w.cadre, "现场没有垃圾")
    db.session.commit()
    assert (other.status, other.reject_reason) == (SubmissionStatus.REJECTED, "现场没有垃圾")
    with pytest.raises(AlreadyResolved):
        submissions.verify_report(other, w.cadre, w.reward, key="v3")


# --- queues, history and duplicates ----------------------------------------------------------


def test_the_queues_hold_the_submitted_records_of_the_verifiers_scope(w):
    mine = claim_of(w, key="a")
    neighbours = submissions.submit_claim(w.neighbour_villager, "扫地", key="b")
    done = claim_of(w, key="c")
    submissions.reject_claim(done, w.cadre, "重复")
    away = submissions.submit_claim(w.away_villager, "扫地", key="d")
    report = report_of(w)
    db.session.commit()

    assert [c.id for c in submissions.pending_claims(w.cadre)] == [mine.id, neighbours.id]
    assert [c.id for c in submissions.pending_claims(w.group_cadre)] == [neighbours.id]
    assert [c.id for c in submissions.pending_claims(w.away_cadre)] == [away.id]
    assert [c.id for c in submissions.pending_claims(w.committee)] == [mine.id, neighbours.id]
    assert [r.id for r in submissions.pending_reports(w.cadre)] == [report.id]
    assert submissions.pending_reports(w.group_cadre) == []
    assert submissions.pending_claims(w.villager) == []


def test_a_household_sees_its_own_claims_and_reports_newest_first(w):
    first, second = claim_of(w, key="a"), claim_of(w, key="b")
    report = report_of(w)
    submissions.submit_claim(w.neighbour_villager, "扫地", key="n")
    db.session.commit()
    claims, reports = submissions.of_household(w.household)
    assert [c.id for c in claims] == [second.id, first.id]
    assert [r.id for r in reports] == [report.id]


def test_a_photo_submitted_again_is_flagged_with_where_it_was_seen(w):
    same = png((33, 66, 99))
    first = claim_of(w, key="a", photos_=[same])
    report = report_of(w, uploads=[same])
    again = submissions.submit_claim(w.neighbour_villager, "扫地", [same, png()], key="b")
    elsewhere = submissions.submit_claim(w.away_villager, "扫地", [same], key="c")
    db.session.commit()

    flags = submissions.duplicates(again.photos)
    copied, fresh = again.photos
    assert fresh.id not in flags
    assert [(c.kind, c.number) for c in flags[copied.id]] == [
        ("claim", first.id),
        ("report", report.id),
    ]
    assert flags[copied.id][0].created_at == first.photos[0].created_at
    assert submissions.duplicates(first.photos) == {}
    assert submissions.duplicates(elsewhere.photos) == {}  # another village's copy


# --- races ---------------------------------------------------------------------------------


def race(app, n: int, act) -> list[object]:
    """Run ``act(i)`` in n threads released together, each in its own session; return results."""
    barrier = threading.Barrier(n, timeout=60)
    results: list[object] = [None] * n
    crashes: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with app.app_context():
                db.session().expire_on_commit = False
                loaded = act(i, None)  # load (a stale view is kept on purpose)
                db.session.commit()
                barrier.wait()
                try:
                    results[i] = act(i, loaded)
                    db.session.commit()
                except DomainError as exc:
                    db.session.rollback()
                    results[i] = exc
        except BaseException as exc:
            crashes.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if crashes:
        crashes.sort(key=lambda exc: isinstance(exc, threading.BrokenBarrierError))
        raise crashes[0]
    db.session.expire_all()
    return results


def _cadres(make, village, n):
    return [make.staff(Role.CADRE, village).id for _ in range(n)]


@pytest.mark.concurrency
def test_cadres_verifying_one_claim_at_once_make_one_award(app, make, w):
    claim_id = claim_of(w).id
    cadre_ids = _cadres(make, w.village, THREADS)
    rule_id = w.sweep.id
    db.session.commit()

    def act(i, loaded):
        if loaded is None:
            return (
                db.session.get(Claim, claim_id),
                db.session.get(User, cadre_ids[i]),
                db.session.get(ScoringRule, rule_id),
            )
        claim, cadre, rule_ = loaded
        return submissions.verify_claim(claim, cadre, rule_, key=f"race-{i}")

    results = race(app, THREADS, act)
    winners = [r for r in results if isinstance(r, Claim)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyResolved) for r in results if r not in winners)
    awards = db.session.scalars(sa.select(Transfer)).all()
    assert len(awards) == 1
    claim = db.session.get(Claim, claim_id)
    assert claim.transfer_id == awards[0].id
    assert (awards[0].source_type, awards[0].source_id) == ("claim", claim_id)


@pytest.mark.concurrency
def test_a_double_tap_verifying_a_report_at_once_makes_one_reward_and_one_deduction(app, w):
    report_id = report_of(w).id
    ids = (w.cadre.id, w.reward.id, w.neighbour.id, w.dumping.id)
    db.session.commit()

    def act(i, loaded):
        if loaded is None:
            return (
                db.session.get(Report, report_id),
                db.session.get(User, ids[0]),
                db.session.get(ScoringRule, ids[1]),
                db.session.get(Household, ids[2]),
                db.session.get(ScoringRule, ids[3]),
            )
        report, cadre, reward, offender, dumping = loaded
        return submissions.verify_report(
            report, cadre, reward, key="same-tap", offender=offender, deduction_rule=dumping
        )

    results = race(app, THREADS, act)
    assert all(isinstance(r, Report) for r in results), results  # every tap gets the report
    transfers = db.session.scalars(sa.select(Transfer).order_by(Transfer.id)).all()
    assert [(t.household_id, t.kind) for t in transfers] == [
        (w.household.id, TransferKind.AWARD),
        (w.neighbour.id, TransferKind.DEDUCTION),
    ]


@pytest.mark.concurrency
def test_verifying_and_rejecting_at_once_resolve_the_claim_one_way(app, make, w):
    claim_id = claim_of(w).id
    cadre_ids = _cadres(make, w.village, THREADS)
    rule_id = w.sweep.id
    db.session.commit()

    def act(i, loaded):
        if loaded is None:
            return db.session.get(Claim, claim_id), db.session.get(User, cadre_ids[i])
        claim, cadre = loaded
        if i % 2:
            return submissions.reject_claim(claim, cadre, "不属实")
        return submissions.verify_claim(
            claim, cadre, db.session.get(ScoringRule, rule_id), key=f"k{i}"
        )

    results = race(app, THREADS, act)
    assert sum(isinstance(r, Claim) for r in results) == 1
    claim = db.session.get(Claim, claim_id)
    transfers = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer))
    if claim.status is SubmissionStatus.VERIFIED:
        assert transfers == 1 and claim.reject_reason is None
    else:
        assert claim.status is SubmissionStatus.REJECTED and transfers == 0
