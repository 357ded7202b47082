"""Photo uploads: checked by content, re-encoded without EXIF (GPS), thumbnailed, stored privately."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l
from PIL import Image, ImageOps, UnidentifiedImageError

from ..extensions import db
from ..models import Photo, User, Village
from .errors import InvalidInput

log = logging.getLogger(__name__)

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP"}
MAX_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000  # larger is a decompression bomb, not a phone photo
STORED_EDGE = 1600
THUMB_EDGE = 320


def folder() -> Path:
    """Return the folder photos are kept in (PHOTO_FOLDER, default instance/photos)."""
    path = Path(
        current_app.config.get("PHOTO_FOLDER") or Path(current_app.instance_path) / "photos"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read(upload) -> bytes:
    if isinstance(upload, bytes):
        return upload
    data = upload.read(MAX_BYTES + 1)
    return data


def store(upload, *, uploader: User, village: Village) -> Photo:
    """Validate an uploaded image and keep a re-encoded copy and a thumbnail; return the Photo.

    ``upload`` is a werkzeug FileStorage or raw bytes. Raises InvalidInput for anything that
    is not a real JPEG, PNG or WebP image of sensible size.
    """
    data = _read(upload)
    if not data:
        raise InvalidInput(_l("The photo is empty."))
    if len(data) > MAX_BYTES:
        raise InvalidInput(_l("The photo is larger than %(mb)s MB.", mb=MAX_BYTES // (1024 * 1024)))
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ALLOWED_FORMATS:
                raise InvalidInput(_l("Only JPEG, PNG or WebP photos are accepted."))
            if probe.width * probe.height > MAX_PIXELS:
                raise InvalidInput(_l("The photo has too many pixels."))
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            # Apply the EXIF rotation, then drop EXIF (and GPS) entirely by re-encoding.
            image = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidInput(_l("This file is not a readable photo.")) from None
    image.thumbnail((STORED_EDGE, STORED_EDGE))
    photo = Photo(
        village_id=village.id,
        sha256=hashlib.sha256(data).hexdigest(),
        width=image.width,
        height=image.height,
        size_bytes=len(data),
        uploaded_by_id=uploader.id,
    )
    db.session.add(photo)
    db.session.flush()
    target = folder()
    _write_jpeg(image, target / photo.file_name)
    image.thumbnail((THUMB_EDGE, THUMB_EDGE))
    _write_jpeg(image, target / photo.thumb_name)
    log.info("user %s uploaded photo %s (%s bytes)", uploader.id, photo.id, len(data))
    return photo


def store_many(
    uploads: Iterable, *, uploader: User, village: Village, limit: int = 4
) -> list[Photo]:
    """Store each non-empty upload; refuse more than ``limit``. Raises InvalidInput."""
    uploads = [u for u in uploads if u is not None and (isinstance(u, bytes) or u.filename)]
    if len(uploads) > limit:
        raise InvalidInput(_l("At most %(n)s photos per record.", n=limit))
    return [store(u, uploader=uploader, village=village) for u in uploads]


def _write_jpeg(image: Image.Image, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
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
                Photo.id != photo.id,
            )
            .order_by(Photo.id)
        )
    )
