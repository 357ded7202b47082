"""The audit log page: a town's entries only, filters, paging, exports, and no way to change it."""

from __future__ import annotations

import ast
import csv
import io
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from pointsmart.admin import audit as audit_view
from pointsmart.extensions import db
from pointsmart.labels import AUDIT_ACTIONS, audit_action_label
from pointsmart.models import Category, Role, TransferKind
from pointsmart.services import audit, ledger, rules
from pointsmart.timeutil import LOCAL_TZ, to_local
from tests.conftest import login

SERVICES = Path(__file__).resolve().parent.parent / "pointsmart" / "services"


@pytest.fixture
def w(make):
    """Two towns. In A: an award recorded and approved, a rule made in a second village, an
    account change with no town; in B: an award and an account change of its own."""
    town_a, town_b = make.town("甲镇"), make.town("乙镇")
    a1, a2, b1 = (
        make.village(town_a, "甲一村"),
        make.village(town_a, "甲二村"),
        make.village(town_b),
    )
    household_a, household_b = make.household(make.group(a1)), make.household(make.group(b1))
    world = {
        "town_a": town_a,
        "town_b": town_b,
        "a1": a1,
        "a2": a2,
        "b1": b1,
        "admin_a": make.staff(Role.ADMIN, town_a),
        "admin_b": make.staff(Role.ADMIN, town_b),
        "cadre_a": make.staff(Role.CADRE, a1),
        "committee_a": make.staff(Role.COMMITTEE, a1),
        "committee_a2": make.staff(Role.COMMITTEE, a2),
        "cadre_b": make.staff(Role.CADRE, b1),
    }
    world["cadre_a"].display_name = "张网格"
    award = ledger.record(
        kind=TransferKind.AWARD,
        household=household_a,
        points=5,
        reason="甲镇的奖励",
        recorded_by=world["cadre_a"],
        key="audit-page-a",
    )
    ledger.post(award, world["committee_a"])
    rules.create(rules.RuleData("甲二村细则", Category.OTHER, 3), world["committee_a2"], village=a2)
    ledger.record(
        kind=TransferKind.AWARD,
        household=household_b,
        points=5,
        reason="乙镇的奖励",
        recorded_by=world["cadre_b"],
        key="audit-page-b",
    )
    audit.record(
        "account.reset_password",
        world["admin_a"],
        world["cadre_a"],
        summary="甲镇管理员重设密码",
        before={"is_active": True, "name": "旧名字"},
        after={"is_active": True, "name": "新名字", "role": "cadre"},
    )
    audit.record("account.create", world["admin_b"], world["cadre_b"], summary="乙镇管理员建账号")
    audit.record("clearing.run", None, summary="系统任务，无镇")
    db.session.commit()
    return world


def page_of(client, url: str = "/admin/audit", status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(True)[:500]
    return response.get_data(as_text=True)


def summaries(page: str) -> list[str]:
    return [s.strip() for s in re.findall(r'class="audit-summary">(.*?)</span>', page, re.S)]


@pytest.fixture
def as_admin_a(client, w):
    login(client, w["admin_a"])
    with client.session_transaction() as session:
        session["locale"] = "en"
    return client


# --- scope ---------------------------------------------------------------------------------------


def test_an_administrator_sees_their_towns_entries_and_their_peoples(as_admin_a, w):
    shown = summaries(page_of(as_admin_a))
    assert any("甲镇的奖励" in s for s in shown)  # recorded and approved: two entries
    assert sum("甲镇的奖励" in s for s in shown) == 2
    assert "甲二村细则 +3" in shown
    assert "甲镇管理员重设密码" in shown  # no town on the entry, but made by A's administrator
    assert not any("乙镇" in s for s in shown)
    assert "系统任务，无镇" not in shown


def test_another_towns_administrator_never_sees_them(client, w):
    login(client, w["admin_b"])
    shown = summaries(page_of(client))
    assert any("乙镇的奖励" in s for s in shown) and "乙镇管理员建账号" in shown
    assert not any("甲" in s for s in shown)
    # Asking for A's town or one of its villages by id is 404, as if they did not exist.
    page_of(client, f"/admin/audit?town={w['town_a'].id}", 404)
    page_of(client, f"/admin/audit?village={w['a1'].id}", 404)
    page_of(client, f"/admin/audit.csv?village={w['a1'].id}", 404)
    data = client.get("/admin/audit.csv").data.decode("utf-8-sig")
    assert "乙镇的奖励" in data and "甲" not in data


def test_only_administrators(client, w):
    for user in (w["committee_a"], w["cadre_a"]):
        login(client, user)
        for url in ("/admin/audit", "/admin/audit.csv", "/admin/audit.xlsx"):
            assert client.get(url).status_code == 403
    response = client.application.test_client().get("/admin/audit")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- filters -------------------------------------------------------------------------------------


def test_filter_by_person_action_and_village(as_admin_a, w):
    shown = summaries(page_of(as_admin_a, "/admin/audit?actor=网格"))
    assert shown and all("甲镇的奖励" in s for s in shown) and len(shown) == 1
    assert summaries(page_of(as_admin_a, "/admin/audit?actor=%25")) == []  # % is a character
    shown = summaries(page_of(as_admin_a, "/admin/audit?action=rule.create"))
    assert shown == ["甲二村细则 +3"]
    shown = summaries(page_of(as_admin_a, f"/admin/audit?village={w['a2'].id}"))
    assert shown == ["甲二村细则 +3"]
    page = page_of(as_admin_a, f"/admin/audit?village={w['a1'].id}&action=transfer.approve")
    assert len(summaries(page)) == 1
    assert audit_action_label("transfer.approve") in page


def test_filter_by_local_dates(as_admin_a, w):
    def at(local: str) -> None:
        when = datetime.fromisoformat(local).replace(tzinfo=LOCAL_TZ)
        entry = audit.record("village.rename", w["admin_a"], w["a1"], summary=f"at {local}")
        entry.at = when

    at("2025-03-10T10:00")
    at("2025-03-11T23:30")  # 15:30 UTC, the same UTC day
    at("2025-03-12T00:30")  # 16:30 UTC on the 11th: the 12th locally
    db.session.commit()
    shown = summaries(page_of(as_admin_a, "/admin/audit?from=2025-03-11&to=2025-03-11"))
    assert shown == ["at 2025-03-11T23:30"]
    shown = summaries(page_of(as_admin_a, "/admin/audit?from=2025-03-11&to=2025-03-12"))
    assert shown == ["at 2025-03-12T00:30", "at 2025-03-11T23:30"]  # newest first
    shown = summaries(page_of(as_admin_a, "/admin/audit?to=2025-03-10"))
    assert shown == ["at 2025-03-10T10:00"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("from=2025-02-30", "must be a date like"),
        ("from=2025-03-12&to=2025-03-11", "comes before the first"),
        ("action=drop.table", "Choose an action from the list"),
        ("to=1999-12-31", "2000 or later"),
    ],
)
@pytest.mark.parametrize("path", ["/admin/audit", "/admin/audit.csv", "/admin/audit.xlsx"])
def test_bad_filters_are_a_clear_400(as_admin_a, path, query, message):
    page = page_of(as_admin_a, f"{path}?{query}", 400)
    assert message in page
    assert summaries(page) == []


def test_the_action_filter_lists_every_known_action_by_its_label(as_admin_a):
    page = page_of(as_admin_a)
    options = re.findall(r'<option value="([a-z_.]+)"[^>]*>([^<]*)</option>', page)
    assert [code for code, _label in options] == list(AUDIT_ACTIONS)
    assert all(label and label != code for code, label in options)


def test_every_action_the_services_record_has_a_label():
    """A new ``audit.record("x.y", …)`` in a service fails here until labels.py names it."""
    used: set[str] = set()
    calls = 0
    for path in SERVICES.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "audit"
            ):
                continue
            calls += 1
            action = node.args[0]
            if isinstance(action, ast.JoinedStr):
                # ledger.record: f"{kind.value}.record" for the two kinds it records.
                assert ast.unparse(action) == "f'{kind.value}.record'", path.name
                used |= {"award.record", "deduction.record"}
                continue
            codes = [
                c.value
                for c in ast.walk(action)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            assert codes, (path.name, ast.unparse(action))
            used |= set(codes)
    assert calls >= 35 and len(used) > calls - 5
    missing = sorted(used - set(AUDIT_ACTIONS))
    assert not missing, f"add labels to pointsmart/labels.py for: {missing}"


# --- what an entry shows -------------------------------------------------------------------------


def test_an_entry_shows_when_who_what_and_the_changes(as_admin_a, w):
    page = page_of(as_admin_a, "/admin/audit?action=account.reset_password")
    (entry,) = re.findall(r'<li class="entry audit-entry".*?</li>\s*</ul>', page, re.S)
    assert audit_action_label("account.reset_password") in entry
    assert w["admin_a"].display_name in entry
    local = to_local(
        db.session.scalar(
            audit_view._query(audit_view.Filters(w["town_a"], [])).where(
                audit_view.AuditEntry.action == "account.reset_password"
            )
        ).at
    )
    assert local.strftime("%Y-%m-%d %H:%M:%S") in entry
    assert "<code>name</code>: <del>旧名字</del> → <ins>新名字</ins>" in entry
    assert "<code>role</code>: <ins>cadre</ins>" in entry
    assert "is_active" not in entry  # unchanged values are left out


# --- paging --------------------------------------------------------------------------------------


def test_fifty_a_page_newest_first(as_admin_a, w):
    start = datetime(2025, 1, 1, 8, 0, tzinfo=LOCAL_TZ)
    for i in range(120):
        entry = audit.record("rule.revise", w["committee_a"], w["a1"], summary=f"第{i:03d}条")
        entry.at = start + timedelta(minutes=i)
    db.session.commit()
    base = "/admin/audit?action=rule.revise"
    first = summaries(page_of(as_admin_a, base))
    assert first == [f"第{i:03d}条" for i in range(119, 69, -1)]
    page = page_of(as_admin_a, base + "&page=2")
    assert summaries(page) == [f"第{i:03d}条" for i in range(69, 19, -1)]
    assert "Page 2 of 3" in page and "page=3" in page and "action=rule.revise" in page
    assert summaries(page_of(as_admin_a, base + "&page=3")) == [
        f"第{i:03d}条" for i in range(19, -1, -1)
    ]
    assert len(summaries(page_of(as_admin_a, base + "&page=99"))) == 20  # the last page
    assert 'id="audit-count">120 entries' in page_of(as_admin_a, base).replace("\n", "")


# --- exports -------------------------------------------------------------------------------------


def test_the_exports_hold_the_filtered_entries(as_admin_a, w):
    query = f"village={w['a1'].id}"
    response = as_admin_a.get(f"/admin/audit.csv?{query}")
    assert response.status_code == 200 and response.data.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    header, *entries = lines
    assert header[:4] == ["Time", "Who", "Action", "Action code"]
    assert sorted(row[3] for row in entries) == ["award.record", "transfer.approve"]
    assert all(row[6] == "甲一村" for row in entries)

    response = as_admin_a.get(f"/admin/audit.xlsx?{query}")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.data)).active
    book_rows = list(sheet.iter_rows(values_only=True))
    assert list(book_rows[0][:4]) == header[:4]
    assert sorted(row[3] for row in book_rows[1:]) == ["award.record", "transfer.approve"]
    assert all(isinstance(row[0], datetime) for row in book_rows[1:])  # a real date and time
    # The whole unfiltered log of A: its own entries and its administrator's account change.
    data = as_admin_a.get("/admin/audit.csv").data.decode("utf-8-sig")
    assert "甲镇管理员重设密码" in data and "乙镇" not in data
    assert '"{""is_active"": true, ""name"": ""旧名字""}"' in data  # before, in full


def test_an_export_stops_at_the_cap_and_says_so(as_admin_a, w, monkeypatch):
    monkeypatch.setattr(audit_view, "EXPORT_CAP", 2)
    lines = list(
        csv.reader(io.StringIO(as_admin_a.get("/admin/audit.csv").data.decode("utf-8-sig")))
    )
    note, header, *entries = lines
    assert "Only the newest 2 of 4 entries" in note[0]
    assert len(entries) == 2 and header[0] == "Time"
    rows = list(
        load_workbook(io.BytesIO(as_admin_a.get("/admin/audit.xlsx").data)).active.iter_rows(
            values_only=True
        )
    )
    assert "Only the newest 2 of 4 entries" in rows[0][0] and len(rows) == 4
    assert "newest; narrow the filters" in page_of(as_admin_a)


# --- nobody changes the log ----------------------------------------------------------------------


def test_no_route_under_admin_audit_changes_anything(app):
    rules_ = [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin/audit")]
    assert {r.endpoint for r in rules_} == {"admin.audit", "admin.audit_xlsx", "admin.audit_csv"}
    for rule in rules_:
        assert not rule.methods & {"POST", "PUT", "PATCH", "DELETE"}, rule.rule
    # Nor anywhere else: no endpoint names the audit log but these read-only ones.
    others = [
        r.rule
        for r in app.url_map.iter_rules()
        if "audit" in r.endpoint and r.rule not in {x.rule for x in rules_}
    ]
    assert others == []


def test_writing_to_the_audit_pages_is_refused(as_admin_a):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert as_admin_a.open("/admin/audit", method=method).status_code == 405
