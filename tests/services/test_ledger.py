"""The ledger service: who may move points, when, how often, and what a refusal leaves behind."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import Account, AccountKind, Entry, Role, Transfer, TransferKind
from pointsmart.models import TransferStatus as Status
from pointsmart.services import ledger, places
from pointsmart.services.errors import (
    AlreadyResolved,
    Forbidden,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
    NotReversible,
    SelfApproval,
)

AWARD, DEDUCTION = TransferKind.AWARD, TransferKind.DEDUCTION


@pytest.fixture(autouse=True)
def books_stay_clean(app):
    """Whatever a test did or was refused, the books recompute to the stored balances."""
    yield
    db.session.rollback()
    assert ledger.check() == ([], [])


@pytest.fixture
def world(make):
    """Two villages of one town, each with households, staff and a shop; committed."""
    town = make.town()
    village = make.village(town)
    household = make.household(make.group(village))
    places.add_member(household, "王小明")
    elsewhere = make.village(town)
    w = SimpleNamespace(
        town=town,
        village=village,
        household=household,
        neighbour=make.household(household.group),
        cadre=make.staff(Role.CADRE, village),
        committee=make.staff(Role.COMMITTEE, village),
        committee2=make.staff(Role.COMMITTEE, village),
        shop=make.shop(village),
        elsewhere=elsewhere,
        far_household=make.household(make.group(elsewhere)),
        far_cadre=make.staff(Role.CADRE, elsewhere),
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
        far_shop=make.shop(elsewhere),
    )
    w.clerk = make.staff(Role.CLERK, w.shop)
    w.far_clerk = make.staff(Role.CLERK, w.far_shop)
    w.villager = make.villager(household)
    db.session.commit()
    return w


_keys = itertools.count(1)


def key() -> str:
    return f"k-{next(_keys)}"


def award(w, points=10, *, kind=AWARD, by=None, household=None, **extra) -> Transfer:
    return ledger.record(
        kind=kind,
        household=household or w.household,
        points=points,
        recorded_by=by or w.cadre,
        key=extra.pop("key", None) or key(),
        reason=extra.pop("reason", "打扫公共区域"),
        **extra,
    )


def posted(w, points=10, *, kind=AWARD, household=None) -> Transfer:
    transfer = ledger.post(award(w, points, kind=kind, household=household), w.committee)
    db.session.commit()
    return transfer


def redeem(w, points=10, *, clerk=None, shop=None, household=None, **extra) -> Transfer:
    return ledger.redeem(
        household=household or w.household,
        shop=shop or w.shop,
        points=points,
        clerk=clerk or w.clerk,
        key=extra.pop("key", None) or key(),
        reason=extra.pop("reason", "兑换洗衣粉"),
        **extra,
    )


def spendable(household) -> int:
    return ledger.balance_of(household).spendable


def honour(household) -> int:
    return ledger.balance_of(household).honour


def snapshot():
    """Everything a refused call must leave as it was: rows, statuses and balances."""
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(Entry)),
        dict(db.session.execute(sa.select(Transfer.id, Transfer.status)).all()),
        dict(db.session.execute(sa.select(Account.id, Account.balance)).all()),
    )


@contextmanager
def refused(error):
    """Expect ``error``; after the caller rolls back, nothing may have changed."""
    db.session.commit()
    before = snapshot()
    with pytest.raises(error) as info:
        yield info
    db.session.rollback()
    assert snapshot() == before


# --- awards and deductions -------------------------------------------------------------


def test_pending_award_changes_no_balance(world):
    transfer = award(world, 10)
    db.session.commit()

    assert transfer.status is Status.PENDING
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=0, honour=0)


def test_posting_an_award_raises_spendable_and_honour(world):
    transfer = ledger.post(award(world, 10), world.committee)
    db.session.commit()

    assert transfer.status is Status.POSTED
    assert transfer.approved_by_id == world.committee.id
    assert transfer.posted_at is not None
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=10, honour=10)
    assert spendable(world.neighbour) == 0


def test_posting_a_deduction_lowers_spendable_and_honour(world):
    posted(world, 30)
    posted(world, 12, kind=DEDUCTION)

    assert ledger.balance_of(world.household) == ledger.Balance(spendable=18, honour=18)


def test_recorder_cannot_approve_own_record(world):
    transfer = award(world, 10, by=world.committee)
    with refused(SelfApproval):
        ledger.post(transfer, world.committee)

    ledger.post(transfer, world.committee2)
    db.session.commit()
    assert spendable(world.household) == 10


@pytest.mark.parametrize("who", ["cadre", "clerk", "villager", "far_committee"])
def test_only_a_committee_member_of_the_village_may_post_or_void(world, who):
    transfer = award(world, 10)
    actor = getattr(world, who)
    with refused(Forbidden):
        ledger.post(transfer, actor)
    with refused(Forbidden):
        ledger.void(transfer, actor, "不合格")
    assert transfer.status is Status.PENDING


@pytest.mark.parametrize("who", ["far_cadre", "far_committee", "clerk", "villager"])
def test_only_recorders_covering_the_household_may_record(world, who):
    with refused(Forbidden):
        award(world, 10, by=getattr(world, who))


def test_cadre_records_only_in_own_village(world):
    far = award(world, 5, by=world.far_cadre, household=world.far_household)
    db.session.commit()
    assert far.village_id == world.elsewhere.id
    with refused(Forbidden):
        award(world, 5, by=world.far_cadre)


def test_clerk_of_another_shop_cannot_redeem(world):
    posted(world, 50)
    with refused(Forbidden):
        redeem(world, 10, clerk=world.far_clerk)


def test_shop_of_another_village_cannot_redeem(world):
    posted(world, 50)
    # The far clerk is a real clerk of the far shop, which does not serve this village.
    with refused(Forbidden):
        redeem(world, 10, clerk=world.far_clerk, shop=world.far_shop)


def test_town_shop_serves_every_village_of_its_town(make, world):
    town_shop = make.shop(town=world.town)
    clerk = make.staff(Role.CLERK, town_shop)
    posted(world, 50)

    redeem(world, 10, clerk=clerk, shop=town_shop)
    db.session.commit()
    assert spendable(world.household) == 40


# --- at most once ------------------------------------------------------------------------


def test_posting_twice_by_the_same_approver_returns_the_same_transfer(world):
    transfer = award(world, 10)
    first = ledger.post(transfer, world.committee)
    db.session.commit()
    second = ledger.post(transfer, world.committee)
    db.session.commit()

    assert second.id == first.id
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=10, honour=10)


def test_another_approver_after_posting_is_refused(world):
    transfer = posted(world, 10)
    with refused(AlreadyResolved):
        ledger.post(transfer, world.committee2)
    assert transfer.approved_by_id == world.committee.id


def test_a_voided_record_cannot_be_posted(world):
    transfer = award(world, 10)
    ledger.void(transfer, world.committee, "照片看不清")
    db.session.commit()
    assert transfer.status is Status.VOIDED
    assert transfer.void_reason == "照片看不清"

    with refused(AlreadyResolved):
        ledger.post(transfer, world.committee2)
    assert spendable(world.household) == 0
    # Voiding again by the same person is a harmless double tap.
    assert ledger.void(transfer, world.committee, "照片看不清").id == transfer.id


def test_a_posted_record_cannot_be_voided(world):
    transfer = posted(world, 10)
    with refused(AlreadyResolved):
        ledger.void(transfer, world.committee2, "弄错了")


@pytest.mark.parametrize("reason", ["", "   ", None, "x" * 201])
def test_void_requires_a_reason(world, reason):
    transfer = award(world, 10)
    with refused(InvalidInput):
        ledger.void(transfer, world.committee, reason)


# --- floors ------------------------------------------------------------------------------


def test_redemption_over_the_balance_changes_nothing(world):
    posted(world, 25)
    with refused(InsufficientPoints) as info:
        redeem(world, 30)

    assert info.value.code == "insufficient_points"
    assert "积分不足" in str(info.value.message)
    with force_locale("en"):
        assert str(info.value.message) == (
            "Not enough points: the household has 25, this needs 30."
        )
    assert spendable(world.household) == 25


def test_redemption_may_spend_the_whole_balance_and_leaves_honour(world):
    posted(world, 25)
    redeem(world, 25)
    db.session.commit()

    assert ledger.balance_of(world.household) == ledger.Balance(spendable=0, honour=25)
    with refused(InsufficientPoints):
        redeem(world, 1)


def test_deduction_below_zero_is_refused_when_the_village_forbids_it(world):
    posted(world, 5)
    deduction = award(world, 8, kind=DEDUCTION)
    with refused(InsufficientPoints):
        ledger.post(deduction, world.committee)
    assert deduction.status is Status.PENDING
    assert spendable(world.household) == 5


def test_deduction_below_zero_is_allowed_when_the_village_allows_it(world):
    world.village.allow_negative_balance = True
    posted(world, 5)
    ledger.post(award(world, 8, kind=DEDUCTION), world.committee)
    db.session.commit()

    assert ledger.balance_of(world.household) == ledger.Balance(spendable=-3, honour=-3)
    # Redemptions never go below zero, whatever the village allows.
    with refused(InsufficientPoints):
        redeem(world, 1)


# --- reversals ---------------------------------------------------------------------------


def test_reversing_an_award_restores_balances_and_links_both_ways(world):
    original = posted(world, 10)
    reversal = ledger.reverse(original, world.committee2, "记错了户", key())
    db.session.commit()

    assert reversal.kind is TransferKind.REVERSAL
    assert reversal.status is Status.POSTED
    assert reversal.amount == 10
    assert reversal.signed_points == -10
    db.session.expire_all()
    assert original.reversed_by.id == reversal.id
    assert reversal.reverses.id == original.id
    assert original.status is Status.POSTED  # the original row is never changed
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=0, honour=0)
    assert sorted(e.amount for e in reversal.entries) == sorted(-e.amount for e in original.entries)


@pytest.mark.parametrize("who", ["clerk", "committee"])
def test_reversing_a_redemption_gives_the_points_back(world, who):
    posted(world, 30)
    sale = redeem(world, 20)
    db.session.commit()
    shop_account = db.session.scalar(sa.select(Account).where(Account.shop_id == world.shop.id))
    assert shop_account.balance == 20

    reversal = ledger.reverse(sale, getattr(world, who), "退货", key())
    db.session.commit()

    assert reversal.reverses_id == sale.id
    assert sale.reversed_by.id == reversal.id
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=30, honour=30)
    db.session.refresh(shop_account)
    assert shop_account.balance == 0


def test_a_reversal_cannot_be_reversed(world):
    reversal = ledger.reverse(posted(world, 10), world.committee, "记错了", key())
    db.session.commit()
    with refused(NotReversible) as info:
        ledger.reverse(reversal, world.committee, "再改回来", key())
    with force_locale("en"):
        assert "cannot itself be reversed" in str(info.value.message)


def test_a_transfer_is_reversed_at_most_once(world):
    original = posted(world, 10)
    ledger.reverse(original, world.committee, "记错了", key())
    db.session.commit()
    with refused(NotReversible):
        ledger.reverse(original, world.committee2, "记错了", key())
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=0, honour=0)


@pytest.mark.parametrize("state", ["pending", "voided"])
def test_only_posted_transfers_can_be_reversed(world, state):
    transfer = award(world, 10)
    if state == "voided":
        ledger.void(transfer, world.committee, "不合格")
    with refused(NotReversible):
        ledger.reverse(transfer, world.committee2, "记错了", key())


def test_reversing_a_spent_award_cannot_overdraw_the_household(world):
    original = posted(world, 10)
    redeem(world, 8)
    with refused(InsufficientPoints):
        ledger.reverse(original, world.committee, "记错了", key())


def test_reversing_a_spent_award_may_overdraw_where_the_village_allows(world):
    world.village.allow_negative_balance = True
    original = posted(world, 10)
    redeem(world, 8)
    ledger.reverse(original, world.committee, "记错了", key())
    db.session.commit()
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=-8, honour=0)


@pytest.mark.parametrize("who", ["cadre", "far_committee", "far_clerk", "villager"])
def test_reversal_needs_a_committee_member_of_the_village(world, who):
    original = posted(world, 10)
    with refused(Forbidden):
        ledger.reverse(original, getattr(world, who), "记错了", key())


def test_a_clerk_may_reverse_only_redemptions(world):
    original = posted(world, 10)
    with refused(Forbidden):
        ledger.reverse(original, world.clerk, "记错了", key())


# --- idempotency -------------------------------------------------------------------------


def rows_with_key(k: str) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Transfer).where(Transfer.idempotency_key == k)
    )


def test_same_key_and_content_returns_the_same_record(world):
    first = award(world, 10, key="claim-1")
    db.session.commit()
    again = award(world, 10, key="claim-1")
    db.session.commit()

    assert again.id == first.id
    assert rows_with_key("claim-1") == 1


def test_same_key_and_content_redeems_once(world):
    posted(world, 50)
    first = redeem(world, 10, key="sale-1")
    db.session.commit()
    again = redeem(world, 10, key="sale-1")
    db.session.commit()

    assert again.id == first.id
    assert rows_with_key("sale-1") == 1
    assert spendable(world.household) == 40


def test_same_key_and_content_reverses_once(world):
    original = posted(world, 10)
    first = ledger.reverse(original, world.committee, "记错了", "undo-1")
    db.session.commit()
    again = ledger.reverse(original, world.committee, "记错了", "undo-1")
    db.session.commit()

    assert again.id == first.id
    assert spendable(world.household) == 0


CHANGES = {
    "points": lambda w: {"points": 11},
    "reason": lambda w: {"reason": "另一件事"},
    "kind": lambda w: {"kind": DEDUCTION},
    "household": lambda w: {"household": w.neighbour},
    "member": lambda w: {"member": w.household.members[1]},
    "note": lambda w: {"note": "补充说明"},
}


@pytest.mark.parametrize("change", CHANGES)
def test_same_key_with_other_content_is_a_conflict(world, change):
    award(world, 10, key="claim-1")
    with refused(IdempotencyConflict):
        award(world, key="claim-1", **{"points": 10} | CHANGES[change](world))
    assert rows_with_key("claim-1") == 1


def test_a_redemption_key_reused_with_other_content_is_a_conflict(world):
    posted(world, 50)
    redeem(world, 10, key="sale-1")
    with refused(IdempotencyConflict):
        redeem(world, 12, key="sale-1")
    with refused(IdempotencyConflict):
        award(world, 10, key="sale-1")
    assert spendable(world.household) == 40


def test_a_reversal_key_reused_with_another_reason_is_a_conflict(world):
    original = posted(world, 10)
    ledger.reverse(original, world.committee, "记错了", "undo-1")
    with refused(IdempotencyConflict):
        ledger.reverse(original, world.committee, "别的原因", "undo-1")


# --- bad input ---------------------------------------------------------------------------

BAD_POINTS = [0, -1, 10**9, ledger.MAX_POINTS + 1, "5", True, 1.5, None]


@pytest.mark.parametrize("points", BAD_POINTS, ids=repr)
@pytest.mark.parametrize("kind", [AWARD, DEDUCTION])
def test_record_refuses_bad_points(world, kind, points):
    with refused(InvalidInput):
        award(world, points, kind=kind)


@pytest.mark.parametrize("points", BAD_POINTS, ids=repr)
def test_redeem_refuses_bad_points(world, points):
    posted(world, 50)
    with refused(InvalidInput):
        redeem(world, points)


def test_the_largest_allowed_amount_is_accepted(world):
    posted(world, ledger.MAX_POINTS)
    assert spendable(world.household) == ledger.MAX_POINTS


@pytest.mark.parametrize(
    "reason", ["", "   ", None, "x" * 201], ids=["empty", "blank", "none", "huge"]
)
def test_a_reason_is_required_and_bounded(world, reason):
    posted(world, 50)
    with refused(InvalidInput):
        ledger.record(
            kind=AWARD,
            household=world.household,
            points=5,
            reason=reason,
            recorded_by=world.cadre,
            key=key(),
        )
    with refused(InvalidInput):
        redeem(world, 5, reason=reason)
    original = posted(world, 5)
    with refused(InvalidInput):
        ledger.reverse(original, world.committee, reason, key())


@pytest.mark.parametrize(
    "bad_key", ["", "   ", None, "k" * 121], ids=["empty", "blank", "none", "long"]
)
def test_an_idempotency_key_is_required(world, bad_key):
    original = posted(world, 50)
    with refused(InvalidInput):
        ledger.record(
            kind=AWARD,
            household=world.household,
            points=5,
            reason="打扫",
            recorded_by=world.cadre,
            key=bad_key,
        )
    with refused(InvalidInput):
        ledger.redeem(
            household=world.household,
            shop=world.shop,
            points=5,
            clerk=world.clerk,
            key=bad_key,
            reason="兑换",
        )
    with refused(InvalidInput):
        ledger.reverse(original, world.committee, "记错了", bad_key)


def test_a_member_of_another_household_is_refused(world):
    posted(world, 50)
    stranger = world.neighbour.members[0]
    with refused(InvalidInput):
        award(world, 5, member=stranger)
    with refused(InvalidInput):
        redeem(world, 5, member=stranger)
    # The household's own member is fine and is recorded on the transfer.
    own = world.household.members[1]
    assert award(world, 5, member=own).member_id == own.id


@pytest.mark.parametrize("kind", [TransferKind.REDEMPTION, TransferKind.REVERSAL])
def test_only_awards_and_deductions_can_be_recorded(world, kind):
    with refused(InvalidInput):
        award(world, 5, kind=kind)


def test_an_inactive_household_gets_no_new_records(world):
    world.household.is_active = False
    with refused(InvalidInput):
        award(world, 5)


def test_a_closed_shop_cannot_redeem(world):
    posted(world, 50)
    world.shop.is_active = False
    with refused(InvalidInput):
        redeem(world, 5)


# --- reconciliation ----------------------------------------------------------------------


def test_check_is_clean_after_a_busy_day(world):
    posted(world, 40)
    posted(world, 7, kind=DEDUCTION)
    sale = redeem(world, 20)
    ledger.reverse(sale, world.clerk, "退货", key())
    ledger.void(award(world, 3), world.committee, "重复")
    award(world, 9)  # stays pending
    posted(world, 15, household=world.neighbour)
    db.session.commit()

    assert ledger.check() == ([], [])
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=33, honour=33)
    assert ledger.balance_of(world.neighbour) == ledger.Balance(spendable=15, honour=15)


def account_of(household, kind=AccountKind.HOUSEHOLD_SPENDABLE) -> Account:
    return db.session.scalar(
        sa.select(Account).where(Account.household_id == household.id, Account.kind == kind)
    )


def test_check_names_an_account_whose_stored_balance_was_tampered_with(world):
    posted(world, 10)
    account = account_of(world.household)
    db.session.execute(
        sa.text("UPDATE accounts SET balance = balance + 7 WHERE id = :id"), {"id": account.id}
    )
    db.session.commit()

    mismatches, unbalanced = ledger.check()

    assert unbalanced == []
    assert mismatches == [
        ledger.Mismatch(
            account_id=account.id,
            description=f"household {world.household.id} {world.household.name} "
            "(household_spendable)",
            stored=17,
            computed=10,
        )
    ]
    # Put it back so the books are clean again for the closing check.
    db.session.execute(
        sa.text("UPDATE accounts SET balance = balance - 7 WHERE id = :id"), {"id": account.id}
    )
    db.session.commit()


def test_check_reports_a_transfer_whose_entries_do_not_balance(world):
    transfer = posted(world, 10)
    account = account_of(world.household, AccountKind.HOUSEHOLD_HONOUR)
    extra = Entry(transfer_id=transfer.id, account_id=account.id, amount=5)
    db.session.add(extra)
    db.session.commit()

    mismatches, unbalanced = ledger.check()

    assert unbalanced == [transfer.id]
    assert [m.account_id for m in mismatches] == [account.id]
    db.session.delete(extra)
    db.session.commit()
