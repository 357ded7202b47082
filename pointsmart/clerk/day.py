"""End of the day at the shop: what was redeemed and voided, goods handed over, stock left.

Printable on A4 and exportable as .xlsx and .csv with Chinese headers; closing the day keeps its
figures as they stood, and the page says when anything changed after the closing.
"""

from __future__ import annotations

import csv
import io
from datetime import date

from flask import Response, flash, redirect, render_template, request, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_login import current_user
from openpyxl import Workbook
from openpyxl.styles import Font

from ..auth import role_required
from ..auth.forms import EmptyForm
from ..extensions import db
from ..models import Role, Shop
from ..services import redemptions
from ..services.errors import DomainError
from ..spreadsheets import safe_rows
from ..timeutil import local_today
from . import bp, managed_shop_or_404

MANAGERS = (Role.CLERK, Role.ADMIN)


def _day_arg() -> date | None:
    """Return the ?date= argument as a date; today when absent; None when unusable."""
    text = (request.args.get("date") or "").strip()
    if not text:
        return local_today()
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        return None
    return day if date(2000, 1, 1) <= day <= local_today() else None


def _summary_or_redirect(shop: Shop):
    day = _day_arg()
    if day is None:
        flash(_("Please choose a day that has already begun, as YYYY-MM-DD."), "error")
        return None, redirect(url_for(".day", shop_id=shop.id))
    return redemptions.day_summary(shop, day), None


@bp.get("/shops/<int:shop_id>/day")
@role_required(*MANAGERS)
def day(shop_id: int):
    """Show a day's closing report (today by default), printable on A4."""
    shop = managed_shop_or_404(shop_id)
    summary, redirect_ = _summary_or_redirect(shop)
    if redirect_:
        return redirect_
    closing = redemptions.closing_of(shop, summary.day)
    changed = closing is not None and closing.figures != summary.figures()
    return render_template(
        "clerk/day.html",
        shop=shop,
        summary=summary,
        closing=closing,
        changed=changed,
        form=EmptyForm(),
        can_close=current_user.has_role(Role.CLERK),
    )


@bp.post("/shops/<int:shop_id>/day/close")
@role_required(Role.CLERK)
def close_day(shop_id: int):
    """Sign off the day's figures as they stand now."""
    shop = managed_shop_or_404(shop_id)
    day_ = _day_arg()
    if not EmptyForm().validate_on_submit() or day_ is None:
        flash(_("Nothing was closed: please try again."), "error")
        return redirect(url_for(".day", shop_id=shop.id))
    try:
        closing, created = redemptions.close_day(shop, day_, current_user)
    except DomainError as error:
        db.session.rollback()
        flash(_("Nothing was closed: %(reason)s", reason=error.message), "error")
        return redirect(url_for(".day", shop_id=shop.id, date=day_.isoformat()))
    db.session.commit()
    if created:
        flash(_("Day closed. Print or download the report for the records."), "success")
    else:
        flash(
            _(
                "This day was already closed by %(name)s at %(time)s.",
                name=closing.closed_by.display_name,
                time=format_datetime(closing.closed_at, "HH:mm"),
            ),
            "info",
        )
    return redirect(url_for(".day", shop_id=shop.id, date=day_.isoformat()))


def _rows(summary: redemptions.DaySummary) -> tuple[list[list], list[list], list[list]]:
    """Return (totals, items, redemptions) tables with their header rows."""
    totals = [
        [
            _("Shop"),
            _("Day"),
            _("Redemptions"),
            _("Households served"),
            _("Points redeemed"),
            _("Voids"),
            _("Points given back"),
            _("Net points"),
        ],
        [
            None,
            summary.day.isoformat(),
            len(summary.redemptions),
            summary.households,
            summary.redeemed_points,
            len(summary.voids),
            summary.voided_points,
            summary.net_points,
        ],
    ]
    items = [
        [
            _("Item"),
            _("Redeemed"),
            _("Returned by voids"),
            _("Received"),
            _("Written off"),
            _("Net points"),
            _("Stock at day's end"),
        ]
    ]
    for i in summary.items:
        items.append(
            [i.name, i.redeemed, i.returned, i.received, i.written_off, i.points, i.stock_end]
        )
    lines = [
        [
            _("Time"),
            _("Receipt no."),
            _("Household"),
            _("Group"),
            _("Goods"),
            _("Points"),
            _("Voided points"),
            _("Clerk"),
        ]
    ]
    for r in summary.redemptions:
        lines.append(
            [
                format_datetime(r.created_at, "HH:mm"),
                r.id,
                r.household.name,
                r.household.group.name,
                "、".join(f"{line.item_name}×{line.quantity}" for line in r.lines),
                r.total_points,
                r.voided_points,
                r.clerk.display_name,
            ]
        )
    return totals, items, lines


def _filename(shop: Shop, day_: date, suffix: str) -> str:
    return f"shop-{shop.id}-{day_.isoformat()}.{suffix}"


@bp.get("/shops/<int:shop_id>/day.xlsx")
@role_required(*MANAGERS)
def day_xlsx(shop_id: int):
    """Download the day's report as an Excel workbook with Chinese headers."""
    shop = managed_shop_or_404(shop_id)
    summary, redirect_ = _summary_or_redirect(shop)
    if redirect_:
        return redirect_
    totals, items, lines = _rows(summary)
    totals[1][0] = shop.name
    book = Workbook()
    for sheet, (title, rows) in enumerate(
        [(_("Summary"), totals), (_("Goods"), items), (_("Redemptions"), lines)]
    ):
        ws = book.active if sheet == 0 else book.create_sheet()
        ws.title = title
        for row in safe_rows(rows):
            ws.append(row)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for column in ws.columns:
            ws.column_dimensions[column[0].column_letter].width = 14
    out = io.BytesIO()
    book.save(out)
    return Response(
        out.getvalue(),
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={
            "Content-Disposition": f"attachment; filename={_filename(shop, summary.day, 'xlsx')}"
        },
    )


@bp.get("/shops/<int:shop_id>/day.csv")
@role_required(*MANAGERS)
def day_csv(shop_id: int):
    """Download the day's goods and redemptions as CSV (UTF-8 with BOM, for Excel)."""
    shop = managed_shop_or_404(shop_id)
    summary, redirect_ = _summary_or_redirect(shop)
    if redirect_:
        return redirect_
    totals, items, lines = _rows(summary)
    totals[1][0] = shop.name
    out = io.StringIO()
    writer = csv.writer(out)
    for table in (totals, items, lines):
        writer.writerows(safe_rows(table))
        writer.writerow([])
    return Response(
        "\ufeff" + out.getvalue(),
        mimetype="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f"attachment; filename={_filename(shop, summary.day, 'csv')}"
        },
    )
