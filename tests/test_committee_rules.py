"""The rule catalogue, town templates and approval settings over HTTP: pages, actions, bad input."""

from __future__ import annotations

import html
import re
from datetime import date
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import gettext

from pointsmart.extensions import db
from pointsmart.models import (
    Category,
    LimitPeriod,
    Role,
    ScoringRule,
    Transfer,
    TransferKind,
    Village,
)
from pointsmart.services import ledger, rules
from pointsmart.services.rules import RuleData


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def translated(app, message: str, **values) -> str:
    with app.test_request_context():
        return gettext(message, **values)


def rule_rows(page: str, kind: str) -> list[str]:
    """Return the rows of the 'awards' or 'deductions' list of the first catalogue on the page."""
    block = re.search(rf'<ul class="entries {kind}">(.*?)</ul>', page, re.S)
    return re.findall(r'<li class="entry rule">(.*?)</li>', block.group(1), re.S) if block else []


def count(model=ScoringRule) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot():
    return db.session.execute(
        sa.select(
            ScoringRule.id, ScoringRule.name, ScoringRule.points, ScoringRule.is_current
        ).order_by(ScoringRule.id)
    ).all()


@pytest.fixture
def c(make):
    """A town with our village and a neighbour, another town; committee, cadre and admins."""
    town = make.town()
    village = make.village(town, name="青山村")
    neighbour = make.village(town, name="柳溪村")
    far_town = make.town()
    c = SimpleNamespace(
        town=town,
        village=village,
        neighbour=neighbour,
        far_town=far_town,
        household=make.household(make.group(village)),
        me=make.staff(Role.COMMITTEE, village),
        other=make.staff(Role.COMMITTEE, village),
        cadre=make.staff(Role.CADRE, village),
        neighbour_committee=make.staff(Role.COMMITTEE, neighbour),
        admin=make.staff(Role.ADMIN, town),
        far_admin=make.staff(Role.ADMIN, far_town),
    )
    c.me.display_name = "王主任"
    db.session.commit()
    return c


FORM = {
    "name": "门前三包",
    "kind": "award",
    "points": "10",
    "category": "sanitation",
    "limit_count": "2",
    "limit_period": "week",
    "active_from": "",
    "active_until": "",
}


def form(**changes) -> dict:
    data = {**FORM, **changes}
    return {k: v for k, v in data.items() if v is not None}


# --- the catalogue page -----------------------------------------------------------------------


def test_the_catalogue_lists_awards_then_deductions_with_every_detail(app, client, login_as, c):
    rules.create(
        RuleData("垃圾分类合格", Category.WASTE_SORTING, 5, 1, LimitPeriod.DAY),
        c.me,
        village=c.village,
    )
    rules.create(
        RuleData(
            "植树造林",
            Category.TREE_PLANTING,
            15,
            photo_required=True,
            active_from=date(2026, 3, 1),
            active_until=date(2026, 4, 30),
        ),
        c.me,
        village=c.village,
    )
    rules.create(
        RuleData("乱倒垃圾", Category.SANITATION, -10, 10, LimitPeriod.MONTH, warning_first=True),
        c.me,
        village=c.village,
    )
    rules.create(
        RuleData("外村细则", Category.OTHER, 3), c.neighbour_committee, village=c.neighbour
    )
    db.session.commit()
    login_as(c.me)

    response = client.get("/committee/rules/")

    assert response.status_code == 200
    page = text(response)
    assert page.index(translated(app, "Awards")) < page.index(translated(app, "Deductions"))
    awards, deductions = rule_rows(page, "awards"), rule_rows(page, "deductions")
    assert len(awards) == 2
    (sorting,) = [r for r in awards if "垃圾分类合格" in r]
    (tree,) = [r for r in awards if "植树造林" in r]
    assert "+5" in sorting
    assert translated(app, "Waste sorting") in sorting
    assert translated(app, "%(n)s time(s) %(period)s", n=1, period=translated(app, "per day")) in (
        sorting
    )
    assert translated(app, "Always in force") in sorting
    assert translated(app, "photo required") not in sorting
    assert "+15" in tree and translated(app, "photo required") in tree
    assert translated(app, "No limit") in tree
    assert (
        translated(app, "In force %(start)s to %(end)s", start="2026-03-01", end="2026-04-30")
        in tree
    )
    (littering,) = deductions
    assert "乱倒垃圾" in littering and "-10" in littering
    assert translated(app, "first offence: warning only") in littering
    assert translated(
        app, "%(n)s time(s) %(period)s", n=10, period=translated(app, "per month")
    ) in (littering)
    assert "外村细则" not in page


def test_other_roles_cannot_open_the_catalogue_pages(client, login_as, c):
    login_as(c.cadre)
    assert client.get("/committee/rules/").status_code == 403
    assert client.get(f"/committee/villages/{c.village.id}/rules/new").status_code == 403


# --- adding -----------------------------------------------------------------------------------


def test_adding_a_rule(app, client, login_as, c):
    login_as(c.me)
    assert client.get(f"/committee/villages/{c.village.id}/rules/new").status_code == 200

    response = client.post(
        f"/committee/villages/{c.village.id}/rules/new",
        data=form(
            name="焚烧秸秆",
            kind="deduction",
            points="20",
            category="other",
            limit_period="month",
            limit_count="2",
            photo_required="y",
            warning_first="y",
            active_from="2026-01-01",
        ),
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/committee/rules/"
    rule = db.session.scalar(sa.select(ScoringRule))
    assert (rule.name, rule.points, rule.category) == ("焚烧秸秆", -20, Category.OTHER)
    assert (rule.limit_count, rule.limit_period) == (2, LimitPeriod.MONTH)
    assert rule.photo_required and rule.warning_first
    assert (rule.active_from, rule.active_until) == (date(2026, 1, 1), None)
    assert (rule.village_id, rule.created_by_id) == (c.village.id, c.me.id)
    page = text(client.get("/committee/rules/"))
    assert translated(app, "Rule added: %(name)s.", name="焚烧秸秆") in page
    assert "焚烧秸秆" in rule_rows(page, "deductions")[0]


def test_full_width_digits_are_read_as_points(client, login_as, c):
    login_as(c.me)
    client.post(
        f"/committee/villages/{c.village.id}/rules/new",
        data=form(points="１２", limit_count="", limit_period="none"),
    )
    assert db.session.scalar(sa.select(ScoringRule.points)) == 12


BAD_FORMS = [
    (
        {"points": "0"},
        "Points must be a whole number from %(min)s to %(max)s.",
        {"min": 1, "max": 10000},
    ),
    (
        {"points": "10001"},
        "Points must be a whole number from %(min)s to %(max)s.",
        {"min": 1, "max": 10000},
    ),
    ({"points": "99999999999999"}, "Please enter a whole number in digits, for example 5.", {}),
    (
        {"points": "-5"},
        "Points must be a whole number from %(min)s to %(max)s.",
        {"min": 1, "max": 10000},
    ),
    ({"points": "abc"}, "Please enter a whole number in digits, for example 5.", {}),
    ({"points": "2.5"}, "Please enter a whole number in digits, for example 5.", {}),
    ({"points": ""}, "Please enter the points.", {}),
    ({"name": ""}, "Please give the rule a name.", {}),
    ({"limit_period": "none"}, "A limit needs both a number of times and a period.", {}),
    ({"limit_count": ""}, "A limit needs both a number of times and a period.", {}),
    (
        {"limit_count": "0"},
        "The limit must be between %(min)s and %(max)s times per period.",
        {"min": 1, "max": 100},
    ),
    (
        {"warning_first": "y"},
        "A first-time warning needs a deduction rule with a limit period to count offences in.",
        {},
    ),
    (
        {"active_from": "2026-05-02", "active_until": "2026-05-01"},
        "The rule cannot end before it starts.",
        {},
    ),
    (
        {"name": "已有细则"},
        "The catalogue already has a rule called %(name)s.",
        {"name": "已有细则"},
    ),
    ({"category": "gardening"}, None, {}),
    ({"limit_period": "fortnight"}, None, {}),
    ({"kind": "gift"}, None, {}),
    ({"active_from": "2026-02-30"}, None, {}),
]


@pytest.mark.parametrize(("changes", "message", "values"), BAD_FORMS, ids=lambda v: str(v)[:30])
def test_bad_input_is_explained_and_adds_nothing(
    app, client, login_as, c, changes, message, values
):
    rules.create(RuleData("已有细则", Category.OTHER, 1), c.me, village=c.village)
    db.session.commit()
    before = snapshot()
    login_as(c.me)

    response = client.post(f"/committee/villages/{c.village.id}/rules/new", data=form(**changes))

    assert response.status_code == 200  # the form again, with what was typed
    page = text(response)
    if message is not None:
        assert translated(app, message, **values) in page
    else:  # WTForms' own message, in its own words
        assert 'class="error"' in page
    assert snapshot() == before


@pytest.mark.parametrize("village", ["neighbour", "unknown", "huge"])
def test_a_rule_for_another_village_is_not_found(client, login_as, c, village):
    village_id = {
        "neighbour": c.neighbour.id,
        "unknown": c.neighbour.id + 1000,
        "huge": 99999999999,
    }[village]
    login_as(c.me)
    url = f"/committee/villages/{village_id}/rules/new"
    assert client.get(url).status_code == 404
    assert client.post(url, data=form()).status_code == 404
    assert count() == 0


# --- editing, history, withdrawing ------------------------------------------------------------


@pytest.fixture
def sorting(c):
    """Our rule, with one posted award given under version 1."""
    rule = rules.create(
        RuleData("垃圾分类合格", Category.WASTE_SORTING, 5, 1, LimitPeriod.DAY),
        c.me,
        village=c.village,
    )
    transfer = ledger.record(
        kind=TransferKind.AWARD,
        household=c.household,
        points=5,
        reason=rule.name,
        recorded_by=c.cadre,
        key="given-under-v1",
        rule=rule,
    )
    ledger.post(transfer, c.other)
    db.session.commit()
    return SimpleNamespace(rule=rule, transfer=transfer)


def test_editing_publishes_a_new_version_and_the_history_shows_both(
    app, client, login_as, c, sorting
):
    login_as(c.me)
    page = text(client.get(f"/committee/rules/{sorting.rule.id}/edit"))
    assert 'value="垃圾分类合格"' in page and 'value="5"' in page
    assert re.search(r'<option selected value="day">|<option value="day" selected', page)

    response = client.post(
        f"/committee/rules/{sorting.rule.id}/edit",
        data=form(
            name="垃圾分类合格",
            points="8",
            category="waste_sorting",
            limit_count="1",
            limit_period="day",
        ),
    )

    new = db.session.scalar(sa.select(ScoringRule).where(ScoringRule.is_current.is_(True)))
    assert (new.version, new.points, new.family) == (2, 8, sorting.rule.family)
    assert response.headers["Location"] == f"/committee/rules/{new.id}"
    page = text(client.get(response.headers["Location"]))
    assert (
        translated(app, "Saved as version %(version)s of %(name)s.", version=2, name="垃圾分类合格")
        in page
    )
    v2 = re.search(r'id="version-2">(.*?)</li>', page, re.S).group(1)
    v1 = re.search(r'id="version-1">(.*?)</li>', page, re.S).group(1)
    assert "+8" in v2 and translated(app, "Records given under this version: %(n)s", n=0) in v2
    assert "+5" in v1 and translated(app, "Records given under this version: %(n)s", n=1) in v1
    assert translated(app, "Published by %(name)s", name="王主任") in v1
    # The award given before keeps its version and points.
    given = db.session.get(Transfer, sorting.transfer.id)
    assert (given.rule_id, given.amount) == (sorting.rule.id, 5)
    assert ledger.balance_of(c.household) == ledger.Balance(5, 5)
    rows = rule_rows(text(client.get("/committee/rules/")), "awards")
    assert len(rows) == 1 and "+8" in rows[0]


def test_saving_an_unchanged_rule_publishes_nothing(app, client, login_as, c, sorting):
    login_as(c.me)
    response = client.post(
        f"/committee/rules/{sorting.rule.id}/edit",
        data=form(
            name="垃圾分类合格",
            points="5",
            category="waste_sorting",
            limit_count="1",
            limit_period="day",
        ),
        follow_redirects=True,
    )
    assert translated(app, "Nothing was changed.") in text(response)
    assert count() == 1


def test_editing_an_old_version_is_refused_with_a_message(app, client, login_as, c, sorting):
    rules.revise(sorting.rule, RuleData("垃圾分类合格", Category.WASTE_SORTING, 6), c.me)
    db.session.commit()
    before = snapshot()
    login_as(c.me)
    response = client.post(f"/committee/rules/{sorting.rule.id}/edit", data=form(points="9"))
    assert response.status_code == 200
    assert translated(app, "This rule has been replaced; edit its newest version.") in text(
        response
    )
    assert snapshot() == before


def test_a_bad_edit_is_explained_and_changes_nothing(app, client, login_as, c, sorting):
    before = snapshot()
    login_as(c.me)
    response = client.post(f"/committee/rules/{sorting.rule.id}/edit", data=form(points="0"))
    assert response.status_code == 200
    assert translated(
        app, "Points must be a whole number from %(min)s to %(max)s.", min=1, max=10000
    ) in text(response)
    assert snapshot() == before


def test_withdrawing_takes_the_rule_out_and_keeps_its_history(app, client, login_as, c, sorting):
    login_as(c.me)
    response = client.post(f"/committee/rules/{sorting.rule.id}/withdraw", follow_redirects=True)
    page = text(response)
    assert translated(app, "Rule withdrawn: %(name)s.", name="垃圾分类合格") in page
    assert translated(app, "Withdrawn: no longer in the catalogue.") in page
    assert f"/committee/rules/{sorting.rule.id}/edit" not in page
    catalogue = text(client.get("/committee/rules/"))
    assert rule_rows(catalogue, "awards") == []
    assert translated(app, "Withdrawn rules (%(n)s)", n=1) in catalogue
    given = db.session.get(Transfer, sorting.transfer.id)
    assert given.rule_id == sorting.rule.id
    assert ledger.balance_of(c.household) == ledger.Balance(5, 5)


@pytest.mark.parametrize("which", ["neighbour", "template", "unknown", "huge"])
def test_a_rule_outside_the_members_villages_is_not_found(client, login_as, c, which):
    if which == "neighbour":
        rule_id = rules.create(
            RuleData("外村细则", Category.OTHER, 3), c.neighbour_committee, village=c.neighbour
        ).id
    elif which == "template":
        rule_id = rules.create(RuleData("模板", Category.OTHER, 3), c.admin, town=c.town).id
    else:
        rule_id = 1000 if which == "unknown" else 99999999999
    db.session.commit()
    before = snapshot()
    login_as(c.me)
    assert client.get(f"/committee/rules/{rule_id}").status_code == 404
    assert client.get(f"/committee/rules/{rule_id}/edit").status_code == 404
    assert client.post(f"/committee/rules/{rule_id}/edit", data=form()).status_code == 404
    assert client.post(f"/committee/rules/{rule_id}/withdraw").status_code == 404
    assert snapshot() == before


# --- copying the town's templates -------------------------------------------------------------


def test_copying_the_towns_templates(app, client, login_as, c):
    for data in (
        RuleData("垃圾分类合格", Category.WASTE_SORTING, 5, 1, LimitPeriod.DAY),
        RuleData("植树造林", Category.TREE_PLANTING, 15),
        RuleData("焚烧秸秆", Category.OTHER, -20),
    ):
        rules.create(data, c.admin, town=c.town)
    rules.create(RuleData("植树造林", Category.TREE_PLANTING, 12), c.me, village=c.village)
    db.session.commit()
    login_as(c.me)
    page = text(client.get("/committee/rules/"))
    assert translated(app, "Copy the town templates (%(n)s)", n=3) in page

    response = client.post(
        f"/committee/villages/{c.village.id}/rules/copy-templates", follow_redirects=True
    )

    page = text(response)
    message = (
        "Copied %(copied)s rule(s) from the town's templates; %(skipped)s were skipped because "
        "the catalogue already has a rule of that name."
    )
    assert translated(app, message, copied=2, skipped=1) in page
    names = {r.name: r.points for r in rules.catalogue(village=c.village)}
    assert names == {"垃圾分类合格": 5, "植树造林": 12, "焚烧秸秆": -20}

    again = client.post(
        f"/committee/villages/{c.village.id}/rules/copy-templates", follow_redirects=True
    )
    assert translated(app, message, copied=0, skipped=3) in text(again)
    assert len(rules.catalogue(village=c.village)) == 3


def test_copying_without_templates_says_so(app, client, login_as, c):
    login_as(c.me)
    response = client.post(
        f"/committee/villages/{c.village.id}/rules/copy-templates", follow_redirects=True
    )
    assert translated(app, "The town has not published any rule templates yet.") in text(response)
    assert count() == 0


def test_copying_into_another_village_is_not_found(client, login_as, c):
    rules.create(RuleData("模板", Category.OTHER, 3), c.admin, town=c.town)
    db.session.commit()
    login_as(c.me)
    response = client.post(f"/committee/villages/{c.neighbour.id}/rules/copy-templates")
    assert response.status_code == 404
    assert rules.catalogue(village=c.neighbour) == []


# --- town templates (administrators) ----------------------------------------------------------


def test_the_administrator_keeps_the_towns_templates(app, client, login_as, c):
    rules.create(RuleData("别镇模板", Category.OTHER, 3), c.far_admin, town=c.far_town)
    rules.create(RuleData("村里的", Category.OTHER, 3), c.me, village=c.village)
    db.session.commit()
    login_as(c.admin)

    response = client.post(
        f"/admin/towns/{c.town.id}/rules/new", data=form(name="门前三包", points="10")
    )
    assert response.headers["Location"] == "/admin/rules/"
    template = db.session.scalar(sa.select(ScoringRule).where(ScoringRule.name == "门前三包"))
    assert (template.town_id, template.village_id, template.points) == (c.town.id, None, 10)
    page = text(client.get("/admin/rules/"))
    assert translated(app, "Template added: %(name)s.", name="门前三包") in page
    assert "门前三包" in rule_rows(page, "awards")[0]
    assert "别镇模板" not in page and "村里的" not in page

    response = client.post(
        f"/admin/rules/{template.id}/edit", data=form(name="门前三包", points="12")
    )
    new = db.session.scalar(
        sa.select(ScoringRule).where(
            ScoringRule.family == template.family, ScoringRule.version == 2
        )
    )
    assert new.points == 12 and response.headers["Location"] == f"/admin/rules/{new.id}"
    page = text(client.get(f"/admin/rules/{new.id}"))
    assert 'id="version-1"' in page and 'id="version-2"' in page

    client.post(f"/admin/rules/{new.id}/withdraw")
    assert rules.catalogue(town=c.town) == []


def test_bad_template_input_is_explained(app, client, login_as, c):
    login_as(c.admin)
    response = client.post(f"/admin/towns/{c.town.id}/rules/new", data=form(points="abc"))
    assert response.status_code == 200
    assert translated(app, "Please enter a whole number in digits, for example 5.") in text(
        response
    )
    assert count() == 0


def test_templates_of_another_town_are_not_found(client, login_as, c):
    theirs = rules.create(RuleData("别镇模板", Category.OTHER, 3), c.far_admin, town=c.far_town)
    village_rule = rules.create(RuleData("村里的", Category.OTHER, 3), c.me, village=c.village)
    db.session.commit()
    before = snapshot()
    login_as(c.admin)
    assert client.get(f"/admin/towns/{c.far_town.id}/rules/new").status_code == 404
    assert client.post(f"/admin/towns/{c.far_town.id}/rules/new", data=form()).status_code == 404
    for rule_id in (theirs.id, village_rule.id, 99999999999):
        assert client.get(f"/admin/rules/{rule_id}").status_code == 404
        assert client.post(f"/admin/rules/{rule_id}/edit", data=form()).status_code == 404
        assert client.post(f"/admin/rules/{rule_id}/withdraw").status_code == 404
    assert snapshot() == before


def test_a_committee_member_cannot_open_the_template_pages(client, login_as, c):
    login_as(c.me)
    assert client.get("/admin/rules/").status_code == 403
    assert client.post(f"/admin/towns/{c.town.id}/rules/new", data=form()).status_code == 403
    assert count() == 0


# --- approval settings ------------------------------------------------------------------------


def settings_of(village) -> tuple:
    db.session.expire_all()
    stored = db.session.get(Village, village.id)
    return stored.auto_approve_max, stored.two_approver_min


def test_the_settings_page_shows_and_saves_the_thresholds(app, client, login_as, c):
    login_as(c.me)
    page = text(client.get(f"/committee/villages/{c.village.id}/settings"))
    assert translated(app, "Now: every award waits for a committee member.") in page
    assert translated(app, "Now: one committee member approves each record.") in page

    response = client.post(
        f"/committee/villages/{c.village.id}/settings",
        data={"auto_approve_max": "5", "two_approver_min": "30"},
        follow_redirects=True,
    )

    page = text(response)
    assert translated(app, "Approval settings of %(village)s saved.", village="青山村") in page
    assert settings_of(c.village) == (5, 30)
    assert 'value="5"' in page and 'value="30"' in page
    assert (
        translated(
            app,
            "Now: awards of up to %(n)s points are posted at once, without a committee member.",
            n=5,
        )
        in page
    )

    client.post(
        f"/committee/villages/{c.village.id}/settings",
        data={"auto_approve_max": "", "two_approver_min": " "},
    )
    assert settings_of(c.village) == (None, None)


RANGE = "Please enter a whole number from %(min)s to %(max)s, or leave it empty."


@pytest.mark.parametrize(
    ("data", "message", "values"),
    [
        ({"auto_approve_max": "-1"}, RANGE, {"min": 0, "max": 10000}),
        ({"auto_approve_max": "10001"}, RANGE, {"min": 0, "max": 10000}),
        (
            {"two_approver_min": "100000000000"},
            "Please enter a whole number in digits, for example 5.",
            {},
        ),
        ({"two_approver_min": "abc"}, "Please enter a whole number in digits, for example 5.", {}),
        ({"auto_approve_max": "2.5"}, "Please enter a whole number in digits, for example 5.", {}),
        (
            {"auto_approve_max": "40", "two_approver_min": "30"},
            "Awards above %(two)s points need two approvers, so auto-approval cannot go above %(two)s.",
            {"two": 30},
        ),
    ],
)
def test_bad_settings_are_explained_and_change_nothing(
    app, client, login_as, c, data, message, values
):
    c.village.auto_approve_max, c.village.two_approver_min = 3, 50
    db.session.commit()
    login_as(c.me)
    response = client.post(
        f"/committee/villages/{c.village.id}/settings",
        data={"auto_approve_max": "3", "two_approver_min": "50", **data},
    )
    assert response.status_code == 200
    assert translated(app, message, **values) in text(response)
    assert settings_of(c.village) == (3, 50)


def test_another_villages_settings_are_not_found(client, login_as, c):
    login_as(c.me)
    url = f"/committee/villages/{c.neighbour.id}/settings"
    assert client.get(url).status_code == 404
    assert client.post(url, data={"auto_approve_max": "100"}).status_code == 404
    assert settings_of(c.neighbour) == (None, None)
    login_as(c.cadre)
    assert client.get(f"/committee/villages/{c.village.id}/settings").status_code == 403
