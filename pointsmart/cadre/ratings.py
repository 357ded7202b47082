"""Rating courtyards in the field (美丽庭院评比): one phone page per round and household.

Inspectors are cadres and committee members; each sees the households their grants reach.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import MultipleFileField, RadioField, SelectChoice
from wtforms.validators import AnyOf, InputRequired

from .. import access
from ..auth import role_required
from ..extensions import db
from ..models import Household, RatingRound, RatingRoundStatus, Role, TransferStatus
from ..services import photos as photo_service
from ..services import ratings
from ..services.errors import DomainError
from . import bp

INSPECTORS = (Role.CADRE, Role.COMMITTEE)


class _RatingForm(FlaskForm):
    photos = MultipleFileField(
        _l("Photos (up to 4)"), render_kw={"accept": "image/jpeg,image/png,image/webp"}
    )


def rating_form(criteria: list[str]) -> FlaskForm:
    """Return a form with one 1-5 star choice per criterion, named c0, c1, ..."""

    class RatingForm(_RatingForm):
        pass

    for i, name in enumerate(criteria):
        field = RadioField(
            name,
            choices=[SelectChoice(stars, str(stars)) for stars in range(1, 6)],
            coerce=int,
            validate_choice=False,  # AnyOf below says what is wrong in words
            validators=[
                InputRequired(_l("Please give stars for %(name)s.", name=name)),
                AnyOf(
                    range(1, 6),
                    _l("Stars for %(name)s must be a whole number from 1 to 5.", name=name),
                ),
            ],
        )
        setattr(RatingForm, f"c{i}", field)
    return RatingForm()


def get_round_or_404(rating_round_id: int) -> RatingRound:
    """Return a round of a village where the user rates households; 404 for any other."""
    round_ = db.session.get(RatingRound, rating_round_id)
    if round_ is None or not ratings.can_inspect(current_user, round_):
        abort(404)
    return round_


def get_household_or_404(round_: RatingRound, household_id: int) -> Household:
    """Return a household of the round's village within the user's reach; 404 otherwise."""
    household = db.session.get(Household, household_id)
    if (
        household is None
        or household.group.village_id != round_.village_id
        or not access.covers_household(current_user, household, access.RECORDERS)
    ):
        abort(404)
    return household


@bp.get("/ratings/")
@role_required(*INSPECTORS)
def rating_rounds():
    """List the open rating rounds of the villages the user rates in."""
    rounds = ratings.open_rounds_for(current_user)
    left = {round_.id: len(ratings.unrated_households(round_, current_user)) for round_ in rounds}
    return render_template("cadre/ratings/list.html", rounds=rounds, left=left)


@bp.get("/ratings/<int:rating_round_id>")
@role_required(*INSPECTORS)
def rate_households(rating_round_id: int):
    """List the households of the user's reach that this round has not rated yet."""
    round_ = get_round_or_404(rating_round_id)
    is_open = round_.status is RatingRoundStatus.OPEN
    households = ratings.unrated_households(round_, current_user) if is_open else []
    return render_template(
        "cadre/ratings/round.html", round=round_, households=households, is_open=is_open
    )


@bp.route("/ratings/<int:rating_round_id>/households/<int:household_id>", methods=["GET", "POST"])
@role_required(*INSPECTORS)
def rate_household(rating_round_id: int, household_id: int):
    """Rate one household: 1-5 stars per criterion and up to four photos."""
    round_ = get_round_or_404(rating_round_id)
    household = get_household_or_404(round_, household_id)
    existing = ratings.find_rating(round_, household)
    form = rating_form(round_.criteria)
    if form.validate_on_submit():
        scores = {name: form[f"c{i}"].data for i, name in enumerate(round_.criteria)}
        name = household.name
        try:
            # A household already rated needs no new photos: the service answers alone.
            uploads = [] if existing else request.files.getlist(form.photos.name)
            stored = photo_service.store_many(
                uploads, uploader=current_user, village=round_.village, limit=ratings.MAX_PHOTOS
            )
            rating, created = ratings.rate(
                round_, household, inspector=current_user, scores=scores, photos=stored
            )
            if created:
                db.session.commit()
                flash(_saved_message(name, rating), "success")
            else:
                db.session.rollback()  # a repeat: nothing new to keep
                flash(_("This rating of %(household)s was already saved.", household=name), "info")
            return redirect(url_for(".rate_households", rating_round_id=round_.id))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template(
        "cadre/ratings/rate.html",
        round=round_,
        household=household,
        form=form,
        existing=existing,
        is_open=round_.status is RatingRoundStatus.OPEN,
    )


def _saved_message(name: str, rating) -> str:
    award = rating.transfer
    if award is None:
        return _("Saved: %(household)s, %(stars)s stars.", household=name, stars=rating.stars)
    if award.status is TransferStatus.POSTED:  # the village auto-approves awards this small
        return _(
            "Saved: %(household)s, %(stars)s stars; %(points)s points added.",
            household=name,
            stars=rating.stars,
            points=award.amount,
        )
    return _(
        "Saved: %(household)s, %(stars)s stars; %(points)s points await approval.",
        household=name,
        stars=rating.stars,
        points=award.amount,
    )
