"""Roster import and export (花名册): villages' own .xlsx and .csv files, all or nothing.

A roster lists people: one row a person (组, 门牌号, 户主, 姓名, 与户主关系, 电话, 身份证后四位)
or one row a household with its members in one cell (成员: 张三、李四). Headers are found by
name wherever they are (title rows and merged header rows above them are skipped); full-width
digits, stray spaces and numbers stored as decimals are cleaned; a full ID number is cut to
its last four characters and never kept.

``read`` turns a file into rows; ``plan`` compares them with the village and says, row by
row, what would happen or what is wrong; ``apply`` carries out a plan without problems in the
caller's single transaction. A household is known by its group and house number, a member by
name within the household. Households the file does not mention are left as they are; a
household the file lists is brought in line with it (members it no longer lists are
deactivated, never deleted). Importing the same file again changes nothing.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from openpyxl import Workbook, load_workbook
from sqlalchemy.orm.attributes import set_committed_value

from .. import access
from ..extensions import db
from ..models import (
    Account,
    AccountKind,
    Card,
    Household,
    Member,
    Role,
    User,
    Village,
    VillagerGroup,
)
from ..spreadsheets import FORMULA_STARTS
from ..spreadsheets import safe_rows as _safe_rows
from . import audit, cards, monthly
from .accounts import PHONE_RE, normalize_phone
from .errors import Forbidden, InvalidInput

log = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 200_000
HEAD_WORDS = {"户主", "本人", "户主本人"}

#: Header names villages use, by the field they fill.
HEADERS = {
    "group": ("组", "组别", "村民小组", "小组", "所在组", "所属小组", "组名"),
    "house_number": ("门牌号", "门牌", "户号", "门牌号码", "门牌编号"),
    "head": ("户主", "户主姓名", "户主名"),
    "name": ("姓名", "成员姓名", "人员姓名", "家庭成员姓名"),
    "members": ("成员", "家庭成员", "其他成员", "家庭成员名单"),
    "relation": ("与户主关系", "关系", "与户主的关系"),
    "phone": ("电话", "联系电话", "手机", "手机号", "手机号码", "联系方式"),
    "id_last4": ("身份证后四位", "身份证后4位", "身份证号", "身份证号码", "身份证"),
}
_HEADER_OF = {name: field_ for field_, names in HEADERS.items() for name in names}
EXPORT_HEADER = ["组", "门牌号", "户主", "姓名", "与户主关系", "电话", "身份证后四位"]


_INVISIBLE = re.compile(r"[\u200b-\u200f\ufeff]")  # zero-width marks pasted from the web
_SPACES = re.compile(r"\s+")


def clean(value) -> str:
    """Return a cell as tidy text: full-width forms folded, spaces trimmed, 12.0 → 12."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return str(value)  # a number cell: nothing to fold or trim (a third of a roster)
    text = unicodedata.normalize("NFKC", str(value))
    text = _SPACES.sub(" ", _INVISIBLE.sub("", text)).strip()
    if text[:1] == "'" and text[1:2] in FORMULA_STARTS:
        text = text[1:]  # the quote our export puts before text that looks like a formula
    return text


def _header_key(text: str) -> str | None:
    text = re.sub(r"[\s:：()（）*＊]", "", clean(text))
    return _HEADER_OF.get(text)


@dataclass
class Row:
    """One line of the file, cleaned, with its line number as the village sees it."""

    line: int
    group: str = ""
    house_number: str = ""
    head: str = ""
    name: str = ""
    relation: str = ""
    phone: str = ""
    id_last4: str = ""


# --- reading ------------------------------------------------------------------------------------


def _sheet_rows(data: bytes, filename: str) -> list[list]:
    name = (filename or "").lower()
    if name.endswith(".xlsx"):
        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception:  # openpyxl raises many kinds for a file that is not a workbook
            raise InvalidInput(
                _l("This file cannot be read as an Excel workbook (.xlsx).")
            ) from None
        sheet = book.worksheets[0]
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        book.close()
        return rows
    if name.endswith(".csv"):
        for encoding in ("utf-8-sig", "gb18030"):  # Excel in China saves CSV as GBK
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise InvalidInput(_l("This CSV file is neither UTF-8 nor GBK text."))
        return [list(r) for r in csv.reader(io.StringIO(text))]
    raise InvalidInput(_l("Please upload the roster as an .xlsx or .csv file."))


def read(data: bytes, filename: str) -> list[Row]:
    """Return the people rows of a roster file. Raises InvalidInput for an unreadable file."""
    if not data:
        raise InvalidInput(_l("The file is empty."))
    if len(data) > MAX_BYTES:
        raise InvalidInput(_l("The file is too large (at most 20 MB)."))
    raw = _sheet_rows(data, filename)
    if len(raw) > MAX_ROWS:
        raise InvalidInput(_l("The file has too many rows (at most %(max)s).", max=MAX_ROWS))
    # The header row: the one among the first 15 that names the most known columns.
    best, columns = -1, {}
    for index, cells in enumerate(raw[:15]):
        found = {}
        for position, cell in enumerate(cells):
            key = _header_key(cell)
            if key and key not in found:
                found[key] = position
        if len(found) > len(columns):
            best, columns = index, found
    if "house_number" not in columns or not ({"head", "name"} & columns.keys()):
        raise InvalidInput(
            _l(
                "No header row found: the roster needs at least the columns 门牌号 and 户主 "
                "(or 姓名), and usually 组, 电话 and 身份证后四位."
            )
        )
    if "group" not in columns:
        raise InvalidInput(_l("The roster needs a 组 (villager group) column."))
    rows = []
    for index, cells in enumerate(raw[best + 1 :], start=best + 2):
        values = {
            key: clean(cells[pos]) if pos < len(cells) else "" for key, pos in columns.items()
        }
        if not any(values.values()):
            continue  # blank line, or a merged cell's leftovers
        members = values.pop("members", "")
        base = Row(line=index, **{k: v for k, v in values.items() if k in Row.__annotations__})
        if "name" not in columns:
            base.name = base.head  # one row a household: the row is its head
            base.relation = "户主"
        rows.append(base)
        for member in (m for m in re.split(r"[、,，;；/\s]+", members) if m):
            rows.append(
                Row(
                    line=index,
                    group=base.group,
                    house_number=base.house_number,
                    head=base.head,
                    name=member,
                )
            )
    if not rows:
        raise InvalidInput(_l("The roster has a header but no rows."))
    return rows


# --- planning -----------------------------------------------------------------------------------


@dataclass
class PersonPlan:
    name: str
    phone: str | None
    id_last4: str | None
    is_head: bool
    member: Member | None = None  #: the existing member, when there is one


@dataclass
class HouseholdPlan:
    group: VillagerGroup
    house_number: str
    head: str
    people: list[PersonPlan]
    household: Household | None = None
    #: What importing does to it: "new", "update" or "unchanged".
    status: str = "new"
    changes: list[str] = field(default_factory=list)


@dataclass
class RowReport:
    line: int
    group: str
    house_number: str
    name: str
    status: str  #: "new", "update", "unchanged" or "problem"
    problems: list[str] = field(default_factory=list)


@dataclass
class Plan:
    village: Village
    rows: list[RowReport]
    households: list[HouseholdPlan]
    untouched: int  #: the village's households the file does not mention

    @property
    def problems(self) -> list[RowReport]:
        return [r for r in self.rows if r.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, status: str) -> int:
        return sum(1 for h in self.households if h.status == status)


def _id_last4(text: str) -> tuple[str | None, str | None]:
    value = re.sub(r"\s", "", text).upper()
    if not value:
        return None, None
    if not re.fullmatch(r"[0-9X]{4}|\d{17}[0-9X]|\d{15}", value):
        return None, str(_l("The ID number must be 18 characters, or its last 4 only."))
    return value[-4:], None


def plan(village: Village, rows: list[Row]) -> Plan:
    """Compare the file's rows with the village; say row by row what importing would do."""
    groups = {g.name: g for g in village.groups}
    existing = {
        (h.group_id, h.house_number): h
        for h in db.session.scalars(
            sa.select(Household).join(VillagerGroup).where(VillagerGroup.village_id == village.id)
        )
    }
    members_of: dict[int, list[Member]] = defaultdict(list)
    for member in db.session.scalars(
        sa.select(Member)
        .join(Household, Member.household_id == Household.id)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .where(VillagerGroup.village_id == village.id)
        .order_by(Member.is_head.desc(), Member.id)
    ):
        members_of[member.household_id].append(member)
    for household in existing.values():
        # Fill each household's members collection: updating them then needs no query each.
        set_committed_value(household, "members", members_of[household.id])

    reports: list[RowReport] = []
    by_household: dict[tuple[str, str], list[tuple[Row, RowReport]]] = defaultdict(list)
    for row in rows:
        report = RowReport(row.line, row.group, row.house_number, row.name or row.head, "new")
        if not row.group:
            report.problems.append(str(_l("No group.")))
        elif row.group not in groups:
            report.problems.append(
                str(_l("Unknown group “%(group)s”: add it to the village first.", group=row.group))
            )
        if not row.house_number:
            report.problems.append(str(_l("No house number.")))
        elif len(row.house_number) > 20:
            report.problems.append(str(_l("The house number is longer than 20 characters.")))
        if not (row.name or row.head):
            report.problems.append(str(_l("No name.")))
        elif len(row.name or row.head) > 60:
            report.problems.append(str(_l("The name is longer than 60 characters.")))
        if row.phone:
            phone = normalize_phone(row.phone)
            if not PHONE_RE.match(phone):
                report.problems.append(
                    str(_l("“%(phone)s” is not an 11-digit mobile number.", phone=row.phone))
                )
            row.phone = phone
        last4, problem = _id_last4(row.id_last4)
        if problem:
            report.problems.append(problem)
        row.id_last4 = last4 or ""
        reports.append(report)
        by_household[(row.group, row.house_number)].append((row, report))

    phones_taken = _phone_owners({r.phone for r in rows if PHONE_RE.match(r.phone)})
    plans: list[HouseholdPlan] = []
    phones_in_file: dict[str, tuple[str, str]] = {}
    for (group_name, house_number), entries in by_household.items():
        group = groups.get(group_name)
        heads = {r.head for r, _ in entries if r.head}
        head_rows = [
            r for r, _ in entries if r.relation in HEAD_WORDS or (r.head and r.name == r.head)
        ]
        problem = None
        if len(heads) > 1:
            problem = str(
                _l(
                    "Rows of this household name different heads: %(names)s.",
                    names="、".join(sorted(heads)),
                )
            )
        elif not heads and not head_rows:
            problem = str(_l("Missing head of household (户主)."))
        seen: dict[tuple[str, str], int] = {}
        people: list[PersonPlan] = []
        if heads:
            head_name = next(iter(heads))
        elif head_rows:
            head_name = head_rows[0].name
        else:
            head_name = ""
        for row, report in entries:
            name = row.name or row.head
            key = (name, row.id_last4)
            if key in seen:
                report.problems.append(
                    str(
                        _l(
                            "Duplicate: %(name)s is already on line %(line)s.",
                            name=name,
                            line=seen[key],
                        )
                    )
                )
                continue
            seen[key] = row.line
            if row.phone and PHONE_RE.match(row.phone):
                other = phones_in_file.get(row.phone)
                if other and other != (group_name, house_number):
                    report.problems.append(
                        str(
                            _l(
                                "The phone %(phone)s is also listed for another household.",
                                phone=row.phone,
                            )
                        )
                    )
                phones_in_file[row.phone] = (group_name, house_number)
            people.append(
                PersonPlan(
                    name=name,
                    phone=row.phone or None,
                    id_last4=row.id_last4 or None,
                    is_head=name == head_name,
                )
            )
        if problem:
            for _, report in entries:
                report.problems.append(problem)
        if group is None or any(r.problems for _, r in entries):
            for _, report in entries:
                report.status = "problem"
            continue
        if not any(p.is_head for p in people):
            people.insert(0, PersonPlan(head_name, None, None, True))
        hplan = HouseholdPlan(group, house_number, head_name, people)
        household = existing.get((group.id, house_number))
        if household is not None:
            hplan.household = household
            hplan.changes = _diff(household, members_of[household.id], hplan)
            hplan.status = "update" if hplan.changes else "unchanged"
        for person in people:
            owner = phones_taken.get(person.phone) if person.phone else None
            if owner is not None and (household is None or owner != household.id):
                for _, report in entries:
                    if report.name == person.name:
                        report.problems.append(
                            str(
                                _l(
                                    "The phone %(phone)s belongs to a member of another household.",
                                    phone=person.phone,
                                )
                            )
                        )
                        report.status = "problem"
        for _, report in entries:
            if report.status != "problem":
                report.status = hplan.status
        if all(r.status != "problem" for _, r in entries):
            plans.append(hplan)
    mentioned = {(h.group.id, h.house_number) for h in plans}
    mentioned |= {(groups[g].id, n) for g, n in by_household if g in groups}
    untouched = sum(1 for key in existing if key not in mentioned)
    return Plan(village, reports, plans, untouched)


def _phone_owners(phones: set[str]) -> dict[str, int]:
    """Return the household of each of these phones that a member already has."""
    owners: dict[str, int] = {}
    wanted = sorted(phones)
    for start in range(0, len(wanted), 5000):  # stay under SQLite's bound-parameter limit
        found = db.session.execute(
            sa.select(Member.phone, Member.household_id).where(
                Member.phone.in_(wanted[start : start + 5000])
            )
        )
        owners.update((phone, household_id) for phone, household_id in found)
    return owners


def _diff(household: Household, members: list[Member], hplan: HouseholdPlan) -> list[str]:
    """Say what the file changes in an existing household (empty: nothing)."""
    changes = []
    if household.name != hplan.head:
        changes.append(f"户主 {household.name} → {hplan.head}")
    if not household.is_active:
        changes.append("恢复在册")
    current = {m.name: m for m in members if m.is_active}
    listed = {p.name for p in hplan.people}
    for person in hplan.people:
        member = current.get(person.name) or next(
            (m for m in members if m.name == person.name), None
        )
        person.member = member
        if member is None:
            changes.append(f"+ {person.name}")
            continue
        if not member.is_active:
            changes.append(f"恢复 {person.name}")
        if person.phone and member.phone != person.phone:
            changes.append(f"{person.name} 电话")
        if person.id_last4 and member.id_last4 != person.id_last4:
            changes.append(f"{person.name} 身份证后四位")
        if member.is_head != person.is_head:
            changes.append(f"{person.name} {'户主' if person.is_head else '成员'}")
    changes += [f"- {name}" for name in current if name not in listed]
    return changes


# --- applying -----------------------------------------------------------------------------------


def can_import(user: User, village: Village) -> bool:
    """Return whether the user may import or export the village's roster: its town's admins."""
    return access.covers_village(user, village, Role.ADMIN)


def apply(roster_plan: Plan, actor: User, filename: str = "") -> dict[str, int]:
    """Carry out a plan without problems; return counts. Raises Forbidden, InvalidInput.

    New households get their accounts and card in bulk inserts; everything lands in the
    caller's one transaction, so a failure leaves the village as it was.
    """
    village = roster_plan.village
    if not can_import(actor, village):
        raise Forbidden()
    if not roster_plan.ok:
        raise InvalidInput(_l("The roster has problems; fix the file and upload it again."))
    new = [h for h in roster_plan.households if h.status == "new"]
    updated = [h for h in roster_plan.households if h.status == "update"]
    created = _create(new)
    for hplan in updated:
        _update(hplan)
    db.session.flush()
    counts = {
        "new": len(new),
        "updated": len(updated),
        "unchanged": roster_plan.count("unchanged"),
        "people": created,
    }
    audit.record(
        "roster.import",
        actor,
        village,
        summary=f"{village.name} {filename}: +{counts['new']} ~{counts['updated']}",
        after=counts,
    )
    log.info("user %s imported a roster into village %s: %s", actor.id, village.id, counts)
    return counts


def _create(plans: list[HouseholdPlan]) -> int:
    """Insert new households with members, two accounts and a card each; return people added."""
    if not plans:
        return 0
    households = [
        {"group_id": h.group.id, "house_number": h.house_number, "name": h.head, "is_active": True}
        for h in plans
    ]
    ids = _insert_households(households)
    monthly.count_new_households(row["group_id"] for row in households)  # no flush saw them
    members, accounts_, card_rows = [], [], []
    for household_id, hplan in zip(ids, plans, strict=True):
        for person in hplan.people:
            members.append(
                {
                    "household_id": household_id,
                    "name": person.name,
                    "phone": person.phone,
                    "id_last4": person.id_last4,
                    "is_head": person.is_head,
                    "is_active": True,
                }
            )
        for kind in (AccountKind.HOUSEHOLD_SPENDABLE, AccountKind.HOUSEHOLD_HONOUR):
            accounts_.append({"kind": kind, "household_id": household_id, "balance": 0})
        card_rows.append(
            {
                "household_id": household_id,
                "token": cards.new_token(),
                "code": cards.new_code_unchecked(),
            }
        )
    # render_nulls: one executemany; by default the ORM splits rows by which values are None,
    # which for a roster meant nearly one INSERT a person.
    db.session.execute(sa.insert(Member).execution_options(render_nulls=True), members)
    db.session.execute(sa.insert(Account), accounts_)
    cards.insert_unique(card_rows)
    return len(members)


def _insert_households(rows: list[dict]) -> list[int]:
    """Insert households in bulk; return their ids in the order of ``rows``."""
    from ..timeutil import utcnow

    now = utcnow()
    # RETURNING the natural key rather than relying on row order: with row order kept
    # (sort_by_parameter_order) SQLite sends one INSERT a household.
    result = db.session.execute(
        sa.insert(Household).returning(Household.id, Household.group_id, Household.house_number),
        [{**row, "created_at": now} for row in rows],
    )
    ids = {(group_id, number): id_ for id_, group_id, number in result}
    return [ids[(row["group_id"], row["house_number"])] for row in rows]


def _update(hplan: HouseholdPlan) -> None:
    household = hplan.household
    household.name = hplan.head
    household.is_active = True
    listed = {p.name for p in hplan.people}
    for person in hplan.people:
        member = person.member
        if member is None:
            member = Member(household=household, name=person.name)
            db.session.add(member)
        member.is_active = True
        member.is_head = person.is_head
        if person.phone:
            member.phone = person.phone
        if person.id_last4:
            member.id_last4 = person.id_last4
    for member in household.members:
        if member.is_active and member.name not in listed:
            member.is_active = False  # kept for the history, never deleted


# --- export -------------------------------------------------------------------------------------


def safe_row(row: list) -> list:
    return _safe_rows([row])[0]


def export(village: Village) -> bytes:
    """Return the village's roster as .xlsx, one row a person, in the format import reads."""
    book = Workbook()
    sheet = book.active
    # Excel refuses these characters in a sheet name (openpyxl raises ValueError).
    sheet.title = re.sub(r"[\[\]:*?/\\]", "_", village.name)[:31] or "Sheet"
    sheet.append(EXPORT_HEADER)
    rows = db.session.execute(
        sa.select(VillagerGroup.name, Household.house_number, Household.name, Member)
        .join(Household, Household.group_id == VillagerGroup.id)
        .join(Member, Member.household_id == Household.id)
        .where(
            VillagerGroup.village_id == village.id,
            Household.is_active.is_(True),
            Member.is_active.is_(True),
        )
        .order_by(
            VillagerGroup.name,
            sa.func.length(Household.house_number),
            Household.house_number,
            Member.is_head.desc(),
            Member.id,
        )
    )
    for group, house_number, head, member in rows:
        sheet.append(
            safe_row(
                [
                    group,
                    house_number,
                    head,
                    member.name,
                    "户主" if member.is_head else "",
                    member.phone or "",
                    member.id_last4 or "",
                ]
            )
        )
    for column in "ABCDEFG":
        sheet.column_dimensions[column].width = 14
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def existing_cards(village: Village) -> int:
    """Return how many households of the village have a card in force."""
    return db.session.scalar(
        sa.select(sa.func.count(Card.id))
        .join(Household, Card.household_id == Household.id)
        .join(VillagerGroup, Household.group_id == VillagerGroup.id)
        .where(VillagerGroup.village_id == village.id, Card.revoked_at.is_(None))
    )
