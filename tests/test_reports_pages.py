"""Report pages: figures on screen against a hand-computed town, the same numbers in the .xlsx
and the .csv, charts as well-formed SVG, who may see which place, and bad input."""

from __future__ import annotations

import csv
import html as htmllib
import io
import re
import xml.etree.ElementTree as ET

import pytest
from openpyxl import load_workbook

from pointsmart.extensions import db
from pointsmart.models import Role
from pointsmart.services.rankings import _add_months, this_month
from pointsmart.timeutil import to_local
from tests.conftest import login
from tests.services.test_reports import town  # noqa: F401  (the hand-computed world)

SVG_NS = "{http://www.w3.org/2000/svg}"


# --- reading the page ----------------------------------------------------------------------------


def _text(fragment: str) -> str:
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def element(page: str, element_id: str) -> str:
    """Return the inner HTML of the element with this id (no nesting of the same tag)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"no element #{element_id}"
    return match.group(2)


def figure(page: str, figure_id: str) -> str:
    """Return the big number of a key figure, as shown."""
    match = re.search(rf'id="{figure_id}".*?class="value">(.*?)</dd>', page, re.S)
    assert match, f"no figure #{figure_id}"
    return _text(match.group(1))


def rows(page: str, table_id: str, part: str = "tbody") -> list[list[str]]:
    """Return the text of each cell of a table's body (or foot), row by row."""
    table = element(page, table_id)
    body = re.search(rf"<{part}>(.*?)</{part}>", table, re.S).group(1)
    return [
        [_text(cell) for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def svgs(page: str) -> list[ET.Element]:
    """Return every inline SVG of the page, parsed as XML (which fails if one is malformed)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def svg_texts(svg: ET.Element) -> list[str]:
    return [el.text for el in svg.iter() if el.text and el.text.strip()]


def english(client, user) -> None:
    login(client, user)
    with client.session_transaction() as session:
        session["locale"] = "en"


def month_label(month) -> str:
    return f"{month.year}-{month.month:02d}"


@pytest.fixture
def admin(make, town):  # noqa: F811
    user = make.staff(Role.ADMIN, town["town"])
    db.session.commit()
    return user


@pytest.fixture
def as_admin(client, admin):
    english(client, admin)
    return client


# --- the town's month by hand --------------------------------------------------------------------


def test_the_towns_month_on_screen_by_hand(as_admin, town):  # noqa: F811
    response = as_admin.get("/admin/reports")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert _text(element(page, "period-label")) == month_label(this_month())
    assert figure(page, "fig-issued") == "75"
    assert figure(page, "fig-deducted") == "5"
    assert figure(page, "fig-redeemed") == "8"
    # a: 50 - 12 + 4 = 42; b: 10 - 5 = 5; c: 15 + 9 = 24; the idle household: 0.
    assert figure(page, "fig-outstanding") == "71"
    assert figure(page, "fig-participation") == "75.0%"
    assert _text(element(page, "fig-participants")) == "3 of 4 households earned points"
    assert figure(page, "fig-pending") == "1"
    assert _text(element(page, "fig-pending-points")).startswith("7 points")
    assert figure(page, "fig-stock") == "32 points"
    assert _text(element(page, "fig-stock-yuan")).startswith("16.00 yuan")
    assert rows(page, "categories-table") == [
        ["Waste sorting", "40"],
        ["Tree planting", "20"],
        ["Volunteering", "15"],
    ]
    assert rows(page, "categories-table", "tfoot") == [["Total", "75"]]
    assert rows(page, "villages-table") == [
        ["东村", "60", "5", "66.7%"],
        ["西村", "15", "0", "100.0%"],
    ]
    assert rows(page, "goods-table") == [["肥皂", "2", "8"]]
    (stock,) = rows(page, "stock-table")
    assert stock[1:] == ["肥皂", "8", "32", "16.00"]
    cadres = {row[0]: row[1:] for row in rows(page, "cadres-table")}
    # 30 + 20 + 10 + 40 awarded, 5 deducted, 7 pending: six records.
    assert cadres[town["cadre"].display_name] == ["6", "112", "0"]
    assert cadres[town["committee"].display_name] == ["0", "0", "5"]
    trend = {row[0]: row[1:] for row in rows(page, "trend-table")}
    assert len(trend) == 12
    assert trend[month_label(this_month())] == ["75", "5", "8"]
    old_month = to_local(town["old_posted_at"]).date().replace(day=1)
    assert trend[month_label(old_month)] == ["9", "0", "0"]
    assert list(trend)[0] == month_label(_add_months(this_month(), -11))


def test_a_village_and_a_group(as_admin, town):  # noqa: F811
    page = as_admin.get(f"/admin/reports?scope=village&id={town['east'].id}").get_data(True)
    assert [figure(page, f) for f in ("fig-issued", "fig-deducted", "fig-redeemed")] == [
        "60",
        "5",
        "8",
    ]
    assert figure(page, "fig-outstanding") == "47"
    assert 'id="villages-table"' not in page
    # The village's groups are offered, and the town above it.
    assert f"scope=group&amp;id={town['g1'].id}" in page
    assert f"scope=town&amp;id={town['town'].id}" in page
    page = as_admin.get(f"/admin/reports?scope=group&id={town['g1'].id}").get_data(True)
    assert figure(page, "fig-issued") == "60"
    assert _text(element(page, "fig-participants")) == "2 of 3 households earned points"


# --- downloads -----------------------------------------------------------------------------------


def _shown(cell) -> str:
    """Return a spreadsheet cell as the screen writes it."""
    value = cell.value
    if value is None:
        return "—"
    if cell.number_format == "0.0%":
        return f"{value * 100:.1f}%"
    if cell.number_format == "#,##0.00":
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _sheet_rows(sheet) -> list[list]:
    return [list(row) for row in sheet.iter_rows(min_row=2)]


def test_the_workbook_holds_the_numbers_of_the_screen(as_admin, town):  # noqa: F811
    page = as_admin.get("/admin/reports").get_data(True)
    response = as_admin.get("/admin/reports.xlsx")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    month = f"{this_month():%Y-%m}"
    assert f"report-town-{town['town'].id}-{month}.xlsx" in response.headers["Content-Disposition"]
    book = load_workbook(io.BytesIO(response.data))
    assert book.sheetnames == [
        "Summary",
        "By category",
        "By month",
        "By village",
        "Goods redeemed",
        "Stock",
        "Cadres",
    ]
    summary = book["Summary"]
    header = [c.value for c in summary[1]]
    assert header[:6] == [
        "Place",
        "Period",
        "Households",
        "Households that earned points",
        "Participation rate",
        "Points issued",
    ]
    values = dict(zip(header, summary[2], strict=True))
    # Numbers are numbers, not text.
    for name in ("Households", "Points issued", "Points deducted", "Outstanding spendable points"):
        assert isinstance(values[name].value, int), name
    assert values["Participation rate"].value == pytest.approx(0.75)
    assert values["Stock value (yuan)"].value == pytest.approx(16.0)
    screen = {
        "Points issued": figure(page, "fig-issued"),
        "Points deducted": figure(page, "fig-deducted"),
        "Points redeemed": figure(page, "fig-redeemed"),
        "Outstanding spendable points": figure(page, "fig-outstanding"),
        "Participation rate": figure(page, "fig-participation"),
        "Pending approvals": figure(page, "fig-pending"),
    }
    assert {name: _shown(values[name]) for name in screen} == screen
    assert f"{_shown(values['Stock value (points)'])} points" == figure(page, "fig-stock")
    assert _text(element(page, "fig-stock-yuan")).startswith(
        _shown(values["Stock value (yuan)"]) + " yuan"
    )
    assert _text(element(page, "fig-participants")).startswith(
        f"{values['Households that earned points'].value} of {values['Households'].value} "
    )
    for sheet, table in (
        ("By category", "categories-table"),
        ("By month", "trend-table"),
        ("By village", "villages-table"),
        ("Goods redeemed", "goods-table"),
        ("Stock", "stock-table"),
        ("Cadres", "cadres-table"),
    ):
        in_book = [[_shown(c) for c in row] for row in _sheet_rows(book[sheet])]
        assert in_book == rows(page, table), sheet
        assert in_book, sheet


def test_the_csv_holds_the_numbers_of_the_workbook(as_admin, town):  # noqa: F811
    book = load_workbook(io.BytesIO(as_admin.get("/admin/reports.xlsx").data))
    response = as_admin.get("/admin/reports.csv")
    assert response.status_code == 200
    assert response.data.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads it as UTF-8
    lines = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    blocks, block = [], []
    for line in [*lines, []]:
        if line:
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    assert [b[0] for b in blocks] == [[name] for name in book.sheetnames]
    for (_title, *table), sheet in zip(blocks, book.worksheets, strict=True):
        expected = [["" if c.value is None else c.value for c in row] for row in sheet.iter_rows()]
        assert len(table) == len(expected), sheet.title
        for got, want in zip(table, expected, strict=True):
            assert [
                float(g) if isinstance(w, (int, float)) else g
                for g, w in zip(got, want, strict=True)
            ] == want, sheet.title
    summary = dict(zip(blocks[0][1], blocks[0][2], strict=True))
    assert (summary["Points issued"], summary["Outstanding spendable points"]) == ("75", "71")
    assert summary["Stock value (yuan)"] == "16.00"


def test_text_that_looks_like_a_formula_stays_text(as_admin, town):  # noqa: F811
    town["cadre"].display_name = "=HYPERLINK(1)"
    db.session.commit()
    book = load_workbook(io.BytesIO(as_admin.get("/admin/reports.xlsx").data))
    names = {row[0].value: row[0] for row in _sheet_rows(book["Cadres"])}
    cell = names["'=HYPERLINK(1)"]
    assert cell.data_type == "s"
    assert "'=HYPERLINK(1)" in as_admin.get("/admin/reports.csv").data.decode("utf-8-sig")


# --- charts --------------------------------------------------------------------------------------


def test_the_charts_are_svg_with_their_labels_and_values(as_admin, town):  # noqa: F811
    town["west"].name = "西村 <A&B>"  # escaped, or the SVG would not parse
    db.session.commit()
    page = as_admin.get("/admin/reports").get_data(True)
    assert "<script" not in page.split("</main>")[0]
    charts = svgs(page)
    assert len(charts) == 3
    for svg in charts:
        assert svg.tag == f"{SVG_NS}svg" and svg.get("role") == "img"
        assert svg.find(f"{SVG_NS}title").text and svg.find(f"{SVG_NS}desc").text
    trend, categories, villages = charts
    texts = " | ".join(svg_texts(trend))
    months = [_add_months(this_month(), -i) for i in range(12)]
    for month in months:
        assert month_label(month) in texts
    assert f"{month_label(this_month())} · Issued: 75" in texts
    assert f"{month_label(this_month())} · Deducted: 5" in texts
    assert f"{month_label(this_month())} · Redeemed: 8" in texts
    old_month = to_local(town["old_posted_at"]).date().replace(day=1)
    assert f"{month_label(old_month)} · Issued: 9" in texts
    # The axis names every month under its point.
    axis = [el.text for el in trend.iter(f"{SVG_NS}text")]
    assert all(str(m.month) in axis for m in months)
    bars = svg_texts(categories)
    assert "Waste sorting" in bars and "40" in bars and "Volunteering" in bars and "15" in bars
    village_texts = svg_texts(villages)
    assert "东村" in village_texts and "西村 <A&B>" in village_texts
    assert "60" in village_texts and "15" in village_texts


def test_a_group_has_no_village_chart_and_an_empty_month_still_draws(as_admin, town):  # noqa: F811
    empty = _add_months(this_month(), -30)
    page = as_admin.get(
        f"/admin/reports?scope=group&id={town['g1'].id}&period=month&month={empty:%Y-%m}"
    ).get_data(True)
    charts = svgs(page)
    assert len(charts) == 1  # the trend; no category had points, a group has no villages
    assert "No points were issued in this period." in page
    assert figure(page, "fig-issued") == "0"


# --- who sees what -------------------------------------------------------------------------------


def test_a_committee_member_sees_their_village_and_its_groups_only(client, make, town):  # noqa: F811
    english(client, town["committee"])
    page = client.get("/admin/reports").get_data(True)
    assert town["east"].name in page and figure(page, "fig-issued") == "60"
    assert client.get(f"/admin/reports?scope=group&id={town['g1'].id}").status_code == 200
    for url in (
        f"/admin/reports?scope=town&id={town['town'].id}",
        f"/admin/reports?scope=village&id={town['west'].id}",
        f"/admin/reports.xlsx?scope=village&id={town['west'].id}",
        f"/admin/reports.csv?scope=town&id={town['town'].id}",
    ):
        assert client.get(url).status_code == 404, url
    assert f"scope=town&amp;id={town['town'].id}" not in page  # not offered either


def test_other_towns_and_other_roles_are_kept_out(client, make, town):  # noqa: F811
    other_admin = make.staff(Role.ADMIN, make.town())
    db.session.commit()
    login(client, other_admin)
    assert client.get("/admin/reports").status_code == 200  # their own town
    for url in (
        f"/admin/reports?scope=town&id={town['town'].id}",
        f"/admin/reports?scope=village&id={town['east'].id}",
        f"/admin/reports?scope=group&id={town['g1'].id}",
        f"/admin/reports.xlsx?scope=town&id={town['town'].id}",
    ):
        assert client.get(url).status_code == 404, url
    for role, place in ((Role.CADRE, town["east"]), (Role.CLERK, make.shop(town["east"]))):
        user = make.staff(role, place)
        db.session.commit()
        login(client, user)
        assert client.get("/admin/reports").status_code == 403
        assert client.get("/admin/reports.xlsx").status_code == 403
    anonymous = client.application.test_client()
    response = anonymous.get("/admin/reports.csv")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, message",
    [
        ("period=month&month=2099-01", "has not begun"),
        ("period=custom&from=2016-01&to=2025-12", "at most 24 months"),
        ("period=month&month=2026-13", "must be a month like"),
        ("period=century", "Choose a month, a quarter, a year or a range"),
        ("scope=county&id=1", "Choose a group, a village or a town"),
        ("period=year&year=26", "four digits"),
    ],
)
@pytest.mark.parametrize("path", ["/admin/reports", "/admin/reports.xlsx", "/admin/reports.csv"])
def test_bad_input_is_a_clear_400(as_admin, path, query, message):
    response = as_admin.get(f"{path}?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert message in _text(element(response.get_data(True), "report-error"))


@pytest.mark.parametrize(
    "query",
    [
        "scope=village&id=999999",
        "scope=group&id=abc",
        "scope=town&id=99999999999999",
        "scope=town&id=-1",
    ],
)
def test_an_unknown_place_is_404(as_admin, query):
    assert as_admin.get(f"/admin/reports?{query}").status_code == 404
    assert as_admin.get(f"/admin/reports.xlsx?{query}").status_code == 404


# --- where it is linked --------------------------------------------------------------------------


def test_the_admin_and_committee_homes_link_to_reports(client, admin, town):  # noqa: F811
    login(client, admin)
    assert 'href="/admin/reports"' in client.get("/admin/").get_data(True)
    login(client, town["committee"])
    assert 'href="/admin/reports"' in client.get("/committee/").get_data(True)


def test_charts_draw_zeros_negatives_and_odd_names():
    from pointsmart.charts import Series, bar_chart, line_chart

    trend = line_chart(
        "t",
        "趋势 & <test>",
        ["2026-01", "2026-02", "2026-03"],
        [Series("兑出", [0, -40, 1_234_567]), Series("Issued", [0, 0, 0])],
        ticks=["1", "2", "3"],
        spans=[("2026", 0, 2)],
    )
    svg = ET.fromstring(str(trend))
    texts = svg_texts(svg)
    assert "2026-02 · 兑出: -40" in texts and "2026-03 · 兑出: 1,234,567" in texts
    assert svg.find(f"{SVG_NS}title").text == "趋势 & <test>"
    # The axis reaches below zero for a month where refunds outweighed redemptions.
    assert any(t.startswith("-") for t in (el.text or "" for el in svg.iter(f"{SVG_NS}text")))
    bars = ET.fromstring(str(bar_chart("b", "空", ["甲", "=1+1"], [Series("x", [0, 0])])))
    assert "=1+1" in svg_texts(bars) and svg_texts(bars).count("0") == 2
