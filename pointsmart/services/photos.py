"""Photo uploads: checked by content, re-encoded without EXIF (GPS), thumbnailed, stored privately.

A photo is validated and decoded in memory first (``prepare``) and only then written, so a
batch with one bad file writes nothing. Files are named by the photo's unguessable token;
a file whose row was rolled back is never referenced, so it can never be served.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l
from PIL import Image, ImageOps, UnidentifiedImageError

from ..extensions import db
from ..models import Photo, Transfer, User, Village
from .errors import InvalidInput

log = logging.getLogger(__name__)

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP"}
#: Per photo; a deployment may change it with PHOTO_MAX_BYTES. Phone photos are 2–8 MB.
MAX_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000  # larger is a decompression bomb, not a phone photo
MAX_PHOTOS = 4
STORED_EDGE = 1600
THUMB_EDGE = 320

_UNREADABLE = (
    UnidentifiedImageError,
    OSError,  # truncated data
    SyntaxError,  # broken PNG chunks
    ValueError,
    EOFError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,  # raised where warnings are errors, as in the tests
)


def folder() -> Path:
    """Return the folder photos are kept in (PHOTO_FOLDER, default instance/photos)."""
    path = Path(
        current_app.config.get("PHOTO_FOLDER") or Path(current_app.instance_path) / "photos"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def max_bytes() -> int:
    return int(current_app.config.get("PHOTO_MAX_BYTES") or MAX_BYTES)


@dataclass
class Prepared:
    """A checked, decoded, EXIF-free image not yet written anywhere."""

    image: Image.Image
    sha256: str
    size_bytes: int


def _read(upload) -> bytes:
    if isinstance(upload, bytes):
        return upload
    return upload.read(max_bytes() + 1)


def _too_large() -> InvalidInput:
    return InvalidInput(
        _l("A photo may be at most %(mb)s MB.", mb=f"{max_bytes() / (1024 * 1024):g}")
    )


def prepare(upload) -> Prepared:
    """Check that an upload is a real JPEG, PNG or WebP photo and decode it without EXIF.

    ``upload`` is a werkzeug FileStorage or raw bytes. Raises InvalidInput.
    """
    data = _read(upload)
    if not data:
        raise InvalidInput(_l("The photo is empty."))
    if len(data) > max_bytes():
        raise _too_large()
    not_a_photo = InvalidInput(_l("This file is not a photo: only JPEG, PNG or WebP are accepted."))
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ALLOWED_FORMATS:
                raise not_a_photo
            if probe.width * probe.height > MAX_PIXELS:
                raise _too_many_pixels()
            probe.verify()
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()  # a truncated file fails here
            # Apply the EXIF rotation, then drop EXIF (and GPS) by re-encoding pixels only.
            image = _flatten(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels() from None
    except UnidentifiedImageError:
        raise not_a_photo from None
    except _UNREADABLE:
        raise InvalidInput(
            _l("This photo is damaged or incomplete; please take or choose it again.")
        ) from None
    image.info = {}
    image.thumbnail((STORED_EDGE, STORED_EDGE))
    return Prepared(image=image, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def _too_many_pixels() -> InvalidInput:
    return InvalidInput(
        _l("The photo is too large in pixels (at most %(mp)s megapixels).", mp=MAX_PIXELS // 10**6)
    )


def _flatten(image: Image.Image) -> Image.Image:
    """Return an RGB copy; transparent parts become white rather than black."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def save(prepared: Prepared, *, uploader: User, village: Village) -> Photo:
    """Write a prepared image and its thumbnail; return the new (unattached) Photo."""
    image = prepared.image
    photo = Photo(
        village_id=village.id,
        sha256=prepared.sha256,
        width=image.width,
        height=image.height,
        size_bytes=prepared.size_bytes,
        uploaded_by_id=uploader.id,
    )
    db.session.add(photo)
    db.session.flush()
    target = folder()
    _write_jpeg(image, target / photo.file_name)
    thumb = image.copy()
    thumb.thumbnail((THUMB_EDGE, THUMB_EDGE))
    _write_jpeg(thumb, target / photo.thumb_name)
    log.info("user %s uploaded photo %s (%s bytes)", uploader.id, photo.id, prepared.size_bytes)
    return photo


def store(upload, *, uploader: User, village: Village) -> Photo:
    """Validate an uploaded image and keep a re-encoded copy and a thumbnail; return the Photo.

    Raises InvalidInput for anything that is not a real JPEG, PNG or WebP image of sensible size.
    """
    return save(prepare(upload), uploader=uploader, village=village)


def chosen(uploads: Iterable | None) -> list:
    """Return the uploads a form really carried (an empty file input sends a nameless part)."""
    return [
        u
        for u in (uploads or ())
        if u is not None and (isinstance(u, bytes) or getattr(u, "filename", None))
    ]


def prepare_many(uploads: Iterable | None, limit: int = MAX_PHOTOS) -> list[Prepared]:
    """Check every upload before any is written; refuse more than ``limit``. Raises InvalidInput."""
    uploads = chosen(uploads)
    if len(uploads) > limit:
        raise InvalidInput(_l("At most %(n)s photos per record.", n=limit))
    return [prepare(u) for u in uploads]


def store_many(
    uploads: Iterable, *, uploader: User, village: Village, limit: int = MAX_PHOTOS
) -> list[Photo]:
    """Store each non-empty upload, or none if one is refused. Raises InvalidInput."""
    prepared = prepare_many(uploads, limit)
    return [save(p, uploader=uploader, village=village) for p in prepared]


def _write_jpeg(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, "JPEG", quality=82, optimize=True)
    os.replace(tmp, path)


def earlier_copies(photo: Photo) -> list[Photo]:
    """Return earlier photos with the same content in the village: a possible duplicate claim."""
    return list(
        db.session.scalars(
            sa.select(Photo)
            .where(
                Photo.sha256 == photo.sha256,
                Photo.village_id == photo.village_id,
                Photo.id < photo.id,
            )
            .order_by(Photo.id)
        )
    )


def earlier_copies_of(photos: Sequence[Photo]) -> dict[int, list[Photo]]:
    """Return, for each photo id, the earlier photos of its village with the same content.

    One query for a whole verification queue.
    """
    if not photos:
        return {}
    rows = db.session.scalars(
        sa.select(Photo)
        .where(
            Photo.sha256.in_({p.sha256 for p in photos}),
            Photo.village_id.in_({p.village_id for p in photos}),
        )
        .order_by(Photo.id)
    ).all()
    return {
        photo.id: [
            other
            for other in rows
            if other.sha256 == photo.sha256
            and other.village_id == photo.village_id
            and other.id < photo.id
        ]
        for photo in photos
    }


#: Records whose photos are the evidence of the transfers they caused (by source).
SOURCES = ("claim", "report", "rating")


def evidence_for(transfers: Sequence[Transfer]) -> dict[int, list[Photo]]:
    """Return each transfer's evidence photos: its own, or its claim's, report's or rating's.

    One query for a whole history page, whatever its length.
    """
    conditions = []
    if transfers:
        conditions.append(Photo.transfer_id.in_({t.id for t in transfers}))
    for kind in SOURCES:
        ids = {t.source_id for t in transfers if t.source_type == kind}
        if ids:
            conditions.append(getattr(Photo, f"{kind}_id").in_(ids))
    if not conditions:
        return {}
    photos = db.session.scalars(sa.select(Photo).where(sa.or_(*conditions)).order_by(Photo.id))
    by_owner: dict[tuple[str, int], list[Photo]] = {}
    for photo in photos:
        for kind in ("transfer", *SOURCES):
            owner = getattr(photo, f"{kind}_id")
            if owner is not None:
                by_owner.setdefault((kind, owner), []).append(photo)
    result = {}
    for t in transfers:
        found = by_owner.get(("transfer", t.id), []) + (
            by_owner.get((t.source_type, t.source_id), []) if t.source_type in SOURCES else []
        )
        if found:
            result[t.id] = found
    return result
