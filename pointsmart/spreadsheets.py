"""Downloads as .xlsx and .csv: text that looks like a formula stays text, CSV opens in Excel."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flask import Response
from openpyxl import Workbook
from openpyxl.styles import Font

XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Characters that make Excel (or LibreOffice) read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """Return a value safe for a spreadsheet: text that looks like a formula stays text."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def safe_rows(rows: Iterable[Sequence]) -> list[list]:
    """Return the rows with every cell made safe (see safe_cell)."""
    return [[safe_cell(v) for v in row] for row in rows]


@dataclass
class Table:
    """One table of a download: a sheet of the workbook, a block of the CSV."""

    title: str
    header: list[str]
    rows: list[list] = field(default_factory=list)
    #: Excel number formats by column index, e.g. {3: "0.0%"}; the values stay numbers.
    formats: dict[int, str] = field(default_factory=dict)
    #: A line shown above the header (e.g. "only the newest 100,000 entries").
    note: str | None = None


def _sheet_title(title: str, used: set[str]) -> str:
    # Excel: at most 31 characters, none of []:*?/\ and unique in the workbook.
    clean = "".join("_" if c in "[]:*?/\\" else c for c in title)[:31] or "Sheet"
    name, n = clean, 2
    while name in used:
        suffix = f" ({n})"
        name, n = clean[: 31 - len(suffix)] + suffix, n + 1
    used.add(name)
    return name


def _write_only_sheet(ws, table: Table) -> None:
    from openpyxl.cell import WriteOnlyCell

    if table.note:
        ws.append([safe_cell(table.note)])
    header = []
    for text in safe_rows([table.header])[0]:
        cell = WriteOnlyCell(ws, text)
        cell.font = Font(bold=True)
        header.append(cell)
    ws.append(header)
    for row in table.rows:
        cells = []
        for index, value in enumerate(row):
            if index in table.formats:
                value = WriteOnlyCell(ws, safe_cell(value))
                value.number_format = table.formats[index]
                cells.append(value)
            else:
                cells.append(safe_cell(value))
        ws.append(cells)


def _sheet(ws, table: Table) -> None:
    if table.note:
        ws.append([safe_cell(table.note)])
    ws.append(safe_rows([table.header])[0])
    header_row = ws.max_row
    for cell in ws[header_row]:
        cell.font = Font(bold=True)
    for row in table.rows:
        ws.append([safe_cell(v) for v in row])
    for index, number_format in table.formats.items():
        for (cell,) in ws.iter_rows(min_row=header_row + 1, min_col=index + 1, max_col=index + 1):
            cell.number_format = number_format
    for column in ws.columns:
        ws.column_dimensions[column[0].column_letter].width = 14


def workbook(tables: Sequence[Table], *, write_only: bool = False) -> bytes:
    """Return an .xlsx workbook with one sheet per table, its header in bold.

    ``write_only`` streams rows (for tens of thousands of rows) at the cost of column widths.
    """
    book = Workbook(write_only=write_only)
    if not write_only:
        book.remove(book.active)
    used: set[str] = set()
    for table in tables or [Table("Sheet", [])]:
        ws = book.create_sheet(_sheet_title(table.title, used))
        (_write_only_sheet if write_only else _sheet)(ws, table)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_text(tables: Sequence[Table]) -> str:
    """Return the tables one after another, each with its title, as CSV with a UTF-8 BOM."""
    out = io.StringIO()
    writer = csv.writer(out)
    for number, table in enumerate(tables):
        if number:
            writer.writerow([])
        if len(tables) > 1:
            writer.writerow([safe_cell(table.title)])
        if table.note:
            writer.writerow([safe_cell(table.note)])
        writer.writerow(safe_rows([table.header])[0])
        writer.writerows(safe_rows(table.rows))
    return "\ufeff" + out.getvalue()


def xlsx_response(tables: Sequence[Table], filename: str, *, write_only: bool = False) -> Response:
    """Return a download of the tables as an .xlsx workbook."""
    return Response(
        workbook(tables, write_only=write_only),
        mimetype=XLSX_MIMETYPE,
        headers={"Content-Disposition": f"attachment; filename={filename}"},
    )


def csv_response(tables: Sequence[Table], filename: str) -> Response:
    """Return a download of the tables as CSV (UTF-8 with a BOM, so Excel reads the Chinese)."""
    return Response(
        csv_text(tables),
        mimetype="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename={filename}"},
    )
