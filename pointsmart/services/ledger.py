"""The points ledger: the only code that writes transfers, entries and balances.

Principles (see DESIGN.md): entries never change; every transfer says why; awards
are pending until someone other than the recorder posts them; every business event
carries an idempotency key; the balance floor is enforced by the UPDATE that moves
the points, so two clerks at once cannot overdraw a household.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

from .. import access
from ..extensions import db
from ..models import (
    Account,
    AccountKind,
    Approval,
    Category,
    Entry,
    Household,
    Member,
    Role,
    ScoringRule,
    Shop,
    Transfer,
    TransferKind,
    TransferStatus,
    Unit,
    User,
    Village,
)
from ..timeutil import to_local, utcnow
from . import audit, monthly
from .errors import (
    AlreadyResolved,
    Forbidden,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
    NotReversible,
    SelfApproval,
)

log = logging.getLogger(__name__)

#: No single event moves more points than this; larger amounts are typing mistakes.
MAX_POINTS = 100_000
MAX_KEY_LENGTH = 120
MAX_REASON_LENGTH = 200

_HOUSEHOLD_KINDS = (AccountKind.HOUSEHOLD_SPENDABLE, AccountKind.HOUSEHOLD_HONOUR)
_VILLAGE_KINDS = (AccountKind.VILLAGE_SOURCE, AccountKind.VILLAGE_SINK, AccountKind.VILLAGE_HONOUR)


# --- accounts -------------------------------------------------------------------------


def open_household_accounts(household: Household) -> None:
    """Create the spendable and honour accounts of a new household."""
    for kind in _HOUSEHOLD_KINDS:
        db.session.add(Account(kind=kind, household=household, balance=0))


def open_village_accounts(village: Village) -> None:
    """Create the source, sink and honour accounts of a new village."""
    for kind in _VILLAGE_KINDS:
        db.session.add(Account(kind=kind, village=village, balance=0))


def open_shop_account(shop: Shop) -> None:
    """Create the account that receives a shop's redeemed points."""
    db.session.add(Account(kind=AccountKind.SHOP, shop=shop, balance=0))


def _account(kind: AccountKind, **owner) -> Account:
    ((column, owner_id),) = owner.items()
    account = db.session.scalar(
        sa.select(Account).where(Account.kind == kind, getattr(Account, column) == owner_id)
    )
    if account is None:
        raise InvalidInput(_l("This household, village or shop has no points account."))
    return account


@dataclass(frozen=True)
class Balance:
    spendable: int
    honour: int


def balance_of(household: Household) -> Balance:
    """Return a household's stored balances (one indexed read, no summing)."""
    rows = dict(
        db.session.execute(
            sa.select(Account.kind, Account.balance).where(Account.household_id == household.id)
        ).all()
    )
    return Balance(
        spendable=rows.get(AccountKind.HOUSEHOLD_SPENDABLE, 0),
        honour=rows.get(AccountKind.HOUSEHOLD_HONOUR, 0),
    )


# --- validation helpers -----------------------------------------------------------------


def _check_points(points) -> int:
    if isinstance(points, bool) or not isinstance(points, int):
        raise InvalidInput(_l("Points must be a whole number."))
    if points <= 0:
        raise InvalidInput(_l("Points must be greater than zero."))
    if points > MAX_POINTS:
        raise InvalidInput(_l("At most %(max)s points can move in one record.", max=MAX_POINTS))
    return points


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(_l("The request has no valid idempotency key."))
    return key


def _check_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(_l("Please give a reason."))
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            _l("The reason may be at most %(max)s characters.", max=MAX_REASON_LENGTH)
        )
    return reason


def _fingerprint(**content) -> str:
    payload = json.dumps(content, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _check_member(member: Member | None, household: Household) -> None:
    if member is not None and member.household_id != household.id:
        raise InvalidInput(_l("That person is not a member of this household."))


# --- the write path ---------------------------------------------------------------------


def find(key: str) -> Transfer | None:
    """Return the transfer made under an idempotency key, if any."""
    return db.session.scalar(sa.select(Transfer).where(Transfer.idempotency_key == key))


def _replay(existing: Transfer, fingerprint: str) -> Transfer:
    if existing.fingerprint != fingerprint:
        raise IdempotencyConflict()
    log.info("replayed transfer %s for key %s", existing.id, existing.idempotency_key)
    return existing


def _insert(transfer: Transfer, legs: list[tuple[Account, int]]) -> tuple[Transfer, bool]:
    """Insert a transfer with its entries unless its key exists; return (transfer, created)."""
    existing = find(transfer.idempotency_key)
    if existing is not None:
        return _replay(existing, transfer.fingerprint), False
    by_unit: dict[Unit, int] = {}
    for account, amount in legs:
        by_unit[account.kind.unit] = by_unit.get(account.kind.unit, 0) + amount
    assert not any(by_unit.values()), "entries must balance per unit"
    try:
        # A savepoint, so that losing the race for the key leaves the caller's
        # transaction usable and it can answer with the winner's transfer.
        with db.session.begin_nested():
            db.session.add(transfer)
            for account, amount in legs:
                db.session.add(Entry(transfer=transfer, account=account, amount=amount))
            db.session.flush()
    except IntegrityError:
        existing = find(transfer.idempotency_key)
        if existing is None:
            raise
        return _replay(existing, transfer.fingerprint), False
    return transfer, True


def _apply(transfer: Transfer, floors: dict[int, int]) -> dict[int, int]:
    """Move the entries into the balances; return {account id: balance after}.

    A floor is checked inside the UPDATE itself, and accounts are updated in id order.
    """
    after = {}
    for entry in sorted(transfer.entries, key=lambda e: e.account_id):  # fixed lock order
        stmt = (
            sa.update(Account)
            .where(Account.id == entry.account_id)
            .values(balance=Account.balance + entry.amount)
            .returning(Account.balance)
            .execution_options(synchronize_session=False)
        )
        floor = floors.get(entry.account_id)
        if floor is not None and entry.amount < 0:
            stmt = stmt.where(Account.balance + entry.amount >= floor)
        balance = db.session.execute(stmt).scalar_one_or_none()
        if balance is None:
            raise InsufficientPoints(
                _l(
                    "Not enough points: the household has %(balance)s, this needs %(needed)s.",
                    balance=_fresh_balance(entry.account_id),
                    needed=-entry.amount,
                )
            )
        after[entry.account_id] = balance
        db.session.expire(entry.account, ["balance"])
    return after


def _fresh_balance(account_id: int) -> int:
    return db.session.scalar(sa.select(Account.balance).where(Account.id == account_id)) or 0


def _household_floors(transfer: Transfer, allow_negative: bool) -> dict[int, int]:
    """Spendable household accounts stop at zero unless the village allows less."""
    if allow_negative:
        return {}
    return {
        e.account_id: 0
        for e in transfer.entries
        if e.account.kind is AccountKind.HOUSEHOLD_SPENDABLE
    }


def _post_now(transfer: Transfer, approver: User | None, floors: dict[int, int]) -> None:
    transfer.status = TransferStatus.POSTED
    transfer.posted_at = utcnow()
    transfer.approved_by = approver
    db.session.flush()
    _apply(transfer, floors)


# --- awards and deductions --------------------------------------------------------------


def record(
    *,
    kind: TransferKind,
    household: Household,
    points: int,
    reason: str,
    recorded_by: User,
    key: str,
    category: Category | None = None,
    member: Member | None = None,
    note: str | None = None,
    source: tuple[str, int] | None = None,
    rule: ScoringRule | None = None,
) -> Transfer:
    """Record a pending award or deduction for a household; return it (or the replay).

    Raises Forbidden, InvalidInput, IdempotencyConflict.
    """
    if kind not in (TransferKind.AWARD, TransferKind.DEDUCTION):
        raise InvalidInput(_l("Only awards and deductions can be recorded."))
    points = _check_points(points)
    key = _check_key(key)
    reason = _check_reason(reason)
    _check_member(member, household)
    if not household.is_active:
        raise InvalidInput(_l("This household is no longer active."))
    if not access.covers_household(recorded_by, household, access.RECORDERS):
        raise Forbidden()
    village = household.group.village
    fingerprint = _fingerprint(
        kind=kind.value,
        household=household.id,
        points=points,
        reason=reason,
        category=category and category.value,
        member=member and member.id,
        note=note,
        source=source,
        rule=rule and rule.id,
    )
    sign = 1 if kind is TransferKind.AWARD else -1
    spendable = _account(AccountKind.HOUSEHOLD_SPENDABLE, household_id=household.id)
    honour = _account(AccountKind.HOUSEHOLD_HONOUR, household_id=household.id)
    counterpart = _account(
        AccountKind.VILLAGE_SOURCE if sign > 0 else AccountKind.VILLAGE_SINK,
        village_id=village.id,
    )
    village_honour = _account(AccountKind.VILLAGE_HONOUR, village_id=village.id)
    transfer = Transfer(
        idempotency_key=key,
        fingerprint=fingerprint,
        kind=kind,
        status=TransferStatus.PENDING,
        amount=points,
        household=household,
        village=village,
        member=member,
        category=category,
        reason=reason,
        note=note,
        source_type=source[0] if source else None,
        source_id=source[1] if source else None,
        recorded_by=recorded_by,
        rule=rule,
    )
    legs = [
        (spendable, sign * points),
        (counterpart, -sign * points),
        (honour, sign * points),
        (village_honour, -sign * points),
    ]
    transfer, created = _insert(transfer, legs)
    if created:
        audit.record(
            f"{kind.value}.record",
            recorded_by,
            transfer,
            summary=f"{household.name}: {transfer.signed_points:+d} {reason}",
        )
        log.info(
            "user %s recorded %s %s of %s points for household %s",
            recorded_by.id,
            kind.value,
            transfer.id,
            points,
            household.id,
        )
    return transfer


def required_approvals(transfer: Transfer) -> int:
    """Return how many committee members must approve: two above the village's threshold."""
    threshold = transfer.village.two_approver_min
    return 2 if threshold is not None and transfer.amount > threshold else 1


def post(transfer: Transfer, approver: User) -> Transfer:
    """Approve a pending award or deduction; move its points once enough members approved.

    Returns the transfer: posted, or still pending when a second approval is required.
    Raises Forbidden, SelfApproval, AlreadyResolved, InsufficientPoints.
    """
    village = transfer.village
    if not access.covers_village(approver, village, Role.COMMITTEE):
        raise Forbidden()
    if transfer.recorded_by_id == approver.id:
        raise SelfApproval()
    if transfer.status is not TransferStatus.PENDING:
        return _already(transfer, approver, TransferStatus.POSTED)
    # Lock the row so concurrent approvals are counted one after the other.
    db.session.execute(sa.select(Transfer.id).where(Transfer.id == transfer.id).with_for_update())
    db.session.refresh(transfer)
    if transfer.status is not TransferStatus.PENDING:
        return _already(transfer, approver, TransferStatus.POSTED)
    approvers = set(
        db.session.scalars(sa.select(Approval.user_id).where(Approval.transfer_id == transfer.id))
    )
    if approver.id in approvers:
        return transfer  # a double tap while a second approval is awaited
    db.session.add(Approval(transfer_id=transfer.id, user_id=approver.id))
    db.session.flush()
    audit.record(
        "transfer.approve",
        approver,
        transfer,
        summary=f"{transfer.household.name}: {transfer.signed_points:+d} {transfer.reason} "
        f"({len(approvers) + 1}/{required_approvals(transfer)})",
    )
    if len(approvers) + 1 < required_approvals(transfer):
        log.info("user %s approved transfer %s (first of two)", approver.id, transfer.id)
        return transfer
    return _post_pending(transfer, approver)


def lock_for_approval(transfers: list[Transfer]) -> None:
    """Lock the rows of transfers approved or rejected together, all at once in id order.

    Taken before any points move, so two members handling overlapping records wait for each
    other instead of deadlocking on the village accounts.
    """
    ids = sorted(t.id for t in transfers)
    db.session.execute(
        sa.select(Transfer.id).where(Transfer.id.in_(ids)).order_by(Transfer.id).with_for_update()
    )


def auto_post(transfer: Transfer) -> Transfer:
    """Post a pending award the village's settings approve without a committee member.

    One that needs two approvers stays pending: no setting waives the second person.
    Raises AlreadyResolved.
    """
    if required_approvals(transfer) > 1:
        return transfer
    posted = _post_pending(transfer, None)
    audit.record(
        "transfer.auto_post",
        None,
        transfer,
        summary=f"{transfer.household.name}: {transfer.signed_points:+d} {transfer.reason}",
    )
    return posted


def _post_pending(transfer: Transfer, approver: User | None) -> Transfer:
    # The status guard in the WHERE makes a concurrent second approval find no row.
    moved = db.session.execute(
        sa.update(Transfer)
        .where(Transfer.id == transfer.id, Transfer.status == TransferStatus.PENDING)
        .values(
            status=TransferStatus.POSTED,
            approved_by_id=approver.id if approver else None,
            posted_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(transfer)
    if moved != 1:
        if approver is None:
            raise AlreadyResolved()
        return _already(transfer, approver, TransferStatus.POSTED)
    _apply(transfer, _household_floors(transfer, transfer.village.allow_negative_balance))
    monthly.count(transfer)
    log.info("user %s posted transfer %s", approver.id if approver else "auto", transfer.id)
    return transfer


def void(transfer: Transfer, actor: User, reason: str) -> Transfer:
    """Reject a pending award or deduction; nothing moves, at most once.

    Raises Forbidden, InvalidInput, AlreadyResolved.
    """
    reason = _check_reason(reason)
    if not access.covers_village(actor, transfer.village, Role.COMMITTEE):
        raise Forbidden()
    if transfer.status is not TransferStatus.PENDING:
        return _already(transfer, actor, TransferStatus.VOIDED)
    moved = db.session.execute(
        sa.update(Transfer)
        .where(Transfer.id == transfer.id, Transfer.status == TransferStatus.PENDING)
        .values(
            status=TransferStatus.VOIDED,
            voided_by_id=actor.id,
            voided_at=utcnow(),
            void_reason=reason,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(transfer)
    if moved != 1:
        return _already(transfer, actor, TransferStatus.VOIDED)
    audit.record(
        "transfer.reject",
        actor,
        transfer,
        summary=f"{transfer.household.name}: {transfer.signed_points:+d} {transfer.reason}; {reason}",
    )
    log.info("user %s voided transfer %s: %s", actor.id, transfer.id, reason)
    return transfer


def _already(transfer: Transfer, actor: User, wanted: TransferStatus) -> Transfer:
    """A double tap by the same person gets the same result; anything else is refused."""
    if transfer.status is wanted:
        if wanted is TransferStatus.VOIDED:
            same_actor = transfer.voided_by_id == actor.id
        else:  # the first of two approvers tapping again counts as the same person
            same_actor = transfer.approved_by_id == actor.id or actor.id in {
                a.user_id for a in _approvals(transfer)
            }
        if same_actor:
            return transfer
    if transfer.status is TransferStatus.VOIDED:
        raise AlreadyResolved(_l("This record has already been rejected; nothing was changed."))
    if transfer.status is TransferStatus.POSTED:
        raise AlreadyResolved(_l("This record has already been approved; nothing was changed."))
    raise AlreadyResolved()


def _approvals(transfer: Transfer) -> list[Approval]:
    return list(
        db.session.scalars(
            sa.select(Approval).where(Approval.transfer_id == transfer.id).order_by(Approval.id)
        )
    )


# --- redemption -------------------------------------------------------------------------


def _redemption(
    *,
    household: Household,
    shop: Shop,
    points: int,
    clerk: User,
    key: str,
    reason: str,
    member: Member | None,
    source: tuple[str, int] | None,
) -> tuple[Transfer, list[tuple[Account, int]]]:
    """Check a redemption and return its transfer, already posted, and its legs (not added)."""
    points = _check_points(points)
    key = _check_key(key)
    reason = _check_reason(reason)
    _check_member(member, household)
    if not access.covers_shop(clerk, shop):
        raise Forbidden()
    if not shop.is_active:
        raise InvalidInput(_l("This shop is closed."))
    if not shop.serves(household):
        raise Forbidden(_l("This shop does not serve this household's village."))
    fingerprint = _fingerprint(
        kind=TransferKind.REDEMPTION.value,
        household=household.id,
        shop=shop.id,
        points=points,
        reason=reason,
        member=member and member.id,
        source=source,
    )
    # Both accounts in one read.
    accounts = {
        account.kind: account
        for account in db.session.scalars(
            sa.select(Account).where(
                sa.or_(
                    sa.and_(
                        Account.kind == AccountKind.HOUSEHOLD_SPENDABLE,
                        Account.household_id == household.id,
                    ),
                    sa.and_(Account.kind == AccountKind.SHOP, Account.shop_id == shop.id),
                )
            )
        )
    }
    if len(accounts) != 2:
        raise InvalidInput(_l("This household, village or shop has no points account."))
    # Posted at once (a redemption needs no approval): no PENDING row to update afterwards.
    transfer = Transfer(
        idempotency_key=key,
        fingerprint=fingerprint,
        kind=TransferKind.REDEMPTION,
        status=TransferStatus.POSTED,
        posted_at=utcnow(),
        amount=points,
        household=household,
        village=household.group.village,
        shop=shop,
        member=member,
        reason=reason,
        source_type=source[0] if source else None,
        source_id=source[1] if source else None,
        recorded_by=clerk,
    )
    legs = [
        (accounts[AccountKind.HOUSEHOLD_SPENDABLE], -points),
        (accounts[AccountKind.SHOP], points),
    ]
    return transfer, legs


def redeem(
    *,
    household: Household,
    shop: Shop,
    points: int,
    clerk: User,
    key: str,
    reason: str,
    member: Member | None = None,
    source: tuple[str, int] | None = None,
) -> Transfer:
    """Debit a household's spendable points to a shop, posted at once; return it (or the replay).

    Raises Forbidden, InvalidInput, IdempotencyConflict, InsufficientPoints.
    """
    transfer, legs = _redemption(
        household=household,
        shop=shop,
        points=points,
        clerk=clerk,
        key=key,
        reason=reason,
        member=member,
        source=source,
    )
    transfer, created = _insert(transfer, legs)
    if created:
        apply_redemption(transfer)
        log.info(
            "clerk %s redeemed %s points for household %s at shop %s (transfer %s)",
            clerk.id,
            transfer.amount,
            household.id,
            shop.id,
            transfer.id,
        )
    return transfer


def add_redemption(
    *,
    household: Household,
    shop: Shop,
    points: int,
    clerk: User,
    key: str,
    reason: str,
    member: Member | None = None,
    source: tuple[str, int] | None = None,
) -> Transfer:
    """Add a redemption's transfer and entries, posted, to the session; move no points yet.

    For a caller whose own row already holds the event's unique key (a checkout's redemption):
    the key, proved fresh, is not looked up again and no savepoint is taken. The caller flushes
    it with its own rows and calls ``apply_redemption`` last, so that the account rows stay
    locked only until the commit. Raises Forbidden, InvalidInput.
    """
    transfer, legs = _redemption(
        household=household,
        shop=shop,
        points=points,
        clerk=clerk,
        key=key,
        reason=reason,
        member=member,
        source=source,
    )
    db.session.add(transfer)
    for account, amount in legs:
        db.session.add(Entry(transfer=transfer, account=account, amount=amount))
    return transfer


def apply_redemption(transfer: Transfer) -> int:
    """Move a redemption's points, never below zero; return the household's balance after.

    The floor is checked inside the UPDATE, so two clerks at once cannot overdraw.
    Raises InsufficientPoints.
    """
    (debit,) = (entry for entry in transfer.entries if entry.amount < 0)
    return _apply(transfer, {debit.account_id: 0})[debit.account_id]


# --- reversal ---------------------------------------------------------------------------


def can_reverse(actor: User, transfer: Transfer) -> bool:
    """Return whether the actor may reverse this posted transfer."""
    if access.covers_village(actor, transfer.village, Role.COMMITTEE):
        return True
    # A clerk may take back a redemption of their own shop made today.
    return (
        transfer.kind is TransferKind.REDEMPTION
        and transfer.shop is not None
        and access.covers_shop(actor, transfer.shop)
        and transfer.posted_at is not None
        and _local_date(transfer.posted_at) == _local_date(utcnow())
    )


def _local_date(moment):
    return to_local(moment).date()


def reverse(transfer: Transfer, actor: User, reason: str, key: str) -> Transfer:
    """Correct a posted transfer by a linked reversing transfer; return it (or the replay).

    Raises Forbidden, InvalidInput, NotReversible, InsufficientPoints, IdempotencyConflict.
    """
    reason = _check_reason(reason)
    key = _check_key(key)
    fingerprint = _fingerprint(
        kind=TransferKind.REVERSAL.value, reverses=transfer.id, reason=reason
    )
    existing = find(key)
    if existing is not None:
        return _replay(existing, fingerprint)
    if not can_reverse(actor, transfer):
        raise Forbidden()
    if transfer.kind is TransferKind.REVERSAL:
        raise NotReversible(_l("A reversal cannot itself be reversed; record a new entry instead."))
    if transfer.kind is TransferKind.REFUND or (
        transfer.kind is TransferKind.REDEMPTION and transfer.source_type == "redemption"
    ):
        # Goods must go back on the shelf with the points: the shop's void does both.
        raise NotReversible(
            _l("A shop redemption is corrected by voiding it from its receipt at the shop.")
        )
    if transfer.status is not TransferStatus.POSTED:
        raise NotReversible(_l("Only posted records can be reversed; reject pending ones instead."))
    if transfer.reversed_by is not None:
        raise NotReversible(_l("This record has already been reversed."))
    reversal = Transfer(
        idempotency_key=key,
        fingerprint=fingerprint,
        kind=TransferKind.REVERSAL,
        status=TransferStatus.PENDING,
        amount=transfer.amount,
        household=transfer.household,
        village=transfer.village,
        shop=transfer.shop,
        member=transfer.member,
        # By id, not relationship: the backref would put the unsaved reversal on the
        # original before the savepoint adds it (SQLAlchemy warns, autoflush skips it).
        category=transfer.category,
        reason=reason,
        reverses_id=transfer.id,
        recorded_by=actor,
        source_type=transfer.source_type,
        source_id=transfer.source_id,
    )
    legs = [(e.account, -e.amount) for e in transfer.entries]
    try:
        reversal, created = _insert(reversal, legs)
    except IntegrityError as exc:  # someone else reversed it at the same moment
        raise NotReversible(_l("This record has already been reversed.")) from exc
    if created:
        allow_negative = (
            transfer.kind is TransferKind.AWARD and transfer.village.allow_negative_balance
        )
        _post_now(reversal, actor, _household_floors(reversal, allow_negative))
        monthly.count(transfer, -1)  # corrects the month of what it reverses
        db.session.expire(transfer, ["reversed_by"])  # so the link reads back at once
        audit.record(
            "transfer.reverse",
            actor,
            transfer,
            summary=f"{transfer.household.name}: {reversal.signed_points:+d} ({transfer.reason}); "
            f"{reason}",
            after={"reversal_id": reversal.id},
        )
        log.info("user %s reversed transfer %s by %s", actor.id, transfer.id, reversal.id)
    return reversal


# --- refunds (shop voids) -------------------------------------------------------------------


def refund(
    original: Transfer, points: int, actor: User, reason: str, key: str, source: tuple[str, int]
) -> Transfer:
    """Give back part or all of a shop redemption's points, posted at once; return it (or the replay).

    The shop service guards that no unit is refunded twice; this moves the points.
    Raises Forbidden, InvalidInput, NotReversible, IdempotencyConflict.
    """
    points = _check_points(points)
    key = _check_key(key)
    reason = _check_reason(reason)
    fingerprint = _fingerprint(
        kind=TransferKind.REFUND.value, refunds=original.id, points=points, reason=reason
    )
    existing = find(key)
    if existing is not None:
        return _replay(existing, fingerprint)
    if original.kind is not TransferKind.REDEMPTION or original.status is not TransferStatus.POSTED:
        raise NotReversible(_l("Only a posted redemption can be refunded."))
    already = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Transfer.amount), 0)).where(
            Transfer.refunds_id == original.id
        )
    )
    # Advice for other callers; the shop's per-line guarded UPDATE is what holds under races.
    if points + already > original.amount:
        raise InvalidInput(_l("A refund cannot give back more than was redeemed."))
    if not can_reverse(actor, original):
        raise Forbidden()
    spendable = _account(AccountKind.HOUSEHOLD_SPENDABLE, household_id=original.household_id)
    shop_account = _account(AccountKind.SHOP, shop_id=original.shop_id)
    transfer = Transfer(
        idempotency_key=key,
        fingerprint=fingerprint,
        kind=TransferKind.REFUND,
        status=TransferStatus.PENDING,
        amount=points,
        household_id=original.household_id,
        village_id=original.village_id,
        shop_id=original.shop_id,
        member_id=original.member_id,
        reason=reason,
        refunds_id=original.id,
        recorded_by=actor,
        source_type=source[0],
        source_id=source[1],
    )
    transfer, created = _insert(transfer, [(spendable, points), (shop_account, -points)])
    if created:
        _post_now(transfer, actor, {})
        log.info(
            "user %s refunded %s points of redemption transfer %s (transfer %s)",
            actor.id,
            points,
            original.id,
            transfer.id,
        )
    return transfer


# --- yearly clearing ------------------------------------------------------------------------


def clear(
    household: Household, key: str, reason: str, actor: User | None = None
) -> Transfer | None:
    """Move a household's whole positive spendable balance to the village sink; honour untouched.

    Returns the clearing transfer (or the replay under the same key), or None when there is
    nothing to clear. The account rows are locked first, so a redemption at the same moment
    either comes before (less is cleared) or after (finds nothing left).
    """
    key = _check_key(key)
    existing = find(key)
    if existing is not None:
        return existing
    spendable = _account(AccountKind.HOUSEHOLD_SPENDABLE, household_id=household.id)
    village = household.group.village
    sink = _account(AccountKind.VILLAGE_SINK, village_id=village.id)
    # Both rows locked now, in id order like every posting, so a deduction posted at the same
    # moment (sink first, by id) cannot deadlock with this clearing.
    balances = dict(
        db.session.execute(
            sa.select(Account.id, Account.balance)
            .where(Account.id.in_([spendable.id, sink.id]))
            .order_by(Account.id)
            .with_for_update()
        ).all()
    )
    balance = balances[spendable.id]
    if balance <= 0:
        return None
    transfer = Transfer(
        idempotency_key=key,
        fingerprint=_fingerprint(kind=TransferKind.CLEARING.value, household=household.id, key=key),
        kind=TransferKind.CLEARING,
        status=TransferStatus.PENDING,
        amount=balance,
        household=household,
        village=village,
        reason=_check_reason(reason),
        source_type="clearing",
        recorded_by=actor,
    )
    transfer, created = _insert(transfer, [(spendable, -balance), (sink, balance)])
    if created:
        _post_now(transfer, None, {spendable.id: 0})
        log.info(
            "cleared %s points of household %s (transfer %s)", balance, household.id, transfer.id
        )
    return transfer


# --- reconciliation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    account_id: int
    description: str
    stored: int
    computed: int


def check() -> tuple[list[Mismatch], list[int]]:
    """Recompute every balance from posted entries; return (mismatched accounts, unbalanced transfers)."""
    sums = (
        sa.select(Entry.account_id, sa.func.sum(Entry.amount).label("total"))
        .join(Transfer, Entry.transfer_id == Transfer.id)
        .where(Transfer.status == TransferStatus.POSTED)
        .group_by(Entry.account_id)
        .subquery()
    )
    total = sa.func.coalesce(sums.c.total, 0)
    # The database compares; only the accounts that differ come back as objects.
    rows = db.session.execute(
        sa.select(Account, total)
        .outerjoin(sums, sums.c.account_id == Account.id)
        .where(Account.balance != total)
        .order_by(Account.id)
    ).all()
    mismatches = [
        Mismatch(account.id, describe(account), account.balance, int(computed))
        for account, computed in rows
    ]
    unit_of = sa.case(
        (Account.kind.in_([AccountKind.HOUSEHOLD_HONOUR, AccountKind.VILLAGE_HONOUR]), "honour"),
        else_="spendable",
    )
    unbalanced = sorted(
        {
            row[0]
            for row in db.session.execute(
                sa.select(Entry.transfer_id, unit_of)
                .join(Account, Entry.account_id == Account.id)
                .group_by(Entry.transfer_id, unit_of)
                .having(sa.func.sum(Entry.amount) != 0)
            )
        }
    )
    return mismatches, unbalanced


def describe(account: Account) -> str:
    """Return a human description of an account, e.g. 'household 12 王建国 (spendable)'."""
    owner = account.owner
    kind = type(owner).__name__.lower()
    return f"{kind} {owner.id} {owner.name} ({account.kind.value})"
