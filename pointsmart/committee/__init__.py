"""Pages for village committee members: the approval queue and the history of each record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import selectinload
from wtforms import SelectChoice, SelectField, StringField
from wtforms.validators import InputRequired, Length, Optional

from .. import access
from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..models import (
    Approval,
    Household,
    Photo,
    Role,
    ScoringRule,
    Transfer,
    TransferStatus,
    User,
    Village,
    VillagerGroup,
)
from ..services import ledger
from ..services.errors import DomainError
from ..timeutil import LOCAL_TZ

bp = Blueprint("committee", __name__, url_prefix="/committee")

#: Rows shown at once; the filters narrow a longer queue.
QUEUE_LIMIT = 200
#: Records one bulk action may carry.
BULK_LIMIT = 200
#: Row ids beyond this are not ids at all (PostgreSQL's integer would overflow).
MAX_ID = 2**31 - 1
#: Evidence kept on the record a transfer came from (a claim's or report's photos stay there).
PHOTO_SOURCES = ("claim", "report", "rating")


class RejectForm(FlaskForm):
    reason = StringField(_l("Reason for rejection"), validators=[InputRequired(), Length(max=200)])


class BulkForm(FlaskForm):
    """The ticked rows of the queue, approved or rejected together: all or nothing."""

    action = SelectField(
        choices=[
            SelectChoice("approve", _l("Approve selected")),
            SelectChoice("reject", _l("Reject selected")),
        ],
        validators=[InputRequired()],
    )
    reason = StringField(_l("Reason for rejection"), validators=[Optional(), Length(max=200)])


def parse_id(raw) -> int | None:
    """Return a row id written in a form or query string, or None if it is not one."""
    raw = (raw or "").strip()
    if not raw.isdecimal() or len(raw) > 10:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def committee_villages() -> list[int]:
    """Return the ids of the villages the member's committee grants cover."""
    return [g.village_id for g in current_user.grants if g.role is Role.COMMITTEE and g.village_id]


def member_villages() -> list[Village]:
    """Return the villages the member's committee grants cover, by name."""
    return list(
        db.session.scalars(
            sa.select(Village).where(Village.id.in_(committee_villages())).order_by(Village.name)
        )
    )


def get_village_or_404(village_id: int) -> Village:
    """Return one of the member's villages; 404 for any other."""
    village = db.session.get(Village, village_id) if village_id <= MAX_ID else None
    if village is None or not access.covers_village(current_user, village, Role.COMMITTEE):
        abort(404)
    return village


def get_transfer_or_404(transfer_id: int) -> Transfer:
    """Return a transfer of one of the member's villages; 404 for any other, giving nothing away."""
    transfer = db.session.get(Transfer, transfer_id) if transfer_id <= MAX_ID else None
    if transfer is None or not access.covers_village(
        current_user, transfer.village, Role.COMMITTEE
    ):
        abort(404)
    return transfer


def next_url(default: str) -> str:
    """Return the committee page a form asked to come back to, or ``default``."""
    target = request.form.get("next", "")
    if target.startswith("/committee/") and "//" not in target and "\\" not in target:
        return target
    return default


def describe(transfer: Transfer) -> str:
    """Name a record in a message, e.g. '#12 王建国 · 垃圾分类 +5'."""
    points = transfer.signed_points
    return f"#{transfer.id} {transfer.household.name} · {transfer.reason} " + (
        f"+{points}" if points > 0 else str(points)
    )


# --- evidence and approvals of a page of transfers -----------------------------------------


def evidence_condition(transfer: Transfer):
    """Return the SQL condition selecting a transfer's evidence photos."""
    condition = Photo.transfer_id == transfer.id
    if transfer.source_type in PHOTO_SOURCES and transfer.source_id is not None:
        source_column = getattr(Photo, f"{transfer.source_type}_id")
        condition = sa.or_(condition, source_column == transfer.source_id)
    return condition


def evidence_counts(transfers: list[Transfer]) -> dict[int, int]:
    """Return the number of evidence photos of each transfer, in one query per kind of owner."""
    counts = {t.id: 0 for t in transfers}
    owners = {"transfer": {t.id: [t.id] for t in transfers}}
    for t in transfers:
        if t.source_type in PHOTO_SOURCES and t.source_id is not None:
            # One report may give a reward and a deduction: both show its photos.
            owners.setdefault(t.source_type, {}).setdefault(t.source_id, []).append(t.id)
    for kind, by_owner in owners.items():
        column = getattr(Photo, f"{kind}_id")
        rows = db.session.execute(
            sa.select(column, sa.func.count()).where(column.in_(list(by_owner))).group_by(column)
        )
        for owner_id, n in rows:
            for transfer_id in by_owner[owner_id]:
                counts[transfer_id] += n
    return counts


def approvals_of(transfers: list[Transfer]) -> dict[int, list[Approval]]:
    """Return the approvals given so far to each transfer, oldest first."""
    result: dict[int, list[Approval]] = {t.id: [] for t in transfers}
    if transfers:
        for approval in db.session.scalars(
            sa.select(Approval)
            .where(Approval.transfer_id.in_(list(result)))
            .options(selectinload(Approval.user))
            .order_by(Approval.id)
        ):
            result[approval.transfer_id].append(approval)
    return result


@dataclass
class Row:
    """A pending record as the queue shows it to the current member."""

    transfer: Transfer
    photos: int
    approvals: list[Approval]
    needed: int

    @property
    def approved_by_me(self) -> bool:
        return any(a.user_id == current_user.id for a in self.approvals)

    @property
    def recorded_by_me(self) -> bool:
        return self.transfer.recorded_by_id == current_user.id


# --- the queue's filters ---------------------------------------------------------------------


FILTER_KEYS = ("group", "rule", "recorder", "from", "to")


@dataclass
class QueueFilter:
    """The filters of the queue, read from the query string; bad values are named and ignored."""

    group: VillagerGroup | None = None
    rule: ScoringRule | None = None
    recorder: User | None = None
    date_from: date | None = None
    date_to: date | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return any((self.group, self.rule, self.recorder, self.date_from, self.date_to))

    def apply(self, stmt):
        if self.group is not None:
            stmt = stmt.where(
                Transfer.household_id.in_(
                    sa.select(Household.id).where(Household.group_id == self.group.id)
                )
            )
        if self.rule is not None:  # every version of the rule
            stmt = stmt.where(
                Transfer.rule_id.in_(
                    sa.select(ScoringRule.id).where(ScoringRule.family == self.rule.family)
                )
            )
        if self.recorder is not None:
            stmt = stmt.where(Transfer.recorded_by_id == self.recorder.id)
        if self.date_from is not None:
            stmt = stmt.where(Transfer.created_at >= _local_midnight(self.date_from))
        if self.date_to is not None:
            stmt = stmt.where(Transfer.created_at < _local_midnight(self.date_to + timedelta(1)))
        return stmt


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=LOCAL_TZ)


def _lookup(name: str, load, message: str, errors: list[str]):
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    value = parse_id(raw)
    found = load(value) if value is not None else None
    if found is None:
        errors.append(message)
    return found


def _date_arg(name: str, errors: list[str]) -> date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors.append(_("Dates must be written like 2026-05-01; that date filter was ignored."))
        return None


def read_filters(village_ids: list[int]) -> QueueFilter:
    """Read the queue's filters for the member's villages from the query string."""
    errors: list[str] = []

    def group(group_id):
        found = db.session.get(VillagerGroup, group_id)
        return found if found is not None and found.village_id in village_ids else None

    def rule(rule_id):
        found = db.session.get(ScoringRule, rule_id)
        return found if found is not None and found.village_id in village_ids else None

    def recorder(user_id):
        recorded_here = (
            sa.select(Transfer.id)
            .where(Transfer.recorded_by_id == user_id, Transfer.village_id.in_(village_ids))
            .exists()
        )
        return db.session.scalar(sa.select(User).where(User.id == user_id, recorded_here))

    result = QueueFilter(
        group=_lookup(
            "group", group, _("There is no such group in your villages; filter ignored."), errors
        ),
        rule=_lookup(
            "rule", rule, _("There is no such rule in your villages; filter ignored."), errors
        ),
        recorder=_lookup(
            "recorder",
            recorder,
            _("Nobody by that id recorded anything in your villages; filter ignored."),
            errors,
        ),
        date_from=_date_arg("from", errors),
        date_to=_date_arg("to", errors),
        errors=errors,
    )
    if result.date_from and result.date_to and result.date_to < result.date_from:
        errors.append(_("The end date is before the start date; the dates were ignored."))
        result.date_from = result.date_to = None
    return result


def filter_choices(village_ids: list[int]) -> dict[str, list]:
    """Return the groups, rules and recorders the queue's filters offer."""
    pending = sa.select(Transfer).where(
        Transfer.village_id.in_(village_ids), Transfer.status == TransferStatus.PENDING
    )
    groups = db.session.scalars(
        sa.select(VillagerGroup)
        .join(Village)
        .where(VillagerGroup.village_id.in_(village_ids))
        .order_by(Village.name, VillagerGroup.name)
    ).all()
    used_rules = sa.select(pending.subquery().c.rule_id)
    listed = db.session.scalars(
        sa.select(ScoringRule)
        .where(
            ScoringRule.village_id.in_(village_ids),
            sa.or_(ScoringRule.is_current.is_(True), ScoringRule.id.in_(used_rules)),
        )
        .order_by(ScoringRule.name, ScoringRule.version.desc())
    ).all()
    by_family: dict[str, ScoringRule] = {}
    for rule in listed:  # one entry per rule: its current (or newest listed) version
        if rule.family not in by_family or rule.is_current:
            by_family[rule.family] = rule
    recorders = db.session.scalars(
        sa.select(User)
        .where(User.id.in_(sa.select(pending.subquery().c.recorded_by_id)))
        .order_by(User.display_name)
    ).all()
    return {"groups": groups, "rules": list(by_family.values()), "recorders": recorders}


# --- views -----------------------------------------------------------------------------------


@bp.get("/")
@role_required(Role.COMMITTEE)
def home():
    """Show the pending awards and deductions of the member's villages, filtered."""
    village_ids = committee_villages()
    filters = read_filters(village_ids)
    stmt = filters.apply(
        sa.select(Transfer).where(
            Transfer.village_id.in_(village_ids), Transfer.status == TransferStatus.PENDING
        )
    )
    total = db.session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
    pending = db.session.scalars(
        stmt.options(
            selectinload(Transfer.household).selectinload(Household.group),
            selectinload(Transfer.recorded_by),
            selectinload(Transfer.member),
            selectinload(Transfer.rule),
            selectinload(Transfer.village),
        )
        .order_by(Transfer.created_at, Transfer.id)
        .limit(QUEUE_LIMIT)
    ).all()
    photos = evidence_counts(pending)
    approvals = approvals_of(pending)
    rows = [Row(t, photos[t.id], approvals[t.id], ledger.required_approvals(t)) for t in pending]
    query = {k: request.args[k] for k in FILTER_KEYS if request.args.get(k)}
    return render_template(
        "committee/home.html",
        rows=rows,
        total=total,
        filters=filters,
        choices=filter_choices(village_ids),
        villages=member_villages(),
        reject_form=RejectForm(),
        bulk_form=BulkForm(),
        here=url_for(".home", **query),
    )


@bp.get("/transfers/<int:transfer_id>")
@role_required(Role.COMMITTEE)
def transfer(transfer_id: int):
    """Show a record's whole history: recorded, approved, posted or rejected, with evidence."""
    record = get_transfer_or_404(transfer_id)
    photos = db.session.scalars(
        sa.select(Photo).where(evidence_condition(record)).order_by(Photo.id)
    ).all()
    approvals = approvals_of([record])[record.id]
    row = Row(record, len(photos), approvals, ledger.required_approvals(record))
    return render_template(
        "committee/transfer.html",
        t=record,
        row=row,
        photos=photos,
        photo_links="media.thumb" in current_app.view_functions
        and "media.photo" in current_app.view_functions,
        reject_form=RejectForm(),
        here=url_for(".transfer", transfer_id=record.id),
    )


@bp.post("/transfers/<int:transfer_id>/approve")
@role_required(Role.COMMITTEE)
def approve(transfer_id: int):
    """Approve one pending award or deduction; it posts once enough members approved."""
    transfer = get_transfer_or_404(transfer_id)
    if EmptyForm().validate_on_submit():
        try:
            ledger.post(transfer, current_user)
            db.session.commit()
            if transfer.status is TransferStatus.PENDING:
                flash(
                    _(
                        "Your approval is recorded: %(reason)s for %(household)s still needs a second committee member.",
                        reason=transfer.reason,
                        household=transfer.household.name,
                    ),
                    "success",
                )
            else:
                flash(
                    _(
                        "Approved: %(reason)s for %(household)s.",
                        reason=transfer.reason,
                        household=transfer.household.name,
                    ),
                    "success",
                )
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return redirect(next_url(url_for(".home")))


@bp.post("/transfers/<int:transfer_id>/reject")
@role_required(Role.COMMITTEE)
def reject(transfer_id: int):
    """Void one pending award or deduction, with a reason."""
    transfer = get_transfer_or_404(transfer_id)
    form = RejectForm()
    if form.validate_on_submit():
        try:
            ledger.void(transfer, current_user, form.reason.data)
            db.session.commit()
            flash(_("Rejected."), "success")
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    else:
        flash(_("Please give a reason for rejection."), "error")
    return redirect(next_url(url_for(".home")))


class _Refused(Exception):
    def __init__(self, label: str, error: DomainError):
        self.label = label
        self.error = error


@bp.post("/transfers/bulk")
@role_required(Role.COMMITTEE)
def bulk():
    """Approve or reject the ticked records together: all of them, or none if one is refused."""
    back = next_url(url_for(".home"))
    form = BulkForm()
    if not form.validate_on_submit():
        flash(_("Please choose to approve or to reject the ticked records."), "error")
        return redirect(back)
    raw_ids = request.form.getlist("transfer_id")
    if not raw_ids:
        flash(_("Please tick at least one record."), "error")
        return redirect(back)
    if len(raw_ids) > BULK_LIMIT:
        flash(_("At most %(n)s records can be handled at once.", n=BULK_LIMIT), "error")
        return redirect(back)
    ids = [parse_id(raw) for raw in raw_ids]
    if None in ids:
        abort(404)
    # Ascending ids: two bulk actions at once then lock rows in the same order.
    transfers = [get_transfer_or_404(i) for i in sorted(set(ids))]
    reason = (form.reason.data or "").strip()
    rejecting = form.action.data == "reject"
    if rejecting and not reason:
        flash(_("Please give a reason for rejection."), "error")
        return redirect(back)
    ledger.lock_for_approval(transfers)
    try:
        for transfer in transfers:
            label = describe(transfer)
            try:
                if rejecting:
                    ledger.void(transfer, current_user, reason)
                else:
                    ledger.post(transfer, current_user)
            except DomainError as error:
                raise _Refused(label, error) from error
        db.session.commit()
    except _Refused as refused:
        db.session.rollback()
        flash(
            _(
                "Nothing was changed. %(item)s: %(error)s",
                item=refused.label,
                error=refused.error.message,
            ),
            "error",
        )
        return redirect(back)
    if rejecting:
        flash(_("Rejected %(n)s record(s).", n=len(transfers)), "success")
    else:
        waiting = sum(t.status is TransferStatus.PENDING for t in transfers)
        message = _("Approved %(n)s record(s).", n=len(transfers))
        if waiting:
            message += " " + _("%(n)s of them still need a second committee member.", n=waiting)
        flash(message, "success")
    return redirect(back)


# Views of this audience in their own modules; imported last, they register on bp.
from . import boards, ratings, rules, settings  # noqa: E402, F401
