"""Publishing notice boards (红黑榜, 美丽庭院) for the committee: prepare, preview, publish."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, TextAreaField
from wtforms.validators import Length, Optional

from ..auth import role_required
from ..extensions import db
from ..models import Board, BoardKind, Role, Village
from ..services import boards, rankings
from ..services.errors import AlreadyResolved, DomainError, InvalidInput
from . import bp, get_village_or_404, member_villages, parse_id
from .ratings import get_rating_round_or_404


class PublishBoardForm(FlaskForm):
    """Publish exactly what the preview showed: its parameters and a digest of its content."""

    village_id = HiddenField()
    month = HiddenField()
    size = HiddenField()
    digest = HiddenField()
    note = TextAreaField(
        _l("Correction note: what changes and why"),
        validators=[Optional(), Length(max=boards.MAX_NOTE_LENGTH)],
        render_kw={"maxlength": boards.MAX_NOTE_LENGTH, "rows": 3},
    )


class PublishCourtyardForm(FlaskForm):
    note = TextAreaField(
        _l("Correction note (only when publishing again): what changes and why"),
        validators=[Optional(), Length(max=boards.MAX_NOTE_LENGTH)],
        render_kw={"maxlength": boards.MAX_NOTE_LENGTH, "rows": 2},
    )


def last_month() -> date:
    """Return the first day of the previous local month."""
    month = rankings.this_month()
    return date(month.year - 1, 12, 1) if month.month == 1 else month.replace(month=month.month - 1)


def digest(content: dict) -> str:
    """Return a fingerprint of a board's content, to tell whether it changed since a preview."""
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class BoardRequest:
    village: Village
    month: date
    size: int

    def args(self) -> dict[str, str]:
        return {
            "village_id": str(self.village.id),
            "month": f"{self.month:%Y-%m}",
            "size": str(self.size),
        }


def read_request(values) -> BoardRequest:
    """Read village, month and list size from a query string or form.

    Missing values take the defaults (the member's only village, last month, 10 entries).
    Raises InvalidInput; aborts 404 for a village that is not the member's.
    """
    raw_village = (values.get("village_id") or "").strip()
    if raw_village:
        village_id = parse_id(raw_village)
        if village_id is None:
            abort(404)
        village = get_village_or_404(village_id)
    else:
        villages = member_villages()
        if len(villages) != 1:
            raise InvalidInput(_l("Choose one of your villages."))
        village = villages[0]
    raw_month = (values.get("month") or "").strip()
    if raw_month:
        month = rankings.parse_period({"period": "month", "month": raw_month}).start
    else:
        month = last_month()
    raw_size = (values.get("size") or "").strip()
    return BoardRequest(village, month, boards.list_size(raw_size or None))


@dataclass(frozen=True)
class Change:
    """How one entry of a list differs between the published board and now."""

    name: str | None
    group: str
    rank_before: int | None
    rank_now: int | None
    points_before: int | None
    points_now: int | None

    @property
    def moved(self) -> bool:
        return self.rank_before != self.rank_now

    @property
    def points_changed(self) -> bool:
        return self.points_before != self.points_now


def list_changes(before: list[dict], now: list[dict], points_key: str) -> list[Change]:
    """Return the entries that joined, left, moved or changed points, in the order of now."""
    # Entries are matched by what the list shows (name and group); namesakes in order.
    waiting: dict[tuple, list[dict]] = {}
    for entry in before:
        waiting.setdefault((entry.get("name"), entry["group"]), []).append(entry)
    changes = []
    for entry in now:
        key = (entry.get("name"), entry["group"])
        old = waiting[key].pop(0) if waiting.get(key) else None
        change = Change(
            entry.get("name"),
            entry["group"],
            old["rank"] if old else None,
            entry["rank"],
            old[points_key] if old else None,
            entry[points_key],
        )
        if change.moved or change.points_changed:
            changes.append(change)
    for entries in waiting.values():
        for old in entries:
            changes.append(
                Change(old.get("name"), old["group"], old["rank"], None, old[points_key], None)
            )
    return changes


def board_changes(before: dict, now: dict) -> dict:
    """Return what a correction would change: per list, and the settings that differ."""
    return {
        "red": list_changes(before.get("red", []), now.get("red", []), "points"),
        "improvement": list_changes(
            before.get("improvement", []), now.get("improvement", []), "deducted"
        ),
        "size": (before.get("size"), now.get("size")),
        "names": (before.get("names"), now.get("names")),
        "participants": (before.get("participants"), now.get("participants")),
        "households": (before.get("households"), now.get("households")),
    }


def _boards_page(errors: list[str] | None = None, values=None, status: int = 200):
    villages = member_villages()
    values = values or {}
    return (
        render_template(
            "committee/boards/list.html",
            villages=villages,
            published={village.id: boards.published(village) for village in villages},
            errors=errors or [],
            chosen_village=(values.get("village_id") or "").strip(),
            chosen_month=(values.get("month") or "").strip() or f"{last_month():%Y-%m}",
            chosen_size=(values.get("size") or "").strip() or str(boards.DEFAULT_SIZE),
            this_month=f"{rankings.this_month():%Y-%m}",
            max_size=boards.MAX_SIZE,
        ),
        status,
    )


def _preview_page(wanted: BoardRequest, form: PublishBoardForm | None = None, status: int = 200):
    content = boards.monthly_content(wanted.village, wanted.month, wanted.size)
    previous = boards.latest(wanted.village, BoardKind.MONTHLY, period=wanted.month)
    form = form or PublishBoardForm(formdata=None)
    form.village_id.data = str(wanted.village.id)
    form.month.data = f"{wanted.month:%Y-%m}"
    form.size.data = str(wanted.size)
    form.digest.data = digest(content)
    return (
        render_template(
            "committee/boards/preview.html",
            village=wanted.village,
            month=wanted.month,
            period=rankings.month_period(wanted.month),
            content=content,
            previous=previous,
            unchanged=previous is not None and previous.content == content,
            changes=board_changes(previous.content, content) if previous else None,
            form=form,
        ),
        status,
    )


def _board_url(board: Board) -> str:
    return url_for("public.board", village_id=board.village_id, board_id=board.id)


@bp.get("/boards", endpoint="boards")
@role_required(Role.COMMITTEE)
def boards_page():
    """List the published boards of the member's villages and prepare a monthly board."""
    return _boards_page(values=request.args)


@bp.get("/boards/preview")
@role_required(Role.COMMITTEE)
def preview_board():
    """Show exactly what a monthly board would publish now, and what a correction changes."""
    try:
        wanted = read_request(request.args)
    except InvalidInput as error:
        return _boards_page([str(error.message)], request.args, status=422)
    return _preview_page(wanted)


@bp.post("/boards/publish")
@role_required(Role.COMMITTEE)
def publish_board():
    """Publish the previewed monthly board, unless its figures changed since the preview."""
    form = PublishBoardForm()
    try:
        wanted = read_request(request.form)
    except InvalidInput as error:
        return _boards_page([str(error.message)], request.form, status=422)
    if not form.validate_on_submit():
        if form.errors.get("csrf_token"):
            flash(_("The form had expired. Check the figures and publish again."), "error")
        return _preview_page(wanted, form, status=422)
    if not form.digest.data:  # not sent from a preview: show one first
        return redirect(url_for(".preview_board", **wanted.args()))
    if digest(boards.monthly_content(wanted.village, wanted.month, wanted.size)) != (
        form.digest.data
    ):
        flash(
            _("The figures changed since the preview. Check them again before publishing."),
            "warning",
        )
        return _preview_page(wanted, form, status=409)
    try:
        board = boards.publish_monthly(
            wanted.village, wanted.month, current_user, size=wanted.size, note=form.note.data
        )
        db.session.commit()
    except AlreadyResolved as error:
        # A double tap, or a colleague was quicker: show the board that is in force.
        db.session.rollback()
        flash(str(error.message), "info")
        board = boards.latest(wanted.village, BoardKind.MONTHLY, period=wanted.month)
        return redirect(_board_url(board) if board else url_for(".boards"))
    except DomainError as error:
        db.session.rollback()
        form.note.errors = [*form.note.errors, str(error.message)]
        return _preview_page(wanted, form, status=422)
    flash(
        _(
            "Published: the board of %(month)s for %(village)s.",
            month=rankings.month_period(wanted.month).label(),
            village=wanted.village.name,
        ),
        "success",
    )
    return redirect(_board_url(board))


@bp.post("/ratings/<int:rating_round_id>/publish")
@role_required(Role.COMMITTEE)
def publish_courtyard(rating_round_id: int):
    """Publish the star households of a closed rating round (or a correction of them)."""
    round_ = get_rating_round_or_404(rating_round_id)
    back = url_for(".rating_round", rating_round_id=round_.id)
    form = PublishCourtyardForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
        return redirect(back)
    try:
        board = boards.publish_courtyard(round_, current_user, note=form.note.data)
        db.session.commit()
    except AlreadyResolved as error:
        db.session.rollback()
        flash(str(error.message), "info")
        board = boards.latest(round_.village, BoardKind.COURTYARD, rating_round=round_)
        return redirect(_board_url(board) if board else back)
    except DomainError as error:
        db.session.rollback()
        flash(str(error.message), "error")
        return redirect(back)
    flash(_("Published: the results of %(title)s.", title=round_.title), "success")
    return redirect(_board_url(board))
