"""Rankings pages: households, groups and villages by honour points, for every logged-in user.

Who sees what follows each role grant's place (its "anchor"): a villager their own group, its
village and town; a cadre or committee member the groups and villages they cover and their
town; an administrator their town and everything in it; a clerk the villages their shop serves
(the whole town for a town shop). Any other place answers 404, as if it did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from flask import abort, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..extensions import db
from ..models import Household, Role, RoleGrant, Shop, Town, User, Village, VillagerGroup
from ..services import rankings
from ..services.errors import InvalidInput, NotFound
from ..services.rankings import Period, PeriodKind, Scope, ScopeKind
from ..templating import ROLE_HOMES
from ..timeutil import local_today
from . import bp

PAGE_SIZE = 50

#: A place as the line from its town down: (town id, village id or None, group id or None).
Line = tuple[int, int | None, int | None]


def _line(scope: Scope) -> Line:
    place = scope.place
    if scope.kind is ScopeKind.GROUP:
        return (place.village.town_id, place.village_id, place.id)
    if scope.kind is ScopeKind.VILLAGE:
        return (place.town_id, place.id, None)
    return (place.id, None, None)


@dataclass(frozen=True)
class Anchor:
    """The place a role grant is about, and whether the places above it are visible too."""

    scope: Scope
    sees_above: bool

    def sees(self, scope: Scope) -> bool:
        """Return whether the grant lets its holder see the rankings of ``scope``."""
        mine, theirs = _line(self.scope), _line(scope)
        within = all(m is None or m == t for m, t in zip(mine, theirs, strict=True))
        above = all(t is None or m == t for m, t in zip(mine, theirs, strict=True))
        return within or (self.sees_above and above)

    def default(self) -> Scope:
        """Return the scope shown when none is asked for: the village, or the town."""
        if self.scope.kind is ScopeKind.GROUP:
            return Scope(ScopeKind.VILLAGE, self.scope.place.village)
        return self.scope

    def own(self, kind: ScopeKind) -> Scope | None:
        """Return the anchor's own place of that kind (its group, village or town), if any."""
        scope = self.scope
        order = list(ScopeKind)  # group, village, town: smallest first
        if order.index(kind) < order.index(scope.kind):
            return None
        while scope.kind is not kind:
            parent = scope.place.village if scope.kind is ScopeKind.GROUP else scope.place.town
            scope = Scope(order[order.index(scope.kind) + 1], parent)
        return scope


def _anchor(grant: RoleGrant) -> Anchor | None:
    place = grant.place
    if isinstance(place, Household):
        place = place.group
    if isinstance(place, Shop):  # a shop's clerks see the villages it serves, nothing above
        if place.village_id is not None:
            return Anchor(Scope(ScopeKind.VILLAGE, place.village), sees_above=False)
        return Anchor(Scope(ScopeKind.TOWN, place.town), sees_above=False)
    kind = {VillagerGroup: ScopeKind.GROUP, Village: ScopeKind.VILLAGE, Town: ScopeKind.TOWN}
    if type(place) not in kind:
        return None
    return Anchor(Scope(kind[type(place)], place), sees_above=True)


def anchors(user: User) -> list[Anchor]:
    """Return the user's anchors, those of the role of the user's home page first."""
    order = list(ROLE_HOMES)
    grants = sorted(
        user.grants, key=lambda g: (order.index(g.role) if g.role in order else len(order), g.id)
    )
    return [anchor for grant in grants if (anchor := _anchor(grant)) is not None]


def may_see(user: User, scope: Scope) -> bool:
    """Return whether the user may see the rankings of this group, village or town."""
    return any(anchor.sees(scope) for anchor in anchors(user))


def _requested_scope(mine: list[Anchor]) -> Scope:
    """Return the scope the query asks for, or the user's own. Raises InvalidInput, NotFound."""
    kind, raw_id = request.args.get("scope"), request.args.get("id")
    if not kind and not raw_id:
        return mine[0].default()
    if not raw_id:  # "scope=town": the user's own town
        try:
            wanted = ScopeKind(kind)
        except ValueError:
            raise InvalidInput(_("Choose a group, a village or a town.")) from None
        own = next((s for a in mine if (s := a.own(wanted)) is not None), None)
        if own is None:
            raise InvalidInput(_("Choose which place to rank."))
        return own
    place_id = request.args.get("id", type=int)
    if place_id is None:
        raise NotFound()
    return rankings.scope_of(kind or "", place_id)


def _above(scope: Scope) -> list[Scope]:
    """Return the village and town a scope lies in."""
    if scope.kind is ScopeKind.GROUP:
        village = scope.place.village
        return [Scope(ScopeKind.VILLAGE, village), Scope(ScopeKind.TOWN, village.town)]
    if scope.kind is ScopeKind.VILLAGE:
        return [Scope(ScopeKind.TOWN, scope.place.town)]
    return []


def _links(user: User, scope: Scope, mine: list[Anchor]) -> list[Scope]:
    """Return other places to offer: the user's own group, village and town, and the places
    the shown one lies in, where the user may see them."""
    candidates = [own for kind in ScopeKind if (own := mine[0].own(kind)) is not None]
    found: dict[tuple[ScopeKind, int], Scope] = {}
    for candidate in [*candidates, *_above(scope)]:
        key = (candidate.kind, candidate.id)
        if key != (scope.kind, scope.id) and key not in found and may_see(user, candidate):
            found[key] = candidate
    order = list(ScopeKind)
    return sorted(found.values(), key=lambda s: order.index(s.kind))


def _my_household_id(user: User) -> int | None:
    return next((g.household_id for g in user.grants if g.role is Role.VILLAGER), None)


def _form_values(period: Period | None) -> dict[str, str]:
    """Return the chooser's fields: what was asked for, else the period shown, else now."""
    today = local_today()
    shown = period or rankings.month_period(today)
    quarter_start = shown.start if shown.kind is PeriodKind.QUARTER else today.replace(day=1)
    values = {
        "month": f"{shown.start:%Y-%m}" if shown.kind is PeriodKind.MONTH else f"{today:%Y-%m}",
        "year": str(shown.start.year),
        "quarter": str((quarter_start.month - 1) // 3 + 1),
        "from": f"{shown.start:%Y-%m}",
        "to": f"{shown.end:%Y-%m}",
    }
    # Keep what was typed (right or wrong) so the person can see and fix it.
    for name in values:
        typed = (request.args.get(name) or "").strip()[:20]
        if typed:
            values[name] = typed
    return values


def _shortcuts() -> list[tuple[str, dict[str, str]]]:
    month = rankings.this_month()
    last = date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)
    return [
        (_("This month"), {"period": "month", "month": f"{month:%Y-%m}"}),
        (_("Last month"), {"period": "month", "month": f"{last:%Y-%m}"}),
        (
            _("This quarter"),
            {"period": "quarter", "year": str(month.year), "quarter": str((month.month + 2) // 3)},
        ),
        (_("This year"), {"period": "year", "year": str(month.year)}),
    ]


def _url(scope: Scope, period_args: dict[str, str], page: int = 1) -> str:
    args = {"scope": scope.kind.value, "id": scope.id, **period_args}
    return url_for("main.rankings", **args, **({"page": page} if page > 1 else {}))


@bp.get("/rankings", endpoint="rankings")
@login_required
def rankings_page():
    """Rank the households of a group, village or town by honour points in a period."""
    mine = anchors(current_user)
    if not mine:
        abort(404)  # an account with no place has nothing to rank
    error = None
    try:
        scope = _requested_scope(mine)
    except InvalidInput as exc:
        scope, error = mine[0].default(), exc.message
    except NotFound:
        abort(404)
    if not may_see(current_user, scope):
        abort(404)

    period = None
    if error is None:
        try:
            period = rankings.parse_period(request.args)
        except InvalidInput as exc:
            error = exc.message
    period_args = period.args() if period else {}
    context = {
        "scope": scope,
        "links": _links(current_user, scope, mine),
        "period": period,
        "values": _form_values(period),
        "shortcuts": _shortcuts(),
        "max_month": f"{rankings.this_month():%Y-%m}",
        "max_months": rankings.MAX_MONTHS,
        "error": error,
        "today": local_today(),
        "scope_url": lambda other: _url(other, period_args),
        "period_url": lambda args: _url(scope, args),
        "page_url": lambda n: _url(scope, period_args, n),
    }
    if error is not None:
        return render_template("main/rankings.html", **context), 400

    total = rankings.count_households(scope)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    rows = rankings.households(scope, period, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    place_rows = [] if scope.kind is ScopeKind.GROUP else rankings.places(scope, period)
    child_kind = ScopeKind.GROUP if scope.kind is ScopeKind.VILLAGE else ScopeKind.VILLAGE
    model = VillagerGroup if child_kind is ScopeKind.GROUP else Village
    # Names in the places' tables link to their own rankings where the user may open them.
    children = [Scope(child_kind, db.session.get(model, row.place_id)) for row in place_rows]
    linkable = {child.id: child for child in children if may_see(current_user, child)}
    return render_template(
        "main/rankings.html",
        **context,
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        place_rows=place_rows,
        by_participation=sorted(place_rows, key=lambda r: (r.rank_by_participation, r.name)),
        child_kind=child_kind,
        linkable=linkable,
        my_household_id=_my_household_id(current_user),
    )
