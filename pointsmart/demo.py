"""A realistic demo town, loaded through the same services as real data."""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import current_app

from .extensions import db
from .models import Category, LimitPeriod, Role, Town, TransferKind
from .services import accounts, boards, catalogue, ledger, monthly, places, redemptions, rules
from .services.rules import RuleData
from .timeutil import local_today, utcnow

CREDENTIALS_FILE = "demo-accounts.txt"

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严莫孔向常汤"
GIVEN = "建国秀英桂兰玉梅志强丽华明德春花海燕国庆红梅金凤永福淑珍文军长青小平学军德胜美玲凤英荣华桂芳宝山家兴翠萍"

VILLAGES = [
    ("青山村", ["一组", "二组", "三组", "四组"], 130),
    ("柳溪村", ["东组", "西组", "南组", "北组", "中心组"], 120),
    ("石桥村", ["上村组", "下村组", "桥头组"], 100),
]

#: Goods on every shop's shelf: (name, category, points, units, paid by, donor).
GOODS = [
    ("食用油 5L", "粮油", 120, 40, "village_budget", "村集体经费"),
    ("大米 10 斤", "粮油", 80, 60, "donated", "县慈善总会"),
    ("挂面", "粮油", 15, 100, "purchased", None),
    ("洗衣粉", "清洁用品", 30, 80, "donated", "县妇联"),
    ("洗洁精", "清洁用品", 20, 80, "purchased", None),
    ("垃圾袋（一卷）", "清洁用品", 5, 300, "town_budget", "镇人居环境整治专项"),
    ("牙膏", "个人护理", 12, 60, "purchased", None),
    ("毛巾", "日用品", 10, 60, "purchased", None),
    ("电风扇", "日用品", 300, 3, "donated", "爱心企业"),
    ("扫帚", "清洁用品", 25, 30, "village_budget", "村集体经费"),
]

#: The town's template catalogue (积分细则), copied into every village.
TEMPLATES = [
    RuleData("垃圾分类合格", Category.WASTE_SORTING, 5, 1, LimitPeriod.DAY),
    RuleData("门前三包、义务保洁", Category.SANITATION, 10, 2, LimitPeriod.WEEK),
    RuleData("美丽庭院四星", Category.COURTYARD, 20, 1, LimitPeriod.MONTH),
    RuleData("植树造林", Category.TREE_PLANTING, 15, photo_required=True),
    RuleData("志愿服务", Category.VOLUNTEERING, 8),
    RuleData("举报乱倒垃圾属实", Category.REPORTING, 10),
    RuleData("乱倒垃圾", Category.SANITATION, -10, 10, LimitPeriod.MONTH, warning_first=True),
    RuleData("焚烧秸秆", Category.OTHER, -20),
]


def _person(rng: random.Random) -> str:
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    return rng.choice(SURNAMES) + given


def _password() -> str:
    return secrets.token_urlsafe(9)


def load_demo(seed: int = 2026) -> list[str]:
    """Load the demo town unless the database holds data; return the account lines to print."""
    if db.session.scalar(sa.select(sa.func.count()).select_from(Town)):
        return []
    rng = random.Random(seed)
    lines: list[str] = []

    def staff(username: str, name: str, role: Role, place) -> object:
        password = _password()
        user = accounts.create_staff(username, name, password)
        accounts.grant(user, role, place)
        lines.append(f"{role.value:<10} {username:<14} {password:<14} {name}")
        return user

    town = places.create_town("青山镇")
    admin = staff("admin", "镇管理员 何静", Role.ADMIN, town)
    for template in TEMPLATES:
        rules.create(replace(template), admin, town=town)
    now = utcnow()
    committees = []
    phone_seq = iter(range(13800000001, 13899999999))
    for v_index, (village_name, group_names, households) in enumerate(VILLAGES, start=1):
        # One village asks for two approvers on large awards, as some committees do.
        village = places.create_village(
            town, village_name, two_approver_min=30 if v_index == 1 else None
        )
        groups = [places.create_group(village, name) for name in group_names]
        shop = places.create_shop(town, f"{village_name}爱心超市", village)
        approvers = [
            staff(
                f"weiyuan{v_index}a", f"{village_name}村委 {_person(rng)}", Role.COMMITTEE, village
            ),
            staff(
                f"weiyuan{v_index}b", f"{village_name}村委 {_person(rng)}", Role.COMMITTEE, village
            ),
        ]
        cadre = staff(f"ganbu{v_index}", f"{village_name}干部 {_person(rng)}", Role.CADRE, village)
        staff(f"wangge{v_index}", f"{groups[0].name}网格员 {_person(rng)}", Role.CADRE, groups[0])
        clerk = staff(f"dianyuan{v_index}", f"{village_name}超市 {_person(rng)}", Role.CLERK, shop)
        goods = _stock_shop(shop, clerk)
        catalogue = rules.copy_templates(town, village, approvers[0])
        awards = [r for r in catalogue if r.points > 0]
        deductions = [r for r in catalogue if r.points < 0]

        for n in range(households):
            group = groups[n % len(groups)]
            head = _person(rng)
            household = places.create_household(
                group, str(n // len(groups) + 1), head, head_phone=str(next(phone_seq))
            )
            for _ in range(rng.randint(1, 4)):
                places.add_member(household, head[0] + _person(rng)[1:])
            if n < 2:
                pin = f"{rng.randint(0, 999999):06d}"
                accounts.create_villager_login(household.members[0], pin)
                lines.append(
                    f"{'villager':<10} {household.members[0].phone:<14} {pin:<14} "
                    f"{head}（{village_name}{group.name}，PIN）"
                )
            _history(rng, household, cadre, approvers, clerk, shop, goods, now, awards, deductions)
        committees.append((village, approvers[0]))
    monthly.rebuild()  # the history was back-dated after posting
    # Last month's red and black list is on every village's public page.
    last_month = (local_today().replace(day=1) - timedelta(days=1)).replace(day=1)
    for village, member in committees:
        boards.publish_monthly(village, last_month, member)
    db.session.commit()
    _save(lines)
    return lines


def _stock_shop(shop, clerk) -> list:
    """Put the demo goods on a shop's shelf through intakes, as a clerk would."""
    items = []
    for name, category, points, units, funding, donor in GOODS:
        item = catalogue.create_item(shop, catalogue.ItemData(name, category, points), clerk)
        catalogue.receive(
            item, clerk, quantity_=units, key=f"demo-intake-{item.id}", funding=funding, donor=donor
        )
        items.append(item)
    return items


def _history(rng, household, cadre, approvers, clerk, shop, goods, now, awards, deductions) -> None:
    """Give a household a few months of awards, a deduction now and then, and redemptions.

    Straight through the ledger with back-dated times: history is seed data, so the rules'
    limits (which count the current period) do not apply to it.
    """
    for i in range(rng.randint(1, 5)):
        rule = rng.choice(awards)
        at = now - timedelta(days=rng.randint(1, 120), hours=rng.randint(0, 10))
        transfer = ledger.record(
            kind=TransferKind.AWARD,
            household=household,
            points=rule.points,
            reason=rule.name,
            category=rule.category,
            rule=rule,
            recorded_by=cadre,
            key=f"demo-award-{household.id}-{i}",
            member=rng.choice(household.members),
        )
        transfer.created_at = at
        if rng.random() < 0.9:
            for approver in approvers[: ledger.required_approvals(transfer)]:
                ledger.post(transfer, approver)
            transfer.posted_at = at + timedelta(hours=3)
    if rng.random() < 0.08:
        rule = rng.choice(deductions)
        points = -rule.points
        transfer = ledger.record(
            kind=TransferKind.DEDUCTION,
            household=household,
            points=points,
            reason=rule.name,
            category=rule.category,
            rule=rule,
            recorded_by=cadre,
            key=f"demo-deduction-{household.id}",
        )
        if ledger.balance_of(household).spendable >= points:
            for approver in approvers[: ledger.required_approvals(transfer)]:
                ledger.post(transfer, approver)
    spendable = ledger.balance_of(household).spendable
    if spendable >= 20 and rng.random() < 0.5:
        cart: dict[int, int] = {}
        for item in rng.sample(goods, len(goods)):
            if item.points <= spendable and item.stock > 5 and len(cart) < 3:
                cart[item.id] = 1
                spendable -= item.points
        if cart:
            redemptions.checkout(
                shop=shop,
                household=household,
                cart=cart,
                clerk=clerk,
                key=f"demo-redeem-{household.id}",
            )


def _save(lines: list[str]) -> None:
    path = Path(current_app.instance_path) / CREDENTIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("role       login          password       who\n")
        fh.write("\n".join(lines) + "\n")
