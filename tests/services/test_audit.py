"""The audit log: each staff action leaves an entry naming who, what and where; entries never change."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from pointsmart.extensions import db
from pointsmart.models import AuditEntry, Category, Role, TransferKind
from pointsmart.services import (
    boards,
    cards,
    catalogue,
    clearing,
    ledger,
    ratings,
    redemptions,
    rounds,
    rules,
    submissions,
)
from pointsmart.services.rankings import this_month


@pytest.fixture
def w(make):
    village = make.village()
    group = make.group(village)
    household = make.household(group)
    shop = make.shop(village)
    world = {
        "village": village,
        "group": group,
        "household": household,
        "shop": shop,
        "cadre": make.staff(Role.CADRE, village),
        "committee": make.staff(Role.COMMITTEE, village),
        "clerk": make.staff(Role.CLERK, shop),
        "villager": make.villager(household),
    }
    make.funded(household, 100)
    world["item"] = catalogue.create_item(
        shop, catalogue.ItemData("毛巾", "日用品", 10), world["clerk"]
    )
    catalogue.receive(world["item"], world["clerk"], quantity_=10, key="audit-in")
    world["rule"] = rules.create(
        rules.RuleData("垃圾分类", Category.WASTE_SORTING, 5), world["committee"], village=village
    )
    db.session.commit()
    return world


def award(w):
    return ledger.record(
        kind=TransferKind.AWARD,
        household=w["household"],
        points=7,
        reason="植树",
        recorded_by=w["cadre"],
        key="audit-award",
    )


def sale(w):
    redemption, _ = redemptions.checkout(
        shop=w["shop"],
        household=w["household"],
        cart={w["item"].id: 2},
        clerk=w["clerk"],
        key="a-s",
    )
    return redemption


ACTIONS = {
    "award.record": lambda w: award(w),
    "transfer.approve": lambda w: ledger.post(award(w), w["committee"]),
    "transfer.reject": lambda w: ledger.void(award(w), w["committee"], "重复"),
    "transfer.reverse": lambda w: ledger.reverse(
        ledger.post(award(w), w["committee"]), w["committee"], "记错", "audit-rev"
    ),
    "rule.create": lambda w: rules.create(
        rules.RuleData("扫地", Category.SANITATION, 3), w["committee"], village=w["village"]
    ),
    "rule.revise": lambda w: rules.revise(
        w["rule"], rules.RuleData("垃圾分类", Category.WASTE_SORTING, 6), w["committee"]
    ),
    "rule.withdraw": lambda w: rules.withdraw(w["rule"], w["committee"]),
    "item.create": lambda w: catalogue.create_item(
        w["shop"], catalogue.ItemData("肥皂", "日用品", 3), w["clerk"]
    ),
    "item.update": lambda w: catalogue.update_item(
        w["item"], catalogue.ItemData("毛巾", "日用品", 12), w["clerk"]
    ),
    "stock.intake": lambda w: catalogue.receive(w["item"], w["clerk"], quantity_=3, key="a-in2"),
    "stock.write_off": lambda w: catalogue.write_off(
        w["item"], w["clerk"], quantity_=1, reason="破损", key="a-wo"
    ),
    "shop.window": lambda w: catalogue.set_exchange_window(w["shop"], w["clerk"], days="10"),
    "card.reissue": lambda w: cards.reissue(w["household"], w["committee"], "丢失"),
    "redemption.checkout": sale,
    "redemption.void": lambda w: redemptions.void(sale(w), w["clerk"], reason="退", key="a-v"),
    "day.close": lambda w: redemptions.close_day(w["shop"], date(2026, 1, 1), w["clerk"]),
    "clearing.set_date": lambda w: clearing.set_date(w["village"], w["committee"], 12, 31),
    "clearing.run": lambda w: clearing.run(w["village"], date(2026, 1, 1), w["committee"]),
    "rating_round.open": lambda w: ratings.open_round(
        w["village"], title="春季", opener=w["committee"]
    ),
    "inspection.open": lambda w: rounds.open_round(w["group"], w["cadre"], "巡查"),
    "board.publish": lambda w: boards.publish_monthly(w["village"], this_month(), w["committee"]),
    "settings.board_names": lambda w: boards.set_board_names(w["village"], w["committee"], "full"),
    "settings.approval": lambda w: rules.set_approval_settings(
        w["village"], w["committee"], auto_approve_max=5, two_approver_min=20
    ),
    "claim.reject": lambda w: submissions.reject_claim(
        submissions.submit_claim(w["villager"], "打扫", key="a-c"), w["cadre"], "不属实"
    ),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_each_staff_action_leaves_an_audit_entry(w, action):
    ACTIONS[action](w)
    db.session.commit()
    entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)).all()
    assert entries, f"no audit entry for {action}"
    entry = entries[-1]
    assert entry.actor_id is not None and entry.actor_name
    assert entry.village_id == w["village"].id and entry.town_id == w["village"].town_id
    assert entry.summary and entry.at is not None


def test_a_refused_action_leaves_no_entry(w):
    from pointsmart.services.errors import OutOfStock

    with pytest.raises(OutOfStock):
        redemptions.checkout(
            shop=w["shop"],
            household=w["household"],
            cart={w["item"].id: 11},
            clerk=w["clerk"],
            key="x",
        )
    db.session.rollback()
    assert (
        db.session.scalar(
            sa.select(sa.func.count()).where(AuditEntry.action == "redemption.checkout")
        )
        == 0
    )


def test_before_and_after_are_kept(w):
    catalogue.update_item(w["item"], catalogue.ItemData("大毛巾", "日用品", 15), w["clerk"])
    db.session.commit()
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "item.update"))
    assert entry.before["name"] == "毛巾" and entry.before["points"] == 10
    assert entry.after["name"] == "大毛巾" and entry.after["points"] == 15


def test_entries_cannot_be_changed_in_the_database(w):
    award(w)
    db.session.commit()
    with pytest.raises(DBAPIError):
        db.session.execute(sa.text("UPDATE audit_log SET summary = 'rewritten'"))
    db.session.rollback()
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError):
            db.session.execute(sa.text("DELETE FROM audit_log"))
        db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) >= 1
