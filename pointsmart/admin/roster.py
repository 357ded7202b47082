"""Roster import pages: upload a village's .xlsx or .csv, preview every row, import all or nothing.

The preview reads and plans the file and keeps it server-side under a random token (never the
user's file name) in instance/uploads/, with a small JSON note of whose it is, its sha256 and a
digest of the plan shown. Importing claims the note by renaming it (one request wins a double
tap), re-reads the file, re-plans, and imports only if the plan is still the one previewed;
afterwards a "done" note answers a second tap with the result instead of an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy.exc import IntegrityError
from wtforms import HiddenField
from wtforms.validators import InputRequired, Length

from ..auth import role_required
from ..committee import MAX_ID
from ..extensions import db
from ..models import Role, Village
from ..services import roster as roster_service
from ..services.errors import DomainError
from ..timeutil import local_today
from . import bp

log = logging.getLogger(__name__)

#: Stored uploads older than this are removed whenever a new one is saved.
UPLOAD_MAX_AGE = 24 * 3600
#: secrets.token_urlsafe(32): 43 characters of [A-Za-z0-9_-]; nothing else names a file.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
SUFFIXES = (".xlsx", ".csv")
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

#: What each column the importer understands holds; the header names come from roster.HEADERS.
COLUMN_HELP = {
    "group": _l("Villager group, as named in PointSmart (required)"),
    "house_number": _l("House number; with the group it tells households apart (required)"),
    "head": _l("Head of household (required, or mark the head's row in the relation column)"),
    "name": _l("Name of the person on this row: one row a person"),
    "members": _l("Other members in one cell, separated by 、 , ; or spaces: one row a household"),
    "relation": _l(
        "Relation to the head; %(words)s marks the head's own row",
        words="、".join(sorted(roster_service.HEAD_WORDS, key=lambda w: (len(w), w))),
    ),
    "phone": _l("Mobile number, 11 digits (spaces, +86 and full-width digits are fine)"),
    "id_last4": _l("ID card number: only its last four characters are kept"),
}

STATUS_LABELS = {
    "new": _l("New households"),
    "update": _l("Households brought up to date"),
    "unchanged": _l("Households already as in the file"),
}


class UploadForm(FlaskForm):
    file = FileField(
        _l("Roster file (.xlsx or .csv)"),
        validators=[FileRequired(_l("Choose the roster file first."))],
        render_kw={
            "accept": ".xlsx,.csv,text/csv,"
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        },
    )


class ImportForm(FlaskForm):
    #: The stored upload and its sha256, as the preview showed them.
    token = HiddenField(validators=[InputRequired(), Length(max=64)])
    sha256 = HiddenField(validators=[InputRequired(), Length(max=64)])


def village_or_404(village_id: int) -> Village:
    """Return a village whose roster the user may import; 404 for any other."""
    village = db.session.get(Village, village_id) if 0 < village_id <= MAX_ID else None
    if village is None or not roster_service.can_import(current_user, village):
        abort(404)
    return village


# --- the stored uploads ---------------------------------------------------------------------------


def upload_folder() -> Path:
    """Return the folder uploads wait in between preview and import (instance/uploads)."""
    return Path(current_app.instance_path) / "uploads"


@dataclass
class Paths:
    """The files of one stored upload, all named by its token."""

    token: str
    suffix: str = ""

    def _file(self, tail: str) -> Path:
        return upload_folder() / f"{self.token}{tail}"

    @property
    def data(self) -> Path:
        return self._file(self.suffix)

    @property
    def note(self) -> Path:
        return self._file(".json")

    @property
    def claimed(self) -> Path:
        return self._file(".claimed.json")

    @property
    def done(self) -> Path:
        return self._file(".done.json")


def _write_new(path: Path, content: bytes) -> None:
    # Only this process's user may read it: a roster holds names, phones and ID numbers.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)


def _write_json(path: Path, note: dict) -> None:
    partial = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    _write_new(partial, json.dumps(note, ensure_ascii=False).encode())
    os.replace(partial, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def sweep_uploads(max_age: float = UPLOAD_MAX_AGE) -> int:
    """Remove stored uploads and notes older than ``max_age`` seconds; return how many."""
    folder = upload_folder()
    if not folder.is_dir():
        return 0
    limit, removed = time.time() - max_age, 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another request removed it first
    return removed


def store_upload(data: bytes, filename: str, village: Village, digest: str) -> dict:
    """Keep an upload for its import; return its note (token, sha256, …)."""
    folder = upload_folder()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    sweep_uploads()
    suffix = next(s for s in SUFFIXES if filename.lower().endswith(s))
    note = {
        "token": secrets.token_urlsafe(32),
        "suffix": suffix,
        "sha256": hashlib.sha256(data).hexdigest(),
        "village_id": village.id,
        "user_id": current_user.id,
        "filename": filename[-100:],
        "digest": digest,
    }
    paths = Paths(note["token"], suffix)
    _write_new(paths.data, data)
    _write_json(paths.note, note)
    return note


def _discard(paths: Paths) -> None:
    for path in (paths.data, paths.note, paths.claimed):
        path.unlink(missing_ok=True)


def plan_digest(plan: roster_service.Plan) -> str:
    """Return a fingerprint of what importing would do: equal digests, equal imports."""
    h = hashlib.sha256()
    for household in plan.households:
        key = [household.status, household.group.id, household.house_number, household.changes]
        h.update(json.dumps(key, ensure_ascii=False).encode())
    problems = [(r.line, r.problems) for r in plan.rows if r.problems]
    h.update(json.dumps([plan.untouched, problems], ensure_ascii=False).encode())
    return h.hexdigest()


def has_work(plan: roster_service.Plan) -> bool:
    """Return whether importing the plan would change anything."""
    return plan.ok and (plan.count("new") + plan.count("update")) > 0


# --- pages ----------------------------------------------------------------------------------------


def column_help() -> list[tuple[str, str]]:
    """Return (header names, what they hold) for each column the importer understands."""
    return [
        ("、".join(names), COLUMN_HELP.get(field_, field_))
        for field_, names in roster_service.HEADERS.items()
    ]


def _roster_page(village: Village, form: UploadForm):
    result = None
    token = request.args.get("imported", "")
    if TOKEN_RE.fullmatch(token):
        done = _read_json(Paths(token).done)
        if done and done["village_id"] == village.id and done["user_id"] == current_user.id:
            result = done
    return render_template(
        "admin/roster.html",
        village=village,
        form=form,
        columns=column_help(),
        export_columns=roster_service.EXPORT_HEADER,
        result=result,
        max_mb=roster_service.MAX_BYTES // (1024 * 1024),
    )


@bp.get("/villages/<int:village_id>/roster")
@role_required(Role.ADMIN)
def roster(village_id: int):
    """Show the upload form, what the importer reads, the export link and a finished import."""
    village = village_or_404(village_id)
    return _roster_page(village, UploadForm())


def _preview(village: Village, plan, filename: str, note: dict | None):
    problem_rows = [r for r in plan.rows if r.problems or r.status == "problem"]
    clean = {status_: [] for status_ in STATUS_LABELS}
    for row in plan.rows:
        if row.status in clean and not row.problems:
            clean[row.status].append(row)
    new = [h for h in plan.households if h.status == "new"]
    import_form = None
    if note is not None:
        import_form = ImportForm(formdata=None, token=note["token"], sha256=note["sha256"])
    return render_template(
        "admin/roster_preview.html",
        village=village,
        filename=filename,
        plan=plan,
        counts={
            "new": len(new),
            "new_people": sum(len(h.people) for h in new),
            "updated": plan.count("update"),
            "unchanged": plan.count("unchanged"),
            "people": sum(len(h.people) for h in plan.households),
            "untouched": plan.untouched,
            "rows": len(plan.rows),
            "problems": len(plan.problems),
        },
        problem_rows=problem_rows,
        common_problems=Counter(p for r in plan.rows for p in r.problems).most_common(8),
        updates=[h for h in plan.households if h.status == "update"],
        clean=[(s, STATUS_LABELS[s], clean[s]) for s in STATUS_LABELS if clean[s]],
        import_form=import_form,
        upload_form=UploadForm(formdata=None),
    )


@bp.post("/villages/<int:village_id>/roster/preview")
@role_required(Role.ADMIN)
def roster_preview(village_id: int):
    """Read and plan an uploaded roster; show every row; keep the file for the import."""
    village = village_or_404(village_id)
    form = UploadForm()
    if not form.validate_on_submit():
        return _roster_page(village, form)
    upload = form.file.data
    filename = os.path.basename((upload.filename or "").replace("\\", "/"))
    # One byte more than the service accepts, so it can say the file is too large.
    data = upload.stream.read(roster_service.MAX_BYTES + 1)
    try:
        rows = roster_service.read(data, filename)
    except DomainError as error:
        form.file.errors = [error.message]
        return _roster_page(village, form)
    plan = roster_service.plan(village, rows)
    note = store_upload(data, filename, village, plan_digest(plan)) if has_work(plan) else None
    log.info(
        "user %s previewed a roster for village %s: %s rows, %s problems, stored %s",
        current_user.id,
        village.id,
        len(plan.rows),
        len(plan.problems),
        bool(note),
    )
    return _preview(village, plan, filename, note)


def _refuse(village: Village, message: str):
    flash(message, "error")
    return redirect(url_for(".roster", village_id=village.id))


def _claim(paths: Paths) -> bool:
    try:
        os.rename(paths.note, paths.claimed)  # atomic: of two taps, one wins
    except FileNotFoundError:
        return False
    return True


def _unclaim(paths: Paths, note: dict) -> None:
    _write_json(paths.claimed, note)
    os.replace(paths.claimed, paths.note)


@bp.post("/villages/<int:village_id>/roster/import")
@role_required(Role.ADMIN)
def roster_import(village_id: int):
    """Import a previewed roster in one transaction, if the village has not changed since."""
    village = village_or_404(village_id)
    form = ImportForm()
    token, sha = (form.token.data or "").strip(), (form.sha256.data or "").strip().lower()
    if not (form.validate_on_submit() and TOKEN_RE.fullmatch(token) and SHA256_RE.fullmatch(sha)):
        return _refuse(village, _("Nothing was imported: upload the roster file again."))
    paths = Paths(token)
    done = _read_json(paths.done)
    note = done or _read_json(paths.note) or _read_json(paths.claimed)
    if note is None:
        return _refuse(
            village,
            _(
                "This upload is no longer here (stored files are kept for a day): nothing was "
                "imported. Upload the roster file again."
            ),
        )
    if (
        note["village_id"] != village.id
        or note["user_id"] != current_user.id
        or (done is None and not hmac.compare_digest(note["sha256"], sha))
    ):
        log.warning(
            "user %s sent a foreign roster token for village %s", current_user.id, village.id
        )
        return _refuse(
            village, _("This upload does not belong to this page: nothing was imported.")
        )
    result_url = url_for(".roster", village_id=village.id, imported=token)
    if done is not None:
        flash(_("This file was already imported; here is the result."), "info")
        return redirect(result_url)
    paths.suffix = note["suffix"]
    if not _claim(paths):
        flash(_("This file is being imported right now; here is the result."), "info")
        return redirect(result_url)
    try:
        return _import_claimed(village, paths, note)
    except BaseException:
        db.session.rollback()
        if paths.claimed.exists():
            _unclaim(paths, note)  # the upload stays, so the user may try again
        raise


def _import_claimed(village: Village, paths: Paths, note: dict):
    """Re-read, re-plan and import a claimed upload; answer with the page to show."""
    try:
        data = paths.data.read_bytes()
    except FileNotFoundError:
        data = b""
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), note["sha256"]):
        _discard(paths)
        return _refuse(village, _("The stored file has changed: nothing was imported."))
    sweep_uploads()
    filename = note["filename"]
    try:
        rows = roster_service.read(data, "roster" + paths.suffix)
    except DomainError as error:  # it was read at the preview; only a new app version differs
        _discard(paths)
        return _refuse(village, _("Nothing was imported: %(reason)s", reason=error.message))
    plan = roster_service.plan(village, rows)
    digest = plan_digest(plan)
    if digest != note["digest"]:
        # The village changed since the preview (or a colleague imported first): show anew.
        db.session.rollback()
        if has_work(plan):
            note = {**note, "digest": digest}
            _unclaim(paths, note)
        else:
            _discard(paths)
            note = None
        flash(
            _(
                "The village has changed since the preview: nothing was imported. Check the "
                "new preview below."
            ),
            "warning",
        )
        return _preview(village, plan, filename, note)
    try:
        counts = roster_service.apply(plan, current_user, filename)
        db.session.commit()
    except IntegrityError:
        # A colleague added the same household at the same moment; the unique key refused.
        db.session.rollback()
        _unclaim(paths, note)
        log.warning("roster import for village %s collided with another change", village.id)
        return _refuse(
            village,
            _(
                "Someone changed the village at the same moment: nothing was imported. Upload "
                "the file again to see a new preview."
            ),
        )
    except DomainError as error:
        db.session.rollback()
        _unclaim(paths, note)
        return _refuse(village, _("Nothing was imported: %(reason)s", reason=error.message))
    _write_json(
        paths.done,
        {
            "village_id": village.id,
            "user_id": current_user.id,
            "day": local_today().isoformat(),
            "filename": filename,
            **counts,
        },
    )
    _discard(paths)
    flash(
        _(
            "Roster imported: %(new)s new households (%(people)s people), %(updated)s brought "
            "up to date, %(unchanged)s unchanged.",
            new=counts["new"],
            people=counts["people"],
            updated=counts["updated"],
            unchanged=counts["unchanged"],
        ),
        "success",
    )
    return redirect(url_for(".roster", village_id=village.id, imported=paths.token))


@bp.get("/villages/<int:village_id>/roster.xlsx")
@role_required(Role.ADMIN)
def roster_export(village_id: int):
    """Download the village's roster as .xlsx, in the format the importer reads."""
    village = village_or_404(village_id)
    data = roster_service.export(village)
    log.info("user %s exported the roster of village %s", current_user.id, village.id)
    day = local_today().isoformat()
    name = f"{village.name}-{_('roster')}-{day}.xlsx"
    name = re.sub(r'[\\/:*?"<>|\s\x00-\x1f]+', "", name)
    return Response(
        data,
        mimetype=XLSX_MIMETYPE,
        headers={
            "Content-Disposition": f'attachment; filename="roster-village-{village.id}-{day}.xlsx"; '
            f"filename*=UTF-8''{quote(name, safe='')}",
            # Names and phone numbers: no browser or proxy keeps a copy.
            "Cache-Control": "no-store",
        },
    )
