"""Property: any sequence of ledger operations keeps the books balanced and matches a plain model.

Hypothesis draws sequences of awards, deductions, approvals, voids, redemptions, reversals and
replays of earlier keys over a fresh village per example. A small model predicts each step's
outcome (success or which refusal) and each household's balances; after every example the
stored balances must equal the model, recompute from the entries, and sum to zero per unit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    AccountKind,
    Household,
    Role,
    Transfer,
    TransferKind,
    Village,
    VillagerGroup,
)
from pointsmart.services import accounts, ledger
from pointsmart.services.errors import (
    AlreadyResolved,
    DomainError,
    IdempotencyConflict,
    InsufficientPoints,
    NotReversible,
    SelfApproval,
)

HOUSEHOLDS = 2
RECORDERS = ("cadre", "committee_a")
APPROVERS = ("committee_a", "committee_b")

household = st.integers(0, HOUSEHOLDS - 1)
points = st.integers(1, 30)
#: Picks an earlier transfer of the example, modulo how many there are.
earlier = st.integers(0, 1_000)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("award"), household, points, st.sampled_from(RECORDERS)),
        # Recorded and approved at once, so that redemptions and reversals have points to move.
        st.tuples(st.just("funded"), household, points, st.sampled_from(APPROVERS)),
        st.tuples(st.just("funded"), household, points, st.sampled_from(APPROVERS)),
        st.tuples(st.just("deduction"), household, points, st.sampled_from(RECORDERS)),
        st.tuples(st.just("post"), earlier, st.sampled_from(APPROVERS)),
        st.tuples(st.just("void"), earlier, st.sampled_from(APPROVERS)),
        st.tuples(st.just("redeem"), household, st.integers(1, 12)),
        st.tuples(st.just("reverse"), earlier, st.sampled_from(APPROVERS)),
        st.tuples(st.just("replay"), earlier, st.booleans()),
    ),
    min_size=8,
    max_size=40,
)


@dataclass
class Record:
    """What the model knows about one transfer the example created."""

    id: int
    kind: str
    household: int
    points: int
    status: str
    recorder: str
    approver: str | None = None
    voider: str | None = None
    reversed: bool = False
    #: Call the service again with the same key: same content, and other content.
    replay: Callable[[], Transfer] | None = field(default=None, repr=False)
    conflict: Callable[[], Transfer] | None = field(default=None, repr=False)


class Model:
    def __init__(self, allow_negative: bool) -> None:
        self.allow_negative = allow_negative
        self.spendable = [0] * HOUSEHOLDS
        self.honour = [0] * HOUSEHOLDS
        self.records: list[Record] = []

    def pick(self, n: int) -> Record | None:
        return self.records[n % len(self.records)] if self.records else None

    def move(self, h: int, spendable: int, honour: int) -> None:
        self.spendable[h] += spendable
        self.honour[h] += honour

    def effect(self, record: Record) -> tuple[int, int]:
        """Return the (spendable, honour) change the record makes when it is posted."""
        p = record.points
        return {"award": (p, p), "deduction": (-p, -p), "redemption": (-p, 0)}[record.kind]

    def floor_refuses(self, h: int, change: int, floored: bool) -> bool:
        return floored and change < 0 and self.spendable[h] + change < 0


class Run:
    """Apply operations to the real service, each as one request that commits or rolls back."""

    def __init__(self, staff, allow_negative: bool, make, keys) -> None:
        self.staff = staff
        self.keys = keys
        self.model = Model(allow_negative)
        village = make.village(staff["town"], allow_negative_balance=allow_negative)
        group = make.group(village)
        self.households = [make.household(group) for _ in range(HOUSEHOLDS)]
        self.shop = make.shop(village)
        for role, name in (
            (Role.CADRE, "cadre"),
            (Role.COMMITTEE, "committee_a"),
            (Role.COMMITTEE, "committee_b"),
        ):
            accounts.grant(staff[name], role, village)
        accounts.grant(staff["clerk"], Role.CLERK, self.shop)
        db.session.commit()

    def key(self) -> str:
        return f"prop-{next(self.keys)}"

    def attempt(self, step, call: Callable[[], Transfer], expected: type[DomainError] | None):
        """Run one step in a savepoint; check the outcome is the one the model predicted."""
        event(f"{step[0]}: {expected.__name__ if expected else 'ok'}")
        try:
            with db.session.begin_nested():
                result = call()
        except DomainError as exc:
            # The next step is a new request: forget what the refused one loaded.
            db.session.expire_all()
            assert type(exc) is expected, f"{step}: refused with {exc!r}, model expected {expected}"
            return None
        assert expected is None, f"{step}: succeeded, model expected {expected.__name__}"
        return result

    def transfer(self, record: Record) -> Transfer:
        return db.session.get(Transfer, record.id)

    # --- one method per operation --------------------------------------------------------

    def award(self, step, h, p, recorder, kind="award"):
        key, reason = self.key(), f"{kind} {p}"

        def call(reason=reason):
            return ledger.record(
                kind=TransferKind(kind),
                household=self.households[h],
                points=p,
                reason=reason,
                recorded_by=self.staff[recorder],
                key=key,
            )

        result = self.attempt(step, call, None)
        self.model.records.append(
            Record(
                result.id,
                kind,
                h,
                p,
                "pending",
                recorder,
                replay=call,
                conflict=lambda: call(reason + " (changed)"),
            )
        )

    def funded(self, step, h, p, approver):
        self.award(step, h, p, "cadre")
        self.post(step, len(self.model.records) - 1, approver)

    def deduction(self, step, h, p, recorder):
        self.award(step, h, p, recorder, kind="deduction")

    def post(self, step, n, approver):
        record = self.model.pick(n)
        if record is None:
            return
        expected = None
        if record.recorder == approver:
            expected = SelfApproval
        elif record.status != "pending":
            same = record.status == "posted" and record.approver == approver
            expected = None if same else AlreadyResolved
        else:
            spendable, honour = self.model.effect(record)
            if self.model.floor_refuses(record.household, spendable, not self.model.allow_negative):
                expected = InsufficientPoints
        result = self.attempt(
            step, lambda: ledger.post(self.transfer(record), self.staff[approver]), expected
        )
        if result is not None:
            assert result.id == record.id
            if record.status == "pending":
                record.status, record.approver = "posted", approver
                self.model.move(record.household, spendable, honour)

    def void(self, step, n, actor):
        record = self.model.pick(n)
        if record is None:
            return
        expected = None
        if record.status != "pending":
            same = record.status == "voided" and record.voider == actor
            expected = None if same else AlreadyResolved
        result = self.attempt(
            step,
            lambda: ledger.void(self.transfer(record), self.staff[actor], "不符合标准"),
            expected,
        )
        if result is not None:
            assert result.id == record.id
            record.status, record.voider = "voided", actor

    def redeem(self, step, h, p):
        key, reason = self.key(), f"兑换 {p}"

        def call(reason=reason):
            return ledger.redeem(
                household=self.households[h],
                shop=self.shop,
                points=p,
                clerk=self.staff["clerk"],
                key=key,
                reason=reason,
            )

        enough = self.model.spendable[h] >= p
        result = self.attempt(step, call, None if enough else InsufficientPoints)
        if result is not None:
            self.model.records.append(
                Record(
                    result.id,
                    "redemption",
                    h,
                    p,
                    "posted",
                    "clerk",
                    replay=call,
                    conflict=lambda: call(reason + " (changed)"),
                )
            )
            self.model.move(h, -p, 0)

    def reverse(self, step, n, actor):
        record = self.model.pick(n)
        if record is None:
            return
        key, reason = self.key(), "更正"

        def call(reason=reason):
            return ledger.reverse(self.transfer(record), self.staff[actor], reason, key)

        expected = None
        if record.kind == "reversal" or record.status != "posted" or record.reversed:
            expected = NotReversible
        else:
            spendable, honour = self.model.effect(record)
            # Taking back an award may overdraw only where the village allows it;
            # giving points back (deduction, redemption) is never refused.
            floored = not (record.kind == "award" and self.model.allow_negative)
            if self.model.floor_refuses(record.household, -spendable, floored):
                expected = InsufficientPoints
        result = self.attempt(step, call, expected)
        if result is not None:
            record.reversed = True
            self.model.move(record.household, -spendable, -honour)
            self.model.records.append(
                Record(
                    result.id,
                    "reversal",
                    record.household,
                    record.points,
                    "posted",
                    actor,
                    approver=actor,
                    replay=call,
                    conflict=lambda: call("另一个原因"),
                )
            )
            assert result.reverses_id == record.id

    def replay(self, step, n, same_content):
        record = self.model.pick(n)
        if record is None:
            return
        if same_content:
            result = self.attempt(step, record.replay, None)
            assert result.id == record.id
        else:
            self.attempt(step, record.conflict, IdempotencyConflict)

    # --- what must hold afterwards -------------------------------------------------------

    def check(self) -> None:
        assert ledger.check() == ([], [])

        per_unit = {unit: 0 for unit in ledger.Unit}
        for kind, total in db.session.execute(
            sa.select(Account.kind, sa.func.sum(Account.balance)).group_by(Account.kind)
        ):
            per_unit[AccountKind(kind).unit] += int(total)
        assert per_unit == {ledger.Unit.SPENDABLE: 0, ledger.Unit.HONOUR: 0}

        overdrawn = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Account)
            .join(Household, Account.household_id == Household.id)
            .join(VillagerGroup, Household.group_id == VillagerGroup.id)
            .join(Village, VillagerGroup.village_id == Village.id)
            .where(
                Account.kind == AccountKind.HOUSEHOLD_SPENDABLE,
                Account.balance < 0,
                Village.allow_negative_balance.is_(False),
            )
        )
        assert overdrawn == 0

        for h, household_ in enumerate(self.households):
            assert ledger.balance_of(household_) == ledger.Balance(
                spendable=self.model.spendable[h], honour=self.model.honour[h]
            ), f"household {h}"

        stored = dict(
            db.session.execute(
                sa.select(Transfer.id, Transfer.status).where(
                    Transfer.id.in_([r.id for r in self.model.records])
                )
            ).all()
        )
        assert {r.id: r.status for r in self.model.records} == {
            id_: str(status) for id_, status in stored.items()
        }
        reversed_ids = set(
            db.session.scalars(
                sa.select(Transfer.reverses_id).where(
                    Transfer.reverses_id.in_([r.id for r in self.model.records])
                )
            )
        )
        assert reversed_ids == {r.id for r in self.model.records if r.reversed}


@pytest.fixture
def staff(make):
    """Staff users made once per test; each example grants them its fresh village and shop."""
    town = make.town()
    users = {
        name: accounts.create_staff(f"{name}{make.n()}", name, "correct horse battery")
        for name in ("cadre", "committee_a", "committee_b", "clerk")
    }
    db.session.commit()
    return {"town": town, **users}


@pytest.mark.parametrize("allow_negative", [False, True], ids=["floor", "negative-allowed"])
def test_any_sequence_of_operations_keeps_the_books(staff, make, allow_negative):
    keys = itertools.count(1)

    # Hypothesis runs inside the test, so the function-scoped app and database are shared
    # on purpose: each example builds its own village, and the global checks still hold.
    @settings(max_examples=40, deadline=None)
    @given(steps=operations)
    def run(steps):
        db.session.rollback()
        run_ = Run(staff, allow_negative, make, keys)
        for step in steps:
            getattr(run_, step[0])(step, *step[1:])
        db.session.commit()
        run_.check()

    run()
