"""A household's whole history: every change of its points with its reason, and its warnings.

Transfers and first-offence warnings (which move no points) are read as one stream, newest
first, so a page of thirty lines is the same thirty whichever kind they are, and a reversal
can link to the page that holds what it reverses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from babel.dates import format_skeleton
from flask import render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy.orm import selectinload

from ..auth import role_required
from ..extensions import db
from ..models import Household, Role, RuleWarning, Transfer, TransferStatus
from ..services import ledger, photos
from ..timeutil import to_local
from . import bp, my_household

PAGE_SIZE = 30
#: How many of the latest changes the read-aloud button reads after the balances.
READ_ALOUD = 3

_TRANSFER, _WARNING = "t", "w"


def _stream(household: Household):
    """Return the household's transfers and warnings as one subquery (kind, id, at)."""
    transfers = sa.select(
        sa.literal_column(f"'{_TRANSFER}'").label("kind"),
        Transfer.id.label("id"),
        Transfer.created_at.label("at"),
    ).where(Transfer.household_id == household.id)
    warnings = sa.select(
        sa.literal_column(f"'{_WARNING}'").label("kind"),
        RuleWarning.id.label("id"),
        RuleWarning.created_at.label("at"),
    ).where(RuleWarning.household_id == household.id)
    return sa.union_all(transfers, warnings).subquery("stream")


def _newest_first(stream):
    # Ties (one request made both) are broken the same way on every page.
    return (stream.c.at.desc(), stream.c.kind.desc(), stream.c.id.desc())


def count(household: Household) -> int:
    """Return how many lines the household's history has (transfers and warnings)."""
    stream = _stream(household)
    return db.session.scalar(sa.select(sa.func.count()).select_from(stream))


def lines(household: Household, limit: int, offset: int = 0) -> list[Transfer | RuleWarning]:
    """Return a slice of the household's history, newest first, with what each line names."""
    stream = _stream(household)
    rows = db.session.execute(
        sa.select(stream.c.kind, stream.c.id)
        .order_by(*_newest_first(stream))
        .limit(limit)
        .offset(offset)
    ).all()
    transfer_ids = [i for kind, i in rows if kind == _TRANSFER]
    warning_ids = [i for kind, i in rows if kind == _WARNING]
    transfers = {
        t.id: t
        for t in db.session.scalars(
            sa.select(Transfer)
            .where(Transfer.id.in_(transfer_ids))
            # Each line names recorder, approver, member, what it reverses or refunds.
            .options(
                selectinload(Transfer.recorded_by),
                selectinload(Transfer.approved_by),
                selectinload(Transfer.member),
                selectinload(Transfer.reverses),
                selectinload(Transfer.reversed_by),
                selectinload(Transfer.refunds),
                selectinload(Transfer.shop),
            )
        )
    }
    warnings = {
        w.id: w
        for w in db.session.scalars(
            sa.select(RuleWarning)
            .where(RuleWarning.id.in_(warning_ids))
            .options(
                selectinload(RuleWarning.rule),
                selectinload(RuleWarning.recorded_by),
                selectinload(RuleWarning.member),
            )
        )
    }
    return [transfers[i] if kind == _TRANSFER else warnings[i] for kind, i in rows]


def tagged(items: Sequence[Transfer | RuleWarning]) -> list[tuple[str, Transfer | RuleWarning]]:
    """Return each line with its kind, "transfer" or "warning", for the templates."""
    return [("warning" if isinstance(i, RuleWarning) else "transfer", i) for i in items]


def pages_of(household: Household, transfer_ids: Iterable[int]) -> dict[int, int]:
    """Return the history page each of the household's transfers is on (others are left out)."""
    wanted = set(transfer_ids)
    if not wanted:
        return {}
    stream = _stream(household)
    numbered = sa.select(
        stream.c.kind,
        stream.c.id,
        sa.func.row_number().over(order_by=_newest_first(stream)).label("n"),
    ).subquery()
    rows = db.session.execute(
        sa.select(numbered.c.id, numbered.c.n).where(
            numbered.c.kind == _TRANSFER, numbered.c.id.in_(wanted)
        )
    )
    return {i: (n - 1) // PAGE_SIZE + 1 for i, n in rows}


def _anchors(household: Household, transfers: Sequence[Transfer], page: int) -> dict[int, str]:
    """Return a link to every entry a line of this page points at, on whichever page it is."""
    targets = set()
    for t in transfers:
        targets.update(i for i in (t.reverses_id, t.refunds_id) if i is not None)
        if t.reversed_by is not None:
            targets.add(t.reversed_by.id)
    return {
        i: f"#t-{i}" if on_page == page else url_for(".history", page=on_page, _anchor=f"t-{i}")
        for i, on_page in pages_of(household, targets).items()
    }


def spoken_date(moment) -> str:
    """Return a day as it is said aloud in the page's language, e.g. 11月5日."""
    return format_skeleton("MMMMd", to_local(moment).date(), locale=get_locale())


def _spoken_line(t: Transfer) -> str:
    values = {
        "date": spoken_date(t.created_at),
        "reason": t.reason,
        "points": abs(t.signed_points),
    }
    if t.status is TransferStatus.VOIDED:
        return _("%(date)s, %(reason)s, not counted: it was rejected.", **values)
    if t.status is TransferStatus.PENDING:
        if t.signed_points >= 0:
            return _(
                "%(date)s, %(reason)s, plus %(points)s points, waiting for approval.", **values
            )
        return _("%(date)s, %(reason)s, minus %(points)s points, waiting for approval.", **values)
    if t.signed_points >= 0:
        return _("%(date)s, %(reason)s, plus %(points)s points.", **values)
    return _("%(date)s, %(reason)s, minus %(points)s points.", **values)


def spoken_summary(balance: ledger.Balance, latest: Sequence[Transfer]) -> str:
    """Return what the read-aloud button says: the balances, then the latest changes."""
    parts = [
        _(
            "Your household now has %(spendable)s spendable points and %(honour)s honour points.",
            spendable=balance.spendable,
            honour=balance.honour,
        )
    ]
    if latest:
        parts.append(_("Latest changes:"))
        parts.extend(_spoken_line(t) for t in latest[:READ_ALOUD])
    else:
        parts.append(_("No points yet."))
    return " ".join(parts)


@bp.get("/history")
@role_required(Role.VILLAGER)
def history():
    """Show every change of the household's points and every warning, thirty a page."""
    household = my_household()  # never anything named in the URL
    total = count(household)
    last_page = max(1, -(-total // PAGE_SIZE))
    page = min(max(request.args.get("page", 1, type=int), 1), last_page)
    items = lines(household, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    transfers = [i for i in items if isinstance(i, Transfer)]
    return render_template(
        "villager/history.html",
        household=household,
        items=tagged(items),
        total=total,
        page=page,
        last_page=last_page,
        anchors=_anchors(household, transfers, page),
        evidence=photos.evidence_for(transfers),
    )
