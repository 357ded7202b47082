"""Serving evidence photos: to the people of the photo's village only, always as a plain JPEG."""

from __future__ import annotations

import html
import io

import pytest
import sqlalchemy as sa
from flask_babel import gettext
from PIL import ExifTags, Image

from pointsmart.extensions import db
from pointsmart.models import Claim, Photo, Role
from pointsmart.services import photos
from tests.conftest import login
from tests.services.test_photos import image_bytes, jpeg_with_gps


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    with app.app_context(), app.test_request_context():
        return gettext(message, **values)


@pytest.fixture
def place(make, app, tmp_path):
    app.config["PHOTO_FOLDER"] = str(tmp_path / "photos")
    village = make.village()
    group, other_group = make.group(village), make.group(village)
    household = make.household(group)
    villager = make.villager(household)
    photo = photos.store(jpeg_with_gps(size=(900, 600)), uploader=villager, village=village)
    away = make.village(village.town)
    away_household = make.household(make.group(away))
    shop = make.shop(village)
    people = {
        "villager": villager,
        "neighbour": make.villager(make.household(other_group)),
        "village cadre": make.staff(Role.CADRE, village),
        "group cadre": make.staff(Role.CADRE, other_group),
        "committee": make.staff(Role.COMMITTEE, village),
    }
    strangers = {
        "clerk of the village shop": make.staff(Role.CLERK, shop),
        "town administrator": make.staff(Role.ADMIN, village.town),
        "villager of another village": make.villager(away_household),
        "cadre of another village": make.staff(Role.CADRE, away),
        "cadre of a group elsewhere": make.staff(Role.CADRE, make.group(away)),
        "committee of another village": make.staff(Role.COMMITTEE, away),
    }
    db.session.commit()
    return {"photo": photo, "people": people, "strangers": strangers, "village": village}


@pytest.mark.parametrize("suffix", ["", "/thumb"])
@pytest.mark.parametrize(
    "who", ["villager", "neighbour", "village cadre", "group cadre", "committee"]
)
def test_people_of_the_village_get_a_plain_private_jpeg(app, place, who, suffix):
    client = app.test_client()
    login(client, place["people"][who])
    photo = place["photo"]
    response = client.get(f"/photos/{photo.token}{suffix}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("inline")
    assert response.cache_control.private and not response.cache_control.public
    assert "Cookie" in response.headers["Vary"]
    with Image.open(io.BytesIO(response.data)) as served:
        assert served.format == "JPEG"
        assert not served.getexif()  # GPS and the rest were dropped on upload
        assert max(served.size) == (photos.THUMB_EDGE if suffix else 900)


def test_a_served_photo_can_be_revalidated_without_sending_it_again(client, login_as, place):
    login_as(place["people"]["villager"])
    url = f"/photos/{place['photo'].token}"
    first = client.get(url)
    again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and not again.data


@pytest.mark.parametrize("suffix", ["", "/thumb"])
@pytest.mark.parametrize(
    "who",
    [
        "clerk of the village shop",
        "town administrator",
        "villager of another village",
        "cadre of another village",
        "cadre of a group elsewhere",
        "committee of another village",
    ],
)
def test_everyone_else_gets_not_found_never_forbidden(app, place, who, suffix):
    client = app.test_client()
    login(client, place["strangers"][who])
    response = client.get(f"/photos/{place['photo'].token}{suffix}")
    assert response.status_code == 404
    assert b"\xff\xd8" not in response.data  # no JPEG in the error page


def test_anonymous_visitors_are_sent_to_log_in(client, place):
    response = client.get(f"/photos/{place['photo'].token}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_a_photo_is_found_by_its_token_only(client, login_as, place):
    photo = place["photo"]
    login_as(place["people"]["committee"])
    for guess in (str(photo.id), photo.sha256, photo.token[:-1], photo.file_name, "../photos"):
        assert client.get(f"/photos/{guess}").status_code == 404
    assert client.get(f"/photos/{photo.token}").status_code == 200


def test_a_photo_whose_file_is_gone_is_not_found(client, login_as, place):
    photo = place["photo"]
    (photos.folder() / photo.file_name).unlink()
    login_as(place["people"]["villager"])
    assert client.get(f"/photos/{photo.token}").status_code == 404
    assert client.get(f"/photos/{photo.token}/thumb").status_code == 200


# --- uploads through a form ----------------------------------------------------------------


def claim_form(*uploads, description="打扫了村口", key="k1"):
    return {"description": description, "rule": "0", "key": key, "photos": list(uploads)}


def test_an_uploaded_photo_is_served_without_its_gps(client, login_as, place):
    login_as(place["people"]["villager"])
    original = jpeg_with_gps(size=(300, 200))
    response = client.post(
        "/me/claims/new",
        data=claim_form((io.BytesIO(original), "IMG_0001.jpg")),
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    photo = db.session.scalar(sa.select(Photo).where(Photo.claim_id.is_not(None)))
    served = client.get(f"/photos/{photo.token}")
    assert served.status_code == 200
    assert b"Exif" not in served.data
    with Image.open(io.BytesIO(served.data)) as image:
        assert not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"<html><body>not a photo</body></html>", "photo.jpg"),
        (b"plain text", "photo.jpg"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "photo.svg"),
    ],
)
def test_a_renamed_text_or_html_file_is_refused_and_nothing_is_stored(
    app, client, login_as, place, data, name
):
    login_as(place["people"]["villager"])
    before = db.session.scalar(sa.select(sa.func.count()).select_from(Photo))
    response = client.post(
        "/me/claims/new",
        data=claim_form((io.BytesIO(image_bytes("PNG")), "ok.png"), (io.BytesIO(data), name)),
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert translated(
        app, "This file is not a photo: only JPEG, PNG or WebP are accepted."
    ) in text(response)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Photo)) == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Claim)) == 0
    assert "打扫了村口" in text(response)  # what the villager typed is still there


def test_an_upload_over_the_request_limit_gets_a_clear_413_page(app, client, login_as, place):
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    login_as(place["people"]["villager"])
    # The body is built here: the test client would spool a large one to a temporary file
    # that nobody closes when the application refuses to read it.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="photos"; filename="big.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * (2 * 1024 * 1024) + b"\r\n--b--\r\n"
    )
    response = client.post(
        "/me/claims/new", data=body, content_type="multipart/form-data; boundary=b"
    )
    assert response.status_code == 413
    page = text(response)
    assert (
        translated(
            app,
            "The upload is too large: at most %(mb)s MB can be sent at once. Nothing was saved. "
            "Please go back and send fewer or smaller photos.",
            mb=1,
        )
        in page
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Claim)) == 0


def test_the_default_request_limit_fits_four_phone_photos(app):
    assert app.config["MAX_CONTENT_LENGTH"] >= 4 * app.config["PHOTO_MAX_BYTES"]
