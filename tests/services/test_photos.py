"""Photo uploads: only real images are kept, re-encoded without EXIF, thumbnailed, findable."""

from __future__ import annotations

import io
import os
import string
import struct
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from PIL import ExifTags, Image
from werkzeug.datastructures import FileStorage

from pointsmart.extensions import db
from pointsmart.models import (
    Claim,
    Photo,
    Rating,
    RatingRound,
    Report,
    Role,
    Transfer,
    TransferKind,
)
from pointsmart.services import ledger, photos
from pointsmart.services.errors import InvalidInput

GPS_LATITUDE = (30.0, 15.0, 36.5)


# --- images -------------------------------------------------------------------------------


def jpeg_with_gps(size=(120, 80), orientation: int | None = None) -> bytes:
    """A JPEG whose EXIF carries a GPS position, a camera model and maybe an orientation."""
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "Village phone"
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (120.0, 9.0, 1.0)
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def image_bytes(fmt: str, size=(64, 48), mode="RGB", color=(20, 120, 20)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt)
    return out.getvalue()


def png_header(width: int, height: int, payload: bytes = b"\x00" * 4096) -> bytes:
    """A PNG that declares huge dimensions over a small compressed body: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(payload, 9))
        + chunk(b"IEND", b"")
    )


def upload(data: bytes, filename="photo.jpg", content_type="image/jpeg") -> FileStorage:
    return FileStorage(io.BytesIO(data), filename=filename, content_type=content_type)


def english(error: InvalidInput) -> str:
    with force_locale("en"):
        return str(error.message)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def folder(app, tmp_path):
    app.config["PHOTO_FOLDER"] = str(tmp_path / "photos")
    return tmp_path / "photos"


@pytest.fixture
def place(make):
    village = make.village()
    household = make.household(make.group(village))
    return {"village": village, "household": household, "user": make.villager(household)}


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def photo_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Photo))


# --- storing -------------------------------------------------------------------------------


def test_a_jpeg_is_stored_re_encoded_without_exif_or_gps_and_with_a_thumbnail(place, folder):
    original = jpeg_with_gps(size=(2400, 1200))
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    photo = photos.store(upload(original), uploader=place["user"], village=place["village"])

    assert files_in(folder) == sorted([photo.file_name, photo.thumb_name])
    stored_bytes = (folder / photo.file_name).read_bytes()
    assert b"Exif" not in stored_bytes
    assert b"Village phone" not in stored_bytes
    with Image.open(folder / photo.file_name) as stored:
        assert stored.format == "JPEG"
        assert not stored.getexif()
        assert "exif" not in stored.info
        assert stored.size == (1600, 800)  # scaled to the stored edge
    with Image.open(folder / photo.thumb_name) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) == photos.THUMB_EDGE
        assert not thumb.getexif()
    assert (photo.width, photo.height) == (1600, 800)
    assert photo.size_bytes == len(original)
    assert photo.village_id == place["village"].id
    assert photo.uploaded_by_id == place["user"].id


def test_the_exif_rotation_is_applied_before_exif_is_dropped(place, folder):
    sideways = jpeg_with_gps(size=(120, 80), orientation=6)  # "rotate 90° to display"
    photo = photos.store(sideways, uploader=place["user"], village=place["village"])
    with Image.open(folder / photo.file_name) as stored:
        assert stored.size == (80, 120)
        assert not stored.getexif()


@pytest.mark.parametrize(
    "data",
    [
        image_bytes("PNG"),
        image_bytes("WEBP"),
        image_bytes("PNG", mode="RGBA", color=(0, 0, 0, 0)),
        image_bytes("PNG", mode="P"),
        image_bytes("JPEG", mode="L", color=128),
    ],
    ids=["png", "webp", "transparent-png", "palette-png", "grey-jpeg"],
)
def test_png_webp_and_other_modes_are_kept_as_rgb_jpeg(place, folder, data):
    photo = photos.store(data, uploader=place["user"], village=place["village"])
    with Image.open(folder / photo.file_name) as stored:
        assert (stored.format, stored.mode, stored.size) == ("JPEG", "RGB", (64, 48))


def test_transparent_parts_become_white_not_black(place, folder):
    photo = photos.store(
        image_bytes("PNG", mode="RGBA", color=(0, 0, 0, 0)),
        uploader=place["user"],
        village=place["village"],
    )
    with Image.open(folder / photo.file_name) as stored:
        assert min(stored.getpixel((10, 10))) > 240


def test_photos_go_to_the_instance_folder_unless_configured(app, place):
    app.config["PHOTO_FOLDER"] = None
    photo = photos.store(image_bytes("PNG"), uploader=place["user"], village=place["village"])
    assert photos.folder() == Path(app.instance_path) / "photos"
    assert (photos.folder() / photo.file_name).is_file()


def test_the_token_is_long_random_and_unrelated_to_the_id(place, folder):
    a = photos.store(image_bytes("PNG"), uploader=place["user"], village=place["village"])
    b = photos.store(image_bytes("PNG"), uploader=place["user"], village=place["village"])
    assert a.token != b.token
    assert len(a.token) >= 32  # 192 random bits, URL-safe
    assert set(a.token) <= set(string.ascii_letters + string.digits + "-_")
    assert a.file_name == f"{a.token}.jpg"
    assert a.sha256 == b.sha256  # same content, still two photos


# --- refusing --------------------------------------------------------------------------------


TRUNCATED_JPEG = jpeg_with_gps(size=(400, 300))[:700]
TRUNCATED_PNG = image_bytes("PNG", size=(300, 300), color=(1, 2, 3))[:-30]

NOT_A_PHOTO = "This file is not a photo: only JPEG, PNG or WebP are accepted."
DAMAGED = "This photo is damaged or incomplete; please take or choose it again."
TOO_MANY_PIXELS = "The photo is too large in pixels (at most 40 megapixels)."


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"just some text, not a photo\n", "photo.jpg", NOT_A_PHOTO),
        (b"<!doctype html><script>alert(1)</script>", "photo.jpg", NOT_A_PHOTO),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b"<script>alert(1)</script></svg>",
            "photo.svg",
            NOT_A_PHOTO,
        ),
        (image_bytes("GIF"), "photo.gif", NOT_A_PHOTO),
        (image_bytes("BMP"), "photo.jpg", NOT_A_PHOTO),
        (TRUNCATED_JPEG, "photo.jpg", DAMAGED),
        (TRUNCATED_PNG, "photo.png", DAMAGED),
        (b"", "photo.jpg", "The photo is empty."),
        (png_header(8000, 6000), "photo.png", TOO_MANY_PIXELS),  # above our limit only
        (png_header(10000, 10000), "photo.png", TOO_MANY_PIXELS),  # Pillow warns
        (png_header(20000, 20000), "photo.png", TOO_MANY_PIXELS),  # Pillow refuses
    ],
    ids=[
        "text-named-jpg",
        "html-named-jpg",
        "svg",
        "gif",
        "bmp",
        "truncated-jpeg",
        "truncated-png",
        "empty",
        "48-megapixels",
        "bomb-100-megapixels",
        "bomb-400-megapixels",
    ],
)
def test_anything_but_a_sound_jpeg_png_or_webp_is_refused_and_nothing_is_kept(
    place, folder, data, filename, message
):
    with pytest.raises(InvalidInput) as refused:
        photos.store(upload(data, filename), uploader=place["user"], village=place["village"])
    assert english(refused.value) == message
    assert photo_count() == 0
    assert files_in(folder) == []


def test_an_oversized_file_is_refused_before_it_is_decoded(app, place, folder):
    app.config["PHOTO_MAX_BYTES"] = 1024 * 1024
    noise = io.BytesIO()
    Image.frombytes("RGB", (640, 640), os.urandom(640 * 640 * 3)).save(noise, "PNG")
    assert len(noise.getvalue()) > 1024 * 1024
    with pytest.raises(InvalidInput) as refused:
        photos.store(upload(noise.getvalue()), uploader=place["user"], village=place["village"])
    assert english(refused.value) == "A photo may be at most 1 MB."
    assert photo_count() == 0 and files_in(folder) == []
    photos.store(image_bytes("PNG"), uploader=place["user"], village=place["village"])
    assert photo_count() == 1  # a small one is fine


def test_store_many_checks_every_photo_before_writing_any(place, folder):
    good = image_bytes("PNG")
    with pytest.raises(InvalidInput) as refused:
        photos.store_many(
            [upload(good), upload(good), upload(b"<html>", "x.jpg")],
            uploader=place["user"],
            village=place["village"],
        )
    assert english(refused.value) == NOT_A_PHOTO
    assert photo_count() == 0 and files_in(folder) == []


def test_store_many_refuses_a_fifth_photo_and_skips_empty_file_inputs(place, folder):
    good = image_bytes("PNG")
    with pytest.raises(InvalidInput) as refused:
        photos.store_many([good] * 5, uploader=place["user"], village=place["village"])
    assert english(refused.value) == "At most 4 photos per record."
    assert photo_count() == 0 and files_in(folder) == []

    empty_input = FileStorage(io.BytesIO(b""), filename="", content_type="application/octet-stream")
    stored = photos.store_many(
        [upload(good), empty_input], uploader=place["user"], village=place["village"]
    )
    assert len(stored) == 1


# --- duplicates and evidence -------------------------------------------------------------------


def test_earlier_copies_are_found_in_the_same_village_only(make, place, folder):
    data = jpeg_with_gps()
    first = photos.store(data, uploader=place["user"], village=place["village"])
    other_village = make.village(place["village"].town)
    elsewhere = photos.store(data, uploader=place["user"], village=other_village)
    different = photos.store(image_bytes("PNG"), uploader=place["user"], village=place["village"])
    again = photos.store(data, uploader=place["user"], village=place["village"])

    assert photos.earlier_copies(again) == [first]
    assert photos.earlier_copies(first) == []  # the first one is not a copy of a later one
    assert photos.earlier_copies(elsewhere) == []
    assert photos.earlier_copies(different) == []
    assert photos.earlier_copies_of([first, again, elsewhere, different]) == {
        first.id: [],
        again.id: [first],
        elsewhere.id: [],
        different.id: [],
    }


def count_queries(app):
    statements = []

    def before(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", before)
    return statements, lambda: sa.event.remove(db.engine, "before_cursor_execute", before)


def test_evidence_for_loads_own_claim_report_and_rating_photos_in_one_query(
    app, make, place, folder
):
    household, user = place["household"], place["user"]
    village = place["village"]
    cadre = make.staff(Role.CADRE, village)
    claim = Claim(
        idempotency_key="c1", household_id=household.id, submitted_by_id=user.id, description="扫地"
    )
    report = Report(
        idempotency_key="r1",
        village_id=village.id,
        reporter_household_id=household.id,
        submitted_by_id=user.id,
        what="乱倒垃圾",
        location="河边",
    )
    round_ = RatingRound(
        village_id=village.id,
        title="春季",
        criteria=["洁"],
        star_points=[0, 0, 0, 5, 10],
        opened_by_id=cadre.id,
    )
    db.session.add_all([claim, report, round_])
    db.session.flush()
    rating = Rating(
        round_id=round_.id,
        household_id=household.id,
        inspector_id=cadre.id,
        scores={"洁": 5},
        stars=5,
    )
    db.session.add(rating)
    db.session.flush()
    transfers = []
    sources = [None, ("claim", claim.id), ("report", report.id), None, ("rating", rating.id)]
    for n, source in enumerate(sources):
        transfers.append(
            ledger.record(
                kind=TransferKind.AWARD,
                household=household,
                points=5,
                reason="保洁",
                recorded_by=cadre,
                key=f"t{n}",
                source=source,
            )
        )
    own = photos.store(image_bytes("PNG"), uploader=cadre, village=village)
    own.attach(transfer=transfers[0])
    claimed = [photos.store(image_bytes("PNG"), uploader=user, village=village) for _ in range(2)]
    for photo in claimed:
        photo.attach(claim=claim)
    reported = photos.store(image_bytes("WEBP"), uploader=user, village=village)
    reported.attach(report=report)
    rated = photos.store(image_bytes("JPEG"), uploader=cadre, village=village)
    rated.attach(rating=rating)
    db.session.commit()
    transfers = db.session.scalars(sa.select(Transfer).order_by(Transfer.id)).all()  # as a page

    statements, stop = count_queries(app)
    try:
        evidence = photos.evidence_for(transfers)
    finally:
        stop()
    assert len(statements) == 1
    assert evidence == {
        transfers[0].id: [own],
        transfers[1].id: claimed,
        transfers[2].id: [reported],
        transfers[4].id: [rated],
    }
    assert photos.evidence_for([]) == {}
