"""Roster import from the files villages really keep: messy, merged, full-width; all or nothing."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from openpyxl import Workbook, load_workbook

from pointsmart.extensions import db
from pointsmart.models import Account, AuditEntry, Card, Household, Member, Role
from pointsmart.services import ledger, roster
from pointsmart.services.errors import Forbidden, InvalidInput


def xlsx(rows: list[list], *, title: str | None = "青山村村民花名册（2026年）") -> bytes:
    """Build a workbook as a village office would: a merged title row above the header."""
    book = Workbook()
    sheet = book.active
    if title:
        sheet.append([title])
        sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=7)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(text: str, encoding: str = "utf-8-sig") -> bytes:
    return text.encode(encoding)


HEADER = ["组别", "门牌号", "户主姓名", "姓名", "与户主关系", "联系电话", "身份证号"]


@pytest.fixture
def w(make):
    village = make.village(name="青山村")
    one, two = make.group(village, "一组"), make.group(village, "二组")
    admin = make.staff(Role.ADMIN, village.town)
    db.session.commit()
    return village, one, two, admin


def english(error) -> str:
    with force_locale("en"):
        return str(error.message)


def households(village) -> list[Household]:
    return list(
        db.session.scalars(
            sa.select(Household)
            .join(Household.group)
            .where(Household.group.has(village_id=village.id))
        )
    )


def test_a_messy_workbook_is_read_and_imported(w):
    village, one, two, admin = w
    data = xlsx(
        [
            HEADER,
            [" 一组 ", 12.0, "王建国", "王建国", "户主", "138 0000 1111", "330102196001011234"],
            ["一组", "12", "王建国", "李秀英", "妻子", "１３８００００２２２２", ""],
            ["一组", 12, "王建国", "王小明", "儿子", None, "123x"],
            [None, None, None, None, None, None, None],
            ["二组", "3-1", "赵德胜", "赵德胜", "本人", "+86 13800003333", ""],
        ]
    )
    rows = roster.read(data, "花名册.xlsx")
    result = roster.plan(village, rows)
    assert result.ok, [(r.line, r.problems) for r in result.problems]
    assert (result.count("new"), result.count("update")) == (2, 0)
    counts = roster.apply(result, admin, "花名册.xlsx")
    db.session.commit()
    assert counts == {"new": 2, "updated": 0, "unchanged": 0, "people": 4}
    wang = db.session.scalar(sa.select(Household).where(Household.house_number == "12"))
    members = {m.name: m for m in wang.members}
    assert wang.name == "王建国" and members["王建国"].is_head
    assert members["王建国"].phone == "13800001111" and members["王建国"].id_last4 == "1234"
    assert members["李秀英"].phone == "13800002222"  # full-width digits
    assert members["王小明"].id_last4 == "123X"
    # Every new household holds points and has a card, like one made by hand.
    for household in households(village):
        assert ledger.balance_of(household) == ledger.Balance(0, 0)
        assert db.session.scalar(sa.select(Card).where(Card.household_id == household.id))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) >= 4 + 3
    assert db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "roster.import"))
    assert ledger.check() == ([], [])


def test_the_same_file_again_changes_nothing_and_an_updated_file_updates(w):
    village, one, two, admin = w
    text = "组,门牌号,户主,姓名,电话\n一组,1,张三,张三,13811110001\n一组,1,张三,张四,\n"
    roster.apply(roster.plan(village, roster.read(csv_bytes(text), "r.csv")), admin)
    db.session.commit()
    again = roster.plan(village, roster.read(csv_bytes(text), "r.csv"))
    assert again.count("unchanged") == 1 and again.count("new") == again.count("update") == 0
    assert roster.apply(again, admin)["updated"] == 0

    updated = "组,门牌号,户主,姓名,电话\n一组,1,张三,张三,13811110009\n一组,1,张三,张五,\n"
    changes = roster.plan(village, roster.read(csv_bytes(updated), "r.csv"))
    assert changes.count("update") == 1
    assert {"张三 电话", "+ 张五", "- 张四"} <= set(changes.households[0].changes)
    roster.apply(changes, admin)
    db.session.commit()
    household = households(village)[0]
    active = {m.name for m in household.members if m.is_active}
    assert active == {"张三", "张五"}
    assert db.session.scalar(sa.select(Member).where(Member.name == "张四")).is_active is False


@pytest.mark.parametrize(
    "text, problem",
    [
        ("组,门牌号,户主,姓名\n三组,1,张三,张三\n", "Unknown group “三组”"),
        ("组,门牌号,户主,姓名,电话\n一组,1,张三,张三,1234\n", "not an 11-digit mobile number"),
        ("组,门牌号,户主,姓名\n一组,1,张三,张三\n一组,1,张三,张三\n", "Duplicate: 张三"),
        ("组,门牌号,户主,姓名\n一组,,张三,张三\n", "No house number"),
        ("组,门牌号,姓名,与户主关系\n一组,1,张三,妻子\n", "Missing head of household"),
        ("组,门牌号,户主,姓名\n一组,1,张三,张三\n一组,1,李四,李五\n", "different heads"),
        ("组,门牌号,户主,身份证号\n一组,1,张三,12345\n", "18 characters"),
        (
            "组,门牌号,户主,电话\n一组,1,张三,13800000001\n二组,2,李四,13800000001\n",
            "also listed for another household",
        ),
    ],
)
def test_each_bad_row_is_named_and_nothing_is_imported(w, text, problem):
    village, one, two, admin = w
    with force_locale("en"):
        result = roster.plan(village, roster.read(csv_bytes(text), "r.csv"))
    assert not result.ok
    assert any(problem in p for r in result.problems for p in r.problems), [
        r.problems for r in result.rows
    ]
    with pytest.raises(InvalidInput):
        roster.apply(result, admin)
    assert households(village) == []


def test_a_phone_of_another_households_member_is_a_problem(w, make):
    village, one, two, admin = w
    make.household(one, phone="13899990000")
    db.session.commit()
    with force_locale("en"):
        result = roster.plan(
            village,
            roster.read(csv_bytes("组,门牌号,户主,电话\n二组,9,钱七,13899990000\n"), "r.csv"),
        )
    assert (
        not result.ok
        and "belongs to a member of another household" in result.problems[0].problems[0]
    )


def test_one_row_a_household_with_members_in_a_cell_and_a_gbk_csv(w):
    village, one, two, admin = w
    text = "村民小组,门牌,户主,家庭成员,手机号\n二组,7,孙立,孙小红、孙小兵,13877776666\n"
    result = roster.plan(village, roster.read(csv_bytes(text, "gb18030"), "r.csv"))
    assert result.ok
    roster.apply(result, admin)
    household = households(village)[0]
    assert sorted(m.name for m in household.members) == ["孙小兵", "孙小红", "孙立"]
    assert next(m for m in household.members if m.is_head).name == "孙立"


@pytest.mark.parametrize(
    "data, filename, message",
    [
        (b"", "r.csv", "empty"),
        (b"hello", "r.txt", ".xlsx or .csv"),
        (b"not a zip", "r.xlsx", "cannot be read"),
        ("名字,年龄\n张三,3\n".encode(), "r.csv", "No header row"),
        ("组,门牌号,户主\n".encode(), "r.csv", "no rows"),
    ],
)
def test_unreadable_files_get_a_clear_message(w, data, filename, message):
    with pytest.raises(InvalidInput) as info:
        roster.read(data, filename)
    assert message in english(info.value)


def test_export_reads_back_as_the_same_roster(w):
    village, one, two, admin = w
    text = "组,门牌号,户主,姓名,电话,身份证后四位\n一组,2,周一,周一,13811112222,0012\n一组,2,周一,周二,,\n二组,10,吴三,吴三,,\n"
    roster.apply(roster.plan(village, roster.read(csv_bytes(text), "r.csv")), admin)
    db.session.commit()
    data = roster.export(village)
    sheet = load_workbook(io.BytesIO(data)).active
    assert [c.value for c in sheet[1]] == roster.EXPORT_HEADER
    again = roster.plan(village, roster.read(data, "export.xlsx"))
    assert again.ok and again.count("unchanged") == 2


def test_only_the_towns_administrator_imports(w, make):
    village, one, two, admin = w
    result = roster.plan(village, roster.read(csv_bytes("组,门牌号,户主\n一组,1,张三\n"), "r.csv"))
    with pytest.raises(Forbidden):
        roster.apply(result, make.staff(Role.COMMITTEE, village))
    with pytest.raises(Forbidden):
        roster.apply(result, make.staff(Role.ADMIN, make.town()))


def test_a_ten_thousand_household_file_imports_whole(w):
    village, one, two, admin = w
    lines = ["组,门牌号,户主,姓名,与户主关系,电话"]
    for n in range(10_000):
        group = "一组" if n % 2 else "二组"
        lines.append(f"{group},{n},户主{n},户主{n},户主,{13000000000 + n}")
        lines.append(f"{group},{n},户主{n},家人{n},子女,")
    result = roster.plan(village, roster.read(csv_bytes("\n".join(lines)), "big.csv"))
    assert result.ok and result.count("new") == 10_000
    assert roster.apply(result, admin)["people"] == 20_000
    db.session.commit()
    assert len(households(village)) == 10_000
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Card)) == 10_000
    assert ledger.check() == ([], [])


def test_a_failing_row_leaves_the_database_untouched(w):
    village, one, two, admin = w
    good = "".join(f"一组,{n},户{n},户{n}\n" for n in range(50))
    result = roster.plan(
        village, roster.read(csv_bytes("组,门牌号,户主,姓名\n" + good + "九组,99,错,错\n"), "r.csv")
    )
    assert not result.ok and len(result.problems) == 1 and result.problems[0].line == 52
    with pytest.raises(InvalidInput):
        roster.apply(result, admin)
    db.session.rollback()
    assert households(village) == []


def test_a_name_that_looks_like_a_formula_is_exported_as_text_and_reads_back(w):
    village, one, two, admin = w
    roster.apply(
        roster.plan(village, roster.read(csv_bytes("组,门牌号,户主\n一组,1,=1+2\n"), "r.csv")),
        admin,
    )
    db.session.commit()
    data = roster.export(village)
    cell = load_workbook(io.BytesIO(data)).active["C2"]
    assert cell.value == "'=1+2" and cell.data_type == "s"
    again = roster.plan(village, roster.read(data, "export.xlsx"))
    assert again.ok and again.count("unchanged") == 1
