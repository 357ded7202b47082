"""Reports of a town, a village or a group for a period: on screen with charts, .xlsx and .csv.

Town administrators see their town, its villages and groups; committee members their
villages and groups. Any other place answers 404. Screen and downloads read one
``services.reports.Report``, so they always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from flask import abort, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..auth import role_required
from ..charts import Series, bar_chart, line_chart
from ..committee import parse_id
from ..labels import category_label
from ..main.rankings import _form_values, _shortcuts
from ..models import Category, Role, Town, User
from ..services import rankings, reports
from ..services.errors import InvalidInput, NotFound
from ..services.rankings import Period, PeriodKind, Scope, ScopeKind
from ..spreadsheets import Table, csv_response, xlsx_response
from ..timeutil import local_today
from . import bp

VIEWERS = (Role.ADMIN, Role.COMMITTEE)
PERCENT = "0.0%"
YUAN = "#,##0.00"


# --- who sees which places -----------------------------------------------------------------------


def _town_and_village(scope: Scope) -> tuple[int, int | None]:
    place = scope.place
    if scope.kind is ScopeKind.GROUP:
        return place.village.town_id, place.village_id
    if scope.kind is ScopeKind.VILLAGE:
        return place.town_id, place.id
    return place.id, None


def roots(user: User) -> list[Scope]:
    """Return the places the user reports on: administered towns, then committee villages."""
    found: list[Scope] = []
    for grant in user.grants:
        if grant.role is Role.ADMIN and grant.town is not None:
            found.append(Scope(ScopeKind.TOWN, grant.town))
    for grant in user.grants:
        if grant.role is Role.COMMITTEE and grant.village is not None:
            found.append(Scope(ScopeKind.VILLAGE, grant.village))
    return found


def may_view(user: User, scope: Scope) -> bool:
    """Return whether the user may see the report of this town, village or group."""
    town_id, village_id = _town_and_village(scope)
    for grant in user.grants:
        if grant.role is Role.ADMIN and grant.town_id == town_id:
            return True
        if (
            grant.role is Role.COMMITTEE
            and village_id is not None
            and grant.village_id == village_id
        ):
            return True
    return False


def _requested_scope(mine: list[Scope]) -> Scope:
    """Return the place the query asks for, or the user's first. Raises InvalidInput, NotFound."""
    kind, raw_id = request.args.get("scope"), request.args.get("id")
    if not kind and not raw_id:
        return mine[0]
    try:
        wanted = ScopeKind(kind or "")
    except ValueError:
        raise InvalidInput(_("Choose a group, a village or a town.")) from None
    if not raw_id:
        own = next((s for s in mine if s.kind is wanted), None)
        if own is None:
            raise InvalidInput(_("Choose which place to report on."))
        return own
    place_id = parse_id(raw_id)
    if place_id is None:
        raise NotFound()
    return rankings.scope_of(wanted.value, place_id)


def _scope_or_404(mine: list[Scope]) -> tuple[Scope, str | None]:
    """Return the place asked for (404 outside the user's places) and any error to show."""
    try:
        scope = _requested_scope(mine)
    except InvalidInput as exc:
        return mine[0], str(exc.message)
    except NotFound:
        abort(404)
    if not may_view(current_user, scope):
        abort(404)
    return scope, None


# --- what the page offers ------------------------------------------------------------------------


def _url(endpoint: str, scope: Scope, period_args: dict[str, str]) -> str:
    return url_for(endpoint, scope=scope.kind.value, id=scope.id, **period_args)


def _places(scope: Scope, mine: list[Scope]) -> tuple[list[Scope], list[Scope]]:
    """Return (the places above and the user's other places, the places within) to link to."""
    above: list[Scope] = []
    if scope.kind is ScopeKind.GROUP:
        village = scope.place.village
        above = [Scope(ScopeKind.TOWN, village.town), Scope(ScopeKind.VILLAGE, village)]
    elif scope.kind is ScopeKind.VILLAGE:
        above = [Scope(ScopeKind.TOWN, scope.place.town)]
    seen = {(scope.kind, scope.id)}
    others = []
    for other in [*above, *mine]:
        key = (other.kind, other.id)
        if key not in seen and may_view(current_user, other):
            seen.add(key)
            others.append(other)
    if scope.kind is ScopeKind.TOWN:
        within = [Scope(ScopeKind.VILLAGE, v) for v in scope.place.villages]
    elif scope.kind is ScopeKind.VILLAGE:
        within = [Scope(ScopeKind.GROUP, g) for g in scope.place.groups]
    else:
        within = []
    return others, within


def _month_label(month) -> str:
    return _("%(year)s-%(month)02d", year=month.year, month=month.month)


def _categories(report: reports.Report) -> list[tuple[str, int]]:
    order = list(Category)
    ordered = sorted(
        report.issued_by_category.items(),
        key=lambda item: order.index(item[0]) if item[0] is not None else len(order),
    )
    return [(category_label(c) if c else _("No category"), points) for c, points in ordered]


def _yuan(fen: int | None) -> Decimal | None:
    """Return fen as yuan, exactly (a number in the workbook, "16.00" in the CSV)."""
    return None if fen is None else Decimal(fen).scaleb(-2)


@dataclass
class Charts:
    trend: str
    categories: str | None
    villages: str | None


def _charts(report: reports.Report) -> Charts:
    months = [month for month, *_figures in report.trend]
    spans: list[tuple[str, int, int]] = []
    for i, month in enumerate(months):
        if spans and spans[-1][0] == str(month.year):
            spans[-1] = (spans[-1][0], spans[-1][1], i)
        else:
            spans.append((str(month.year), i, i))
    trend = line_chart(
        "chart-trend",
        _("Points by month, the 12 months to %(month)s", month=_month_label(months[-1])),
        [_month_label(m) for m in months],
        [
            Series(_("Issued"), [issued for _m, issued, _d, _r in report.trend]),
            Series(_("Deducted"), [deducted for _m, _i, deducted, _r in report.trend]),
            Series(_("Redeemed"), [redeemed for _m, _i, _d, redeemed in report.trend]),
        ],
        ticks=[str(m.month) for m in months],
        spans=spans,
    )
    categories = _categories(report)
    by_category = None
    if categories:
        by_category = bar_chart(
            "chart-categories",
            _("Points issued by category"),
            [label for label, _points in categories],
            [Series(_("Issued"), [points for _label, points in categories])],
        )
    by_village = None
    if report.villages:
        by_village = bar_chart(
            "chart-villages",
            _("Points issued and deducted by village"),
            [name for name, *_figures in report.villages],
            [
                Series(_("Issued"), [issued for _n, issued, _d, _p in report.villages]),
                Series(_("Deducted"), [deducted for _n, _i, deducted, _p in report.villages]),
            ],
        )
    return Charts(trend, by_category, by_village)


# --- the tables the downloads hold ---------------------------------------------------------------


def tables(report: reports.Report) -> list[Table]:
    """Return the report as tables with Chinese headers: one sheet each in the workbook."""
    summary = Table(
        _("Summary"),
        [
            _("Place"),
            _("Period"),
            _("Households"),
            _("Households that earned points"),
            _("Participation rate"),
            _("Points issued"),
            _("Points deducted"),
            _("Points redeemed"),
            _("Outstanding spendable points"),
            _("Pending approvals"),
            _("Pending points"),
            _("Stock value (points)"),
            _("Stock value (yuan)"),
        ],
        [
            [
                report.scope.name,
                report.period.label(),
                report.households,
                report.participants,
                report.participation,
                report.issued,
                report.deducted,
                report.redeemed,
                report.outstanding,
                report.pending_count,
                report.pending_points,
                report.stock_points,
                _yuan(report.stock_cost_fen),
            ]
        ],
        {4: PERCENT, 12: YUAN},
    )
    categories = Table(
        _("By category"),
        [_("Category"), _("Points issued")],
        [[label, points] for label, points in _categories(report)],
    )
    trend = Table(
        _("By month"),
        [_("Month"), _("Points issued"), _("Points deducted"), _("Points redeemed")],
        [
            [_month_label(m), issued, deducted, redeemed]
            for m, issued, deducted, redeemed in report.trend
        ],
    )
    result = [summary, categories, trend]
    if report.scope.kind is ScopeKind.TOWN:
        result.append(
            Table(
                _("By village"),
                [_("Village"), _("Points issued"), _("Points deducted"), _("Participation rate")],
                [list(row) for row in report.villages],
                {3: PERCENT},
            )
        )
    result += [
        Table(
            _("Goods redeemed"),
            [_("Goods"), _("Units"), _("Points")],
            [[g.name, g.units, g.points] for g in report.goods],
        ),
        Table(
            _("Stock"),
            [_("Shop"), _("Goods"), _("Units left"), _("Value (points)"), _("Value (yuan)")],
            [[s.shop, s.item, s.units, s.points_value, _yuan(s.cost_fen)] for s in report.stock],
            {4: YUAN},
        ),
        Table(
            _("Cadres"),
            [_("Name"), _("Records made"), _("Points recorded"), _("Approvals given")],
            [[c.name, c.recorded, c.recorded_points, c.approved] for c in report.cadres],
        ),
    ]
    return result


def _filename(report: reports.Report, suffix: str) -> str:
    period = report.period
    when = f"{period.start:%Y-%m}"
    if period.kind is not PeriodKind.MONTH:
        when += f"_{period.end:%Y-%m}"
    return f"report-{report.scope.kind.value}-{report.scope.id}-{when}.{suffix}"


# --- the views -----------------------------------------------------------------------------------


@dataclass
class Asked:
    """What a report request asks for, once checked: the place, the period or an error."""

    mine: list[Scope]
    scope: Scope
    period: Period | None
    error: str | None


def _read_request() -> Asked:
    """Return the place and period asked for; 404 for a place outside the user's."""
    mine = roots(current_user)
    if not mine:
        abort(404)  # a grant with no place: nothing to report on
    scope, error = _scope_or_404(mine)
    period = None
    if error is None:
        try:
            period = rankings.parse_period(request.args)
        except InvalidInput as exc:
            error = str(exc.message)
    return Asked(mine, scope, period, error)


def _render(asked: Asked, report: reports.Report | None = None):
    """Render the report page, or the chooser with the error (400) when there is no report."""
    scope, period = asked.scope, asked.period
    period_args = period.args() if period else {}
    others, within = _places(scope, asked.mine)
    context = {
        "scope": scope,
        "period": period,
        "error": asked.error,
        "others": others,
        "within": within,
        "values": _form_values(period),
        "shortcuts": _shortcuts(),
        "max_month": f"{rankings.this_month():%Y-%m}",
        "max_months": rankings.MAX_MONTHS,
        "today": local_today(),
        "scope_url": lambda other: _url("admin.reports", other, period_args),
        "period_url": lambda args: _url("admin.reports", scope, args),
    }
    if report is None:
        return render_template("admin/reports/report.html", **context), 400
    villages = scope.place.villages if isinstance(scope.place, Town) else []
    return render_template(
        "admin/reports/report.html",
        **context,
        report=report,
        categories=_categories(report),
        charts=_charts(report),
        village_links={v.name: Scope(ScopeKind.VILLAGE, v) for v in villages},
        yuan=_yuan,
        xlsx_url=_url("admin.reports_xlsx", scope, period_args),
        csv_url=_url("admin.reports_csv", scope, period_args),
    )


@bp.get("/reports", endpoint="reports")
@role_required(*VIEWERS)
def reports_page():
    """Show a place's report for a period: figures, tables and charts, printable on A4."""
    asked = _read_request()
    if asked.error is not None:
        return _render(asked)
    return _render(asked, reports.build(asked.scope, asked.period))


@bp.get("/reports.xlsx", endpoint="reports_xlsx")
@role_required(*VIEWERS)
def reports_xlsx():
    """Download the report as an Excel workbook, one sheet per table, Chinese headers."""
    asked = _read_request()
    if asked.error is not None:
        return _render(asked)
    report = reports.build(asked.scope, asked.period)
    return xlsx_response(tables(report), _filename(report, "xlsx"))


@bp.get("/reports.csv", endpoint="reports_csv")
@role_required(*VIEWERS)
def reports_csv():
    """Download the report's tables as CSV (UTF-8 with a BOM, for Excel)."""
    asked = _read_request()
    if asked.error is not None:
        return _render(asked)
    report = reports.build(asked.scope, asked.period)
    return csv_response(tables(report), _filename(report, "csv"))
