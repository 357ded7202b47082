"""Roster import pages: messy files, a preview of every row, an all-or-nothing import, once."""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import os
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from openpyxl import Workbook, load_workbook
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from pointsmart.extensions import db
from pointsmart.models import AuditEntry, Card, Household, Member, Role
from pointsmart.services import ledger, places, roster
from pointsmart.timeutil import local_today

HEADER = ["组别", "门牌号", "户主姓名", "姓名", "与户主关系", "联系电话", "身份证号码"]


def workbook(rows: list[list], *, header: list[str] = HEADER) -> bytes:
    """Build a roster as a village office keeps one: merged title rows, a merged group header."""
    book = Workbook()
    sheet = book.active
    sheet.append(["青山村村民花名册"])
    sheet.merge_cells("A1:G1")
    sheet.append(["填报单位：青山村村委会", None, None, None, "填报日期：2026年3月"])
    sheet.merge_cells("A2:D2")
    sheet.merge_cells("E2:G2")
    sheet.append(["户籍信息", None, None, "家庭成员", None, "联系方式", None])
    sheet.merge_cells("A3:C3")
    sheet.merge_cells("D3:E3")
    sheet.merge_cells("F3:G3")
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


#: Lines as the importer numbers them: the header is line 4 of workbook(), data from line 5.
MESSY_ROWS = [
    [" 一组 ", 12.0, "王建国 ", "王建国", "户主", "138 0000 1111", "330102196001011234"],
    ["一组", "１２", "王建国", "李秀英", "妻子", "１３８００００２２２２", None],
    ["一组", 12, "王建国", " 王小明", "儿子", None, "33010220000101123x"],
    [None, None, None, None, None, None, None],
    ["二组", "3-1", "赵德胜", "赵德胜", "本人", "+86 13800003333", None],
    ["二组", 5.0, "钱七", "钱七", "户主", 13800004444.0, None],
]


@pytest.fixture
def w(app, make, client, login_as, tmp_path, monkeypatch):
    """A village with two groups, its town's administrator logged in with English pages."""
    monkeypatch.setattr(app, "instance_path", str(tmp_path))  # uploads of this test only
    village = make.village(name="青山村")
    one, two = make.group(village, "一组"), make.group(village, "二组")
    admin = make.staff(Role.ADMIN, village.town)
    db.session.commit()
    login_as(admin)
    client.post("/language", data={"locale": "en", "next": "/"})
    w = type("World", (), {})()
    w.village, w.one, w.two, w.admin, w.client, w.make = village, one, two, admin, client, make
    w.uploads = tmp_path / "uploads"
    return w


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def preview(w, data: bytes, filename: str = "花名册.xlsx", village=None, client=None):
    village = village or w.village
    # Encoded here, in memory: the test client's own encoder leaves a temporary file open.
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(data), filename)})
    return (client or w.client).post(
        f"/admin/villages/{village.id}/roster/preview",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def import_fields(page: str) -> dict[str, str]:
    """Return the hidden fields of the import form on a preview page."""
    form = re.search(r'<form method="post" action="[^"]*/roster/import".*?</form>', page, re.S)
    assert form, "the preview has no import form"
    fields = {}
    for tag in re.findall(r"<input[^>]*>", form.group(0)):
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if attributes.get("type") == "hidden":
            fields[attributes["name"]] = attributes.get("value", "")
    return fields


def do_import(w, fields: dict, village=None, client=None):
    village = village or w.village
    return (client or w.client).post(f"/admin/villages/{village.id}/roster/import", data=fields)


def stored(w) -> list[str]:
    return sorted(p.name for p in w.uploads.iterdir()) if w.uploads.exists() else []


def households(village) -> list[Household]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            sa.select(Household)
            .where(Household.group.has(village_id=village.id))
            .order_by(Household.id)
        )
    )


def snapshot(village) -> list[tuple]:
    """Return every household and member of the village as plain values."""
    return [
        (
            h.group_id,
            h.house_number,
            h.name,
            h.is_active,
            sorted((m.name, m.phone, m.id_last4, m.is_head, m.is_active) for m in h.members),
        )
        for h in households(village)
    ]


def audit_count() -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.action == "roster.import")
    )


def problem_table(page: str) -> dict[int, str]:
    """Return {line: its problems} of the highlighted rows of a preview."""
    rows = re.findall(r'<tr class="problem"><td class="num">(\d+)</td>(.*?)</tr>', page, re.S)
    return {int(line): re.sub(r"<[^>]+>", " ", cells) for line, cells in rows}


@contextlib.contextmanager
def counting_statements():
    """Count the SQL statements sent while the block runs (executemany counts once)."""
    seen = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)


# --- the pages ------------------------------------------------------------------------------------


def test_the_roster_page_explains_every_column_the_importer_reads(w):
    home = text(w.client.get("/admin/"))
    assert f"/admin/villages/{w.village.id}/roster" in home
    page = text(w.client.get(f"/admin/villages/{w.village.id}/roster"))
    for names in roster.HEADERS.values():
        assert "、".join(names) in page  # generated from the importer's own list
    assert 'enctype="multipart/form-data"' in page
    assert f"/admin/villages/{w.village.id}/roster.xlsx" in page


def test_a_messy_workbook_is_previewed_stored_and_imported(w):
    data = workbook(MESSY_ROWS)
    response = preview(w, data)
    page = text(response)
    assert response.status_code == 200
    assert "Rows with problems</dt><dd>0" in page
    assert "New households</dt><dd>3 (5 people)" in page
    assert "Households of the village not in the file</dt><dd>0" in page
    assert households(w.village) == []  # a preview changes nothing
    # The file waits under a random token with its note; the user's file name is nowhere.
    fields = import_fields(page)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", fields["token"])
    assert fields["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(w) == sorted([f"{fields['token']}.xlsx", f"{fields['token']}.json"])
    assert (w.uploads / f"{fields['token']}.xlsx").read_bytes() == data
    assert oct(os.stat(w.uploads / f"{fields['token']}.xlsx").st_mode & 0o777) == "0o600"

    response = do_import(w, fields)
    assert response.status_code == 302
    result = w.client.get(response.headers["Location"])
    page = text(result)
    assert "Roster imported: 3 new households (5 people)" in page
    today = local_today().isoformat()
    assert f"/cadre/cards/sheet?village_id={w.village.id}&amp;since={today}" in result.get_data(
        as_text=True
    )
    assert stored(w) == [f"{fields['token']}.done.json"]  # the file itself is gone

    wang = next(h for h in households(w.village) if h.house_number == "12")
    members = {m.name: m for m in wang.members}
    assert wang.group_id == w.one.id and wang.name == "王建国"
    assert set(members) == {"王建国", "李秀英", "王小明"} and members["王建国"].is_head
    assert members["王建国"].phone == "13800001111" and members["王建国"].id_last4 == "1234"
    assert members["李秀英"].phone == "13800002222"  # full-width digits
    assert members["王小明"].id_last4 == "123X"
    qian = next(h for h in households(w.village) if h.name == "钱七")
    assert qian.house_number == "5" and qian.members[0].phone == "13800004444"  # 5.0, 1.38e10
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Card)) == 3
    assert audit_count() == 1
    # The cards sheet the result links to holds the three new households' cards.
    sheet = text(w.client.get(f"/cadre/cards/sheet?village_id={w.village.id}&since={today}"))
    assert all(name in sheet for name in ("王建国", "赵德胜", "钱七"))


def test_a_gbk_csv_with_members_in_one_cell(w):
    text_ = (
        "村民小组,门牌,户主,家庭成员,手机号\n二组 , ７ ,孙立,孙小红、孙小兵 ，孙小军,13877776666\n"
    )
    page = text(preview(w, text_.encode("gb18030"), "名单.csv"))
    assert "New households</dt><dd>1 (4 people)" in page
    assert do_import(w, import_fields(page)).status_code == 302
    household = households(w.village)[0]
    assert household.house_number == "7" and household.group_id == w.two.id
    assert [m.name for m in household.members] == ["孙立", "孙小红", "孙小兵", "孙小军"]


PROBLEMS_CSV = """组,门牌号,户主,姓名,与户主关系,电话,身份证号
一组,1,张三,张三,户主,13811110001,
一组,1,张三,李四,妻子,1234,
三组,2,王五,王五,户主,,
一组,3,赵六,赵六,户主,,12345
一组,4,孙七,孙七,户主,,
一组,4,孙七,孙七,户主,,
一组,,周八,周八,户主,,
一组,5,,吴九,妻子,,
二组,6,郑十,郑十,户主,,
"""


def test_the_preview_lists_every_problem_row_with_its_message_and_stores_nothing(w):
    before = snapshot(w.village)
    response = preview(w, PROBLEMS_CSV.encode(), "r.csv")
    page = text(response)
    problems = problem_table(page)
    expected = {
        3: "not an 11-digit mobile number",
        4: "Unknown group “三组”",
        5: "18 characters",
        7: "Duplicate: 孙七 is already on line 6",
        8: "No house number",
        9: "Missing head of household",
    }
    assert set(problems) == set(expected)
    for line, message in expected.items():
        assert message in problems[line], (line, problems[line])
    # Problem rows come first; rows held back with them are shown too, then the clean ones.
    assert page.index('<tr class="problem">') < page.index("Every other row")
    held = re.findall(r'<tr class="held"><td class="num">(\d+)</td>', page)
    assert sorted(map(int, held)) == [2, 6]
    assert re.search(r'<td class="num">10</td><td>二组</td><td>6</td><td>郑十</td>', page)
    assert 'Rows with problems</dt><dd class="error">6' in page
    assert "fix the file and upload it again" in page
    assert "/roster/import" not in page
    assert stored(w) == [] and snapshot(w.village) == before == []


def test_many_rows_with_one_problem_are_summed_up_above_the_list(w):
    rows = "".join(f"九组,{n},户{n},户{n}\n" for n in range(30))
    page = text(preview(w, ("组,门牌号,户主,姓名\n一组,1,甲,甲\n" + rows).encode(), "r.csv"))
    summary = re.search(r'<ul class="roster-common">(.*?)</ul>', page, re.S)
    assert summary and "Unknown group “九组”" in summary.group(1) and "× 30" in summary.group(1)
    assert len(problem_table(page)) == 30


def test_an_unreadable_file_is_explained_on_the_upload_page(w):
    page = text(preview(w, b"not a workbook", "r.xlsx"))
    assert "cannot be read as an Excel workbook" in page
    page = text(preview(w, "名字,年龄\n张三,3\n".encode(), "r.csv"))
    assert "No header row found" in page
    page = text(w.client.post(f"/admin/villages/{w.village.id}/roster/preview", data={}))
    assert "Choose the roster file first" in page
    assert stored(w) == []


def test_a_failing_row_leaves_the_database_untouched_and_the_import_is_all_or_nothing(
    w, monkeypatch
):
    w.make.household(w.one, "老户")
    db.session.commit()
    before = snapshot(w.village)
    good = "".join(f"一组,{n},户{n},户{n}\n" for n in range(100, 150))
    page = text(preview(w, ("组,门牌号,户主,姓名\n" + good + "九组,99,错,错\n").encode(), "r.csv"))
    assert list(problem_table(page)) == [52]
    assert snapshot(w.village) == before

    # A file without problems that fails half-way through the import lands not at all.
    page = text(preview(w, ("组,门牌号,户主,姓名\n" + good).encode(), "r.csv"))
    fields = import_fields(page)

    def broken(rows):
        raise RuntimeError("the disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(roster.cards, "insert_unique", broken)  # after households and members
        with pytest.raises(RuntimeError):
            do_import(w, fields)
    assert snapshot(w.village) == before and audit_count() == 0
    assert f"{fields['token']}.json" in stored(w)  # kept, so the import can be tried again
    assert do_import(w, fields).status_code == 302
    assert len(households(w.village)) == 51


def test_the_same_file_again_changes_nothing_and_an_updated_file_updates(w):
    data = workbook(MESSY_ROWS)
    do_import(w, import_fields(text(preview(w, data))))
    before = snapshot(w.village)

    page = text(preview(w, data))
    assert "Households already as in the file</dt><dd>3" in page
    assert "there is nothing to import" in page and "/roster/import" not in page
    assert [n for n in stored(w) if not n.endswith(".done.json")] == []
    assert snapshot(w.village) == before and audit_count() == 1

    updated = [list(r) for r in MESSY_ROWS]
    updated[0][5] = "13800001119"  # 王建国's new phone
    del updated[2]  # 王小明 moved away
    updated.append(["一组", "12", "王建国", "王小红", "女儿", None, None])
    updated.append(["二组", "8", "冯九", "冯九", "户主", None, None])
    page = text(preview(w, workbook(updated)))
    assert "New households</dt><dd>1 (1 people)" in page
    assert "Households brought up to date</dt><dd>1" in page
    assert "Households already as in the file</dt><dd>2" in page
    changes = re.search(r'id="changes".*?</section>', page, re.S).group(0)
    assert "王建国 电话" in changes and "+ 王小红" in changes and "- 王小明" in changes
    assert do_import(w, import_fields(page)).status_code == 302
    wang = next(h for h in households(w.village) if h.house_number == "12")
    members = {m.name: m for m in wang.members}
    assert members["王建国"].phone == "13800001119"
    assert members["王小红"].is_active and members["王小明"].is_active is False  # kept, inactive
    assert len(households(w.village)) == 4 and audit_count() == 2


def test_the_export_imports_again_as_unchanged(w):
    do_import(w, import_fields(text(preview(w, workbook(MESSY_ROWS)))))
    response = w.client.get(f"/admin/villages/{w.village.id}/roster.xlsx")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "attachment" in response.headers["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(response.data)).active
    assert [c.value for c in sheet[1]] == roster.EXPORT_HEADER
    assert sheet.max_row == 1 + 5
    page = text(preview(w, response.data, "export.xlsx"))
    assert "Households already as in the file</dt><dd>3" in page
    assert "there is nothing to import" in page


def test_a_village_name_excel_refuses_as_a_sheet_name_still_exports(w):
    w.village.name = "东坡/西岭[联合]村"
    db.session.commit()
    response = w.client.get(f"/admin/villages/{w.village.id}/roster.xlsx")
    assert response.status_code == 200
    assert load_workbook(io.BytesIO(response.data)).active.title == "东坡_西岭_联合_村"


def test_a_village_changed_since_the_preview_gets_a_new_preview_not_an_import(w):
    page = text(preview(w, workbook(MESSY_ROWS)))
    fields = import_fields(page)
    places.create_household(w.two, "5", "钱七")  # a colleague adds one of the file's households
    db.session.commit()
    response = do_import(w, fields)
    page = text(response)
    assert response.status_code == 200
    assert "The village has changed since the preview: nothing was imported" in page
    assert "New households</dt><dd>2" in page and "Households brought up to date</dt><dd>1" in page
    assert len(households(w.village)) == 1
    # The new preview's button imports what it shows.
    assert import_fields(page) == fields
    assert do_import(w, import_fields(page)).status_code == 302
    assert len(households(w.village)) == 3


def test_tampered_and_foreign_tokens_are_refused(w):
    other_village = places.create_village(w.village.town, "东坡村")
    places.create_group(other_village, "一组")
    colleague = w.make.staff(Role.ADMIN, w.village.town)
    db.session.commit()
    data = workbook(MESSY_ROWS)
    fields = import_fields(text(preview(w, data)))

    def refused(response, message, client=None):
        assert response.status_code == 302
        page = text((client or w.client).get(response.headers["Location"]))
        assert message in page, page
        assert households(w.village) == [] and households(other_village) == []

    wrong_sha = dict(fields, sha256=hashlib.sha256(b"another file").hexdigest())
    refused(do_import(w, wrong_sha), "does not belong to this page")
    unknown = dict(fields, token=fields["token"][:-4] + "AAAA")
    refused(do_import(w, unknown), "no longer here")
    for bad in ("../../secret_key", "", fields["token"] + ".json"):
        refused(do_import(w, dict(fields, token=bad)), "upload the roster file again")
    refused(do_import(w, fields, village=other_village), "does not belong to this page")
    other = w.client.application.test_client()
    from tests.conftest import login

    login(other, colleague)
    other.post("/language", data={"locale": "en", "next": "/"})
    refused(do_import(w, fields, client=other), "does not belong to this page", client=other)
    # The stored file on disk altered behind the app's back is not imported either.
    path = w.uploads / f"{fields['token']}.xlsx"
    path.write_bytes(workbook(MESSY_ROWS[:1]))
    refused(do_import(w, fields), "The stored file has changed")
    assert stored(w) == []


def test_a_double_tap_imports_once(w):
    fields = import_fields(text(preview(w, workbook(MESSY_ROWS))))
    first = do_import(w, fields)
    second = do_import(w, fields)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    page = text(w.client.get(second.headers["Location"]))
    assert "This file was already imported" in page
    assert "New households</dt><dd>3 (5 people)" in page  # the result, shown again
    assert len(households(w.village)) == 3 and audit_count() == 1


def test_a_tap_while_the_first_is_still_importing_does_not_import_again(w):
    fields = import_fields(text(preview(w, workbook(MESSY_ROWS))))
    # The first request has claimed the upload (renamed its note) and is still working.
    token = fields["token"]
    (w.uploads / f"{token}.json").rename(w.uploads / f"{token}.claimed.json")
    response = do_import(w, fields)
    assert response.status_code == 302
    assert "being imported right now" in text(w.client.get(response.headers["Location"]))
    assert households(w.village) == [] and audit_count() == 0


def test_stored_files_older_than_a_day_are_removed_when_a_new_one_is_saved(w):
    w.uploads.mkdir(parents=True)
    old, recent = w.uploads / ("o" * 43 + ".xlsx"), w.uploads / ("r" * 43 + ".json")
    old.write_bytes(b"old")
    recent.write_bytes(b"{}")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    fields = import_fields(text(preview(w, workbook(MESSY_ROWS))))
    assert not old.exists() and recent.exists()
    assert f"{fields['token']}.xlsx" in stored(w)


def test_another_towns_administrator_gets_404_and_other_roles_403(w, app):
    stranger = w.make.staff(Role.ADMIN, w.make.town())
    committee = w.make.staff(Role.COMMITTEE, w.village)
    db.session.commit()
    fields = import_fields(text(preview(w, workbook(MESSY_ROWS))))
    base = f"/admin/villages/{w.village.id}"
    from tests.conftest import login

    for user, status in ((stranger, 404), (committee, 403)):
        client = app.test_client()
        login(client, user)
        assert client.get(f"{base}/roster").status_code == status
        assert client.get(f"{base}/roster.xlsx").status_code == status
        response = preview(w, workbook(MESSY_ROWS), client=client)
        assert response.status_code == status
        assert client.post(f"{base}/roster/import", data=fields).status_code == status
    assert households(w.village) == []
    assert w.client.get(f"/admin/villages/{2**31}/roster").status_code == 404


# --- a village's worth --------------------------------------------------------------------------


def big_workbook(n_households: int) -> tuple[bytes, int]:
    """Build a 10,000-household roster with the usual mess; return it and its people count."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(["东坡村户籍花名册（2026年）"])
    sheet.append([])
    sheet.append(["序号", *HEADER])
    people = 0
    for n in range(n_households):
        group = ("一组", " 二组", "一组 ")[n % 3]
        house = (
            float(n + 1)
            if n % 4 == 0
            else str(n + 1).translate(FULL_WIDTH)
            if n % 4 == 1
            else n + 1
        )
        head = f"户主{n}"
        size = 1 + n % 4
        for k in range(size):
            name = head if k == 0 else f"家人{n}-{k}"
            phone = f"138 {n:04d} {k:04d}" if k < 2 else None
            id_number = f"33010219600101{n % 10000:04d}" if k == 0 else None
            sheet.append(
                [
                    people + 1,
                    group,
                    house,
                    head,
                    name,
                    "户主" if k == 0 else "子女",
                    phone,
                    id_number,
                ]
            )
            people += 1
        if n % 500 == 0:
            sheet.append([None] * 8)  # a blank line between pages of the paper roster
    out = io.BytesIO()
    book.save(out)
    return out.getvalue(), people


FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def test_a_ten_thousand_household_workbook_through_the_pages(w):
    data, people = big_workbook(10_000)
    with counting_statements() as statements:
        response = preview(w, data, "东坡村花名册.xlsx")
    page = text(response)
    assert response.status_code == 200
    assert f"New households</dt><dd>10000 ({people} people)" in page
    assert "Rows with problems</dt><dd>0" in page
    assert page.count('<tr><td class="num">') == people  # every row, none left out
    assert len(statements) < 20, statements  # no query per row
    fields = import_fields(page)

    with counting_statements() as statements:
        response = do_import(w, fields)
    assert response.status_code == 302, text(response)
    assert len(statements) < 40, len(statements)
    assert len(households(w.village)) == 10_000
    count = db.session.scalar(sa.select(sa.func.count()).select_from(Member))
    assert count == people
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Card)) == 10_000
    assert ledger.check() == ([], [])
    assert "Roster imported: 10000 new households" in text(
        w.client.get(response.headers["Location"])
    )


def test_uploads_stay_in_the_instance_folder(w):
    fields = import_fields(text(preview(w, workbook(MESSY_ROWS), "../../evil.xlsx")))
    assert Path(w.uploads, f"{fields['token']}.xlsx").exists()
    assert not any("evil" in name for name in stored(w))
