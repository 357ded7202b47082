"""Courtyard rating rounds (美丽庭院评比) for the committee: open, close, results."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import InputRequired, Length

from .. import access
from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..models import RatingRound, RatingRoundStatus, Role, Village
from ..services import ratings
from ..services.errors import DomainError
from ..timeutil import utcnow
from . import bp, committee_villages


def _star_field(stars: int) -> IntegerField:
    return IntegerField(
        "★" * stars,
        validators=[InputRequired()],
        default=ratings.DEFAULT_STAR_POINTS[stars - 1],
        render_kw={"inputmode": "numeric", "min": 0, "max": ratings.MAX_STAR_POINTS},
    )


class RatingRoundForm(FlaskForm):
    village_id = SelectField(_l("Village"), coerce=int)
    title = StringField(
        _l("Title"),
        validators=[InputRequired(), Length(max=ratings.MAX_TITLE_LENGTH)],
        render_kw={"placeholder": _l("e.g. Beautiful courtyards, spring")},
    )
    criteria = StringField(
        _l("Criteria, separated by commas or 、"),
        validators=[InputRequired(), Length(max=200)],
        default="、".join(ratings.DEFAULT_CRITERIA),
    )
    star1 = _star_field(1)
    star2 = _star_field(2)
    star3 = _star_field(3)
    star4 = _star_field(4)
    star5 = _star_field(5)

    def star_fields(self):
        return [self.star1, self.star2, self.star3, self.star4, self.star5]


def get_rating_round_or_404(rating_round_id: int) -> RatingRound:
    """Return a round of one of the member's villages; 404 for any other."""
    round_ = db.session.get(RatingRound, rating_round_id)
    if round_ is None or not access.covers_village(current_user, round_.village, Role.COMMITTEE):
        abort(404)
    return round_


@bp.get("/ratings/")
@role_required(Role.COMMITTEE)
def rating_rounds():
    """List the rating rounds of the member's villages."""
    rounds = ratings.rounds_of(committee_villages())
    return render_template("committee/ratings/list.html", rounds=rounds)


@bp.route("/ratings/new", methods=["GET", "POST"])
@role_required(Role.COMMITTEE)
def open_rating_round():
    """Open a rating round with its criteria and stars-to-points table."""
    form = RatingRoundForm()
    villages = db.session.scalars(
        sa.select(Village).where(Village.id.in_(committee_villages())).order_by(Village.name)
    )
    form.village_id.choices = [SelectChoice(village.id, village.name) for village in villages]
    if form.validate_on_submit():
        village = db.session.get(Village, form.village_id.data)
        try:
            round_ = ratings.open_round(
                village,
                title=form.title.data,
                opener=current_user,
                criteria=ratings.split_criteria(form.criteria.data),
                star_points=[field.data for field in form.star_fields()],
            )
            db.session.commit()
            flash(_("Rating round opened: %(title)s.", title=round_.title), "success")
            return redirect(url_for(".rating_round", rating_round_id=round_.id))
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return render_template("committee/ratings/new.html", form=form)


@bp.get("/ratings/<int:rating_round_id>")
@role_required(Role.COMMITTEE)
def rating_round(rating_round_id: int):
    """Show a round's results: a printable one-page notice of the star households."""
    round_ = get_rating_round_or_404(rating_round_id)
    rows = ratings.results(round_)
    by_stars = {stars: 0 for stars in range(5, 0, -1)}
    for row in rows:
        by_stars[row.stars] += 1
    return render_template(
        "committee/ratings/round.html",
        round=round_,
        rows=rows,
        by_stars=by_stars,
        stars_published=ratings.star_households(round_),
        star_min=ratings.STAR_HOUSEHOLD_MIN_STARS,
        is_open=round_.status is RatingRoundStatus.OPEN,
        now=utcnow(),
    )


@bp.post("/ratings/<int:rating_round_id>/close")
@role_required(Role.COMMITTEE)
def close_rating_round(rating_round_id: int):
    """Close a round: no more ratings; its star households can be published."""
    round_ = get_rating_round_or_404(rating_round_id)
    if EmptyForm().validate_on_submit():
        try:
            ratings.close_round(round_, current_user)
            db.session.commit()
            flash(_("Round closed: %(title)s.", title=round_.title), "success")
        except DomainError as error:
            db.session.rollback()
            flash(str(error.message), "error")
    return redirect(url_for(".rating_round", rating_round_id=round_.id))
