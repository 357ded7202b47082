"""The villager's history answers "why": rule, points, recorder, approver or auto-approval."""

from __future__ import annotations

from pointsmart.extensions import db
from pointsmart.models import Category, Role
from pointsmart.services import awards, rules
from pointsmart.services.rules import RuleData


def test_history_names_rule_recorder_and_auto_approval(client, make, login_as):
    village = make.village(auto_approve_max=10)
    household = make.household(make.group(village))
    committee = make.staff(Role.COMMITTEE, village)
    cadre = make.staff(Role.CADRE, village)
    rule = rules.create(
        RuleData("垃圾分类合格", Category.WASTE_SORTING, 5), committee, village=village
    )
    awards.record_by_rule(household=household, rule=rule, recorded_by=cadre, key="why-1")
    villager = make.villager(household)
    db.session.commit()

    login_as(villager)
    page = client.get("/me/").get_data(as_text=True)
    assert "垃圾分类合格" in page and "+5" in page
    assert cadre.display_name in page
    assert "按本村设置自动审核通过" in page
