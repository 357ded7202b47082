"""Serving evidence photos to the people of their village only.

Who may see a village's photos: its villagers, its committee members and its cadres (of the
whole village, of one of its groups, or of its town). Shop clerks and town administrators do
not: neither verifies nor approves evidence. Anyone else gets 404, as if the photo did not
exist, and the URL carries a random token, never a row id.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, abort, request
from flask_login import current_user

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import Household, Photo, Role, User, Village, VillagerGroup
from ..services import photos as photo_service

bp = Blueprint("media", __name__, url_prefix="/photos")

#: Browsers may keep a photo for an hour, never shared caches (proxies).
MAX_AGE = 3600


def can_see_photos_of(user: User, village: Village) -> bool:
    """Return whether the user belongs to the village as villager, cadre or committee member."""
    if access.covers_village(user, village, (Role.CADRE, Role.COMMITTEE)):
        return True
    group_ids = [g.group_id for g in user.grants if g.role is Role.CADRE and g.group_id]
    household_ids = [
        g.household_id for g in user.grants if g.role is Role.VILLAGER and g.household_id
    ]
    if not group_ids and not household_ids:
        return False
    return bool(
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(VillagerGroup)
            .outerjoin(Household, Household.group_id == VillagerGroup.id)
            .where(
                VillagerGroup.village_id == village.id,
                sa.or_(VillagerGroup.id.in_(group_ids), Household.id.in_(household_ids)),
            )
        )
    )


def _serve(token: str, thumbnail: bool) -> Response:
    photo = db.session.scalar(sa.select(Photo).where(Photo.token == token))
    if photo is None or not can_see_photos_of(current_user, photo.village):
        abort(404)
    path = photo_service.folder() / (photo.thumb_name if thumbnail else photo.file_name)
    try:
        data = path.read_bytes()  # small (at most 1600 px); no file handle outlives the request
    except FileNotFoundError:
        abort(404)
    response = Response(data, mimetype="image/jpeg")
    # A token's file never changes, so the token names the version.
    response.set_etag(f"{photo.token}-{'thumb' if thumbnail else 'full'}")
    response.cache_control.private = True
    response.cache_control.max_age = MAX_AGE
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Disposition"] = f'inline; filename="{photo.file_name}"'
    response.vary.add("Cookie")
    return response.make_conditional(request)


@bp.get("/<token>")
@role_required()
def photo(token: str):
    """Send a full-size evidence photo to a person of its village."""
    return _serve(token, thumbnail=False)


@bp.get("/<token>/thumb")
@role_required()
def thumb(token: str):
    """Send a photo's thumbnail to a person of its village."""
    return _serve(token, thumbnail=True)
