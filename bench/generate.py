"""Generate a town or a county with a year of history on PostgreSQL, fast, with COPY.

    python -m bench.generate town|county [--database URL | scratch] [--keep]

The schema comes from the app's migrations; the rows are written by this module (not through
the services) and are what the services would have written: a year of awards under each
village's scoring rules (some rules revised mid-year, limits respected, small awards
auto-approved where the village says so, large ones approved by two committee members, recent
ones still pending, a few rejected), deductions (a first offence under a graduated rule is a
warning only), reversals, two courtyard rating rounds per village with their awards, a card per
household (a few reissued), villager logins, and visits to the village's love supermarket
(redemptions with their lines, stock movements and transfers, a few voided with a refund),
goods received twice a year with a cost, a few written off. Events are replayed in time order
per household, so no balance and no stock ever goes below zero, and every redemption's
``balance_after`` is the balance it left. Balances are the sums of the posted entries, stock the
sums of the movements, ``household_months`` the posted awards and deductions per local month.

Loading: every foreign key of the schema and every index and primary/unique constraint of the
loaded tables is dropped, the tables are filled by parallel ``COPY … (FREEZE)`` streams (one
connection per table, the generator in this process feeding them), then the indexes and
constraints are created again from their own definitions, exactly as the migrations left them,
foreign keys validated. ``pointsmart check-ledger`` then runs on the result; a run it fails
exits 1.

Other benchmarks call ``build`` (see web.py and balance.py).
"""

from __future__ import annotations

import calendar
import contextlib
import heapq
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from bench import common

#: Everyone on the staff logs in with this password; villagers with this PIN.
STAFF_PASSWORD = "bench password"
VILLAGER_PIN = "135790"

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = [
    "建国", "秀英", "桂兰", "志强", "玉梅", "海燕", "国华", "明", "红", "春生", "德胜", "淑芬",
    "凤英", "永强", "丽娟", "金花", "长江", "秋菊", "小军", "文华",
]  # fmt: skip
#: Goods of every village shop: name, shelf category, price in points.
GOODS = [
    ("大米 10 斤", "粮油", 80),
    ("食用油", "粮油", 60),
    ("挂面", "粮油", 10),
    ("盐", "厨房用品", 3),
    ("酱油", "厨房用品", 8),
    ("醋", "厨房用品", 6),
    ("洗衣粉", "清洁用品", 15),
    ("洗洁精", "清洁用品", 12),
    ("肥皂", "清洁用品", 5),
    ("垃圾袋", "清洁用品", 5),
    ("扫帚", "清洁用品", 20),
    ("拖把", "清洁用品", 30),
    ("牙膏", "个人护理", 8),
    ("毛巾", "日用品", 10),
    ("卫生纸", "日用品", 12),
    ("保温杯", "日用品", 50),
    ("雨伞", "日用品", 35),
    ("手套", "农资", 4),
    ("鸡蛋一盒", "副食", 25),
    ("电风扇", "家电", 400),
]
#: How often each good is taken, relative to the others (rice, oil and soap more than fans).
GOODS_WEIGHTS = [8, 6, 8, 6, 6, 5, 8, 7, 7, 9, 3, 2, 6, 5, 8, 2, 1, 6, 5, 1]
GOODS_INDEXES = range(len(GOODS))
GOODS_CUM_WEIGHTS = list(itertools.accumulate(GOODS_WEIGHTS))


@dataclass(frozen=True)
class RuleTemplate:
    name: str
    category: str
    points: int  #: negative for a deduction
    limit: tuple[int, str] | None  #: (count, period)
    weight: int = 0  #: how often an award is given under it, relative to the others
    photo: bool = False
    warning_first: bool = False
    months: tuple[int, ...] | None = None  #: local months of the year it is used in


#: The town's published templates (积分细则), copied by every village.
RULES = [
    RuleTemplate("垃圾分类到位", "waste_sorting", 5, (1, "week"), 30),
    RuleTemplate("门前三包落实", "sanitation", 5, (1, "week"), 25),
    RuleTemplate("庭院整洁", "courtyard", 10, (1, "month"), 15),
    RuleTemplate("义务保洁", "volunteering", 10, (2, "month"), 12),
    RuleTemplate("参加志愿活动", "volunteering", 15, (1, "month"), 6),
    RuleTemplate("植树造林", "tree_planting", 20, (1, "year"), 4, True, months=(3, 4, 5)),
    RuleTemplate("举报属实", "reporting", 10, None, 3, True),
    RuleTemplate("清理房前屋后杂物", "other", 30, (1, "quarter"), 5, True),
    RuleTemplate("乱倒垃圾", "sanitation", -10, (1, "month"), warning_first=True),
    RuleTemplate("垃圾未分类", "waste_sorting", -5, (1, "month"), warning_first=True),
    RuleTemplate("焚烧秸秆", "other", -20, None, photo=True),
]
#: The rule that a third of the villages revise mid-year (new points, a new version).
REVISED = "垃圾分类到位"
REVISED_POINTS = 8
CRITERIA = ["洁", "净", "绿", "美"]
STAR_TABLES = [[0, 0, 5, 10, 20], [0, 5, 10, 15, 30]]
#: Local months of the two rating rounds (a spring and an autumn round).
ROUND_MONTHS = (4, 10)

N = "\\N"  # NULL in COPY's text format


@dataclass(frozen=True)
class Shape:
    towns: int
    villages: int  #: per town
    groups: int  #: per village
    per_group: int  #: households per group
    months: int = 12

    @property
    def households(self) -> int:
        return self.towns * self.villages * self.groups * self.per_group


SHAPES = {
    "town": Shape(1, 30, 5, 80),
    "county": Shape(10, 30, 5, 200),
}


@dataclass
class Built:
    """What was built: counts, timings and where to find the people to log in as."""

    shape: Shape
    url: str
    rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    months: list[date] = field(default_factory=list)
    #: Transfers made, by kind.
    tally: dict[str, int] = field(default_factory=dict)


# --- time ---------------------------------------------------------------------------------------

_TOD: list[str] = []
_DAYS: dict[int, str] = {}


def ts(t: int) -> str:
    """Return epoch seconds as a timestamptz literal in UTC (fast: cached day and time parts)."""
    day = t // 86400
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = _DAYS[day] = (date(1970, 1, 1) + timedelta(days=day)).isoformat() + " "
    return prefix + _TOD[t % 86400]


def _init_tod() -> None:
    if not _TOD:
        _TOD.extend(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(86400))


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


# --- loading ------------------------------------------------------------------------------------


class Stream:
    """One table's COPY, on a connection of its own, fed lines of COPY text."""

    def __init__(self, url: str, table: str, columns: tuple[str, ...]) -> None:
        self.table = table
        self.columns = columns
        self.rows = 0
        self.lines: list[str] = []
        self.add = self.lines.append
        self._conn = psycopg.connect(url)
        cur = self._conn.cursor()
        # TRUNCATE in the same transaction lets COPY write the rows frozen (no VACUUM needed
        # to make them visible to index-only scans).
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FREEZE)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        self._cm = cur.copy(statement, writer=QueuedLibpqWriter(cur))
        self._copy = self._cm.__enter__()

    def flush(self) -> None:
        if self.lines:
            self.rows += len(self.lines)
            self._copy.write("".join(self.lines))
            self.lines.clear()

    def close(self) -> None:
        self.flush()
        self._cm.__exit__(None, None, None)
        self._conn.commit()
        self._conn.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


class Loader:
    """The open streams of a load; ``flush`` hands every buffered line to its COPY."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.streams: dict[str, Stream] = {}
        self.rows: dict[str, int] = {}

    def open(self, table: str, columns: tuple[str, ...]) -> Stream:
        stream = self.streams[table] = Stream(self.url, table, columns)
        return stream

    def flush(self) -> None:
        for stream in self.streams.values():
            stream.flush()

    def close(self, *tables: str) -> None:
        for table in tables or list(self.streams):
            stream = self.streams.pop(table)
            stream.close()
            self.rows[table] = self.rows.get(table, 0) + stream.rows

    def abort(self) -> None:
        for stream in self.streams.values():
            stream.abort()
        self.streams.clear()


@dataclass
class Schema:
    """Definitions of what is dropped for the load, to create again exactly afterwards."""

    foreign_keys: list[tuple[str, str, str]]  #: (table, name, definition)
    constraints: list[tuple[str, str, str]]  #: primary keys and unique constraints
    indexes: list[tuple[str, str]]  #: (name, CREATE INDEX statement)


def drop_for_load(conn: psycopg.Connection, tables: list[str]) -> Schema:
    """Drop every foreign key of the schema, and the indexes and key constraints of ``tables``."""
    fks = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY conrelid, conname"
    ).fetchall()
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY(%s) "
        "ORDER BY contype, conrelid, conname",
        (tables,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid::regclass::text = ANY(%s) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        (tables,),
    ).fetchall()
    for table, name, _ in fks + keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
    for name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    conn.commit()
    return Schema(fks, keys, indexes)


def restore_after_load(url: str, schema: Schema) -> dict[str, float]:
    """Create the keys and indexes again, then the foreign keys (validated); return timings."""
    timings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        began = time.perf_counter()
        for table, name, definition in schema.constraints:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
                )
            )
        for _name, definition in schema.indexes:
            conn.execute(definition)
        timings["indexes"] = time.perf_counter() - began
        began = time.perf_counter()
        for table, name, definition in schema.foreign_keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
                )
            )
        timings["foreign keys"] = time.perf_counter() - began
    return timings


# --- the generator ------------------------------------------------------------------------------


def _months(now: datetime, count: int) -> list[date]:
    from pointsmart.timeutil import LOCAL_TZ

    this = now.astimezone(LOCAL_TZ).date().replace(day=1)
    index = this.year * 12 + this.month - 1
    return [date(i // 12, i % 12 + 1, 1) for i in range(index - count + 1, index + 1)]


def _month_bounds(months: list[date], now: int) -> list[tuple[int, int]]:
    """Return [start, end) in epoch seconds of each local month; the last ends a minute ago."""
    from pointsmart.timeutil import LOCAL_TZ

    bounds = []
    for month in months:
        start = datetime(month.year, month.month, 1, tzinfo=LOCAL_TZ)
        days = calendar.monthrange(month.year, month.month)[1]
        end = start + timedelta(days=days)
        bounds.append((_epoch(start), min(_epoch(end), now - 60)))
    return bounds


class Generator:
    """Writes one shape's rows into a Loader's streams, in a single pass per month."""

    def __init__(self, shape: Shape, seed: int, now: datetime, hm_extra: bool) -> None:
        from werkzeug.security import generate_password_hash

        _init_tod()
        self.shape = shape
        self.rng = random.Random(seed)
        self.now = _epoch(now)
        self.months = _months(now, shape.months)
        self.bounds = _month_bounds(self.months, self.now)
        self.created = self.bounds[0][0] - 30 * 86400
        self.staff_hash = generate_password_hash(STAFF_PASSWORD)
        self.pin_hash = generate_password_hash(VILLAGER_PIN)
        #: household_months has the copies of place and tie order (newer schema).
        self.hm_extra = hm_extra
        self.ids: dict[str, int] = defaultdict(int)
        self.balance: list[int] = []
        #: Per household (index id - 1): group id, house number, head member id, card in force.
        self.household_meta: list[tuple[int, int, int, int]] = []
        #: Per household id (index 0 unused): its village.
        self.village_of: list[dict | None] = [None]
        self.mi = 0
        self.tally: dict[str, int] = defaultdict(int)

    def next_id(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def key(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def fingerprint(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    # --- places, people, rules -------------------------------------------------------------

    def places(self, loader: Loader) -> None:
        """Write towns, staff, villages, groups, households, members, cards, shops, goods, rules,
        rating rounds; lay out the accounts (written with their balances at the end)."""
        shape, rng, created = self.shape, self.rng, ts(self.created)
        rng_name = lambda: rng.choice(SURNAMES) + rng.choice(GIVEN)  # noqa: E731
        towns = loader.open("towns", ("id", "name", "created_at"))
        users = loader.open(
            "users",
            (
                "id", "display_name", "username", "password_hash", "phone", "pin_hash",
                "member_id", "is_active", "created_at",
            ),
        )  # fmt: skip
        grants = loader.open(
            "role_grants",
            ("id", "user_id", "role", "town_id", "village_id", "shop_id", "household_id"),
        )
        villages = loader.open(
            "villages",
            (
                "id", "town_id", "name", "allow_negative_balance", "board_names",
                "auto_approve_max", "two_approver_min", "created_at",
            ),
        )  # fmt: skip
        groups = loader.open("villager_groups", ("id", "village_id", "name"))
        shops = loader.open(
            "shops", ("id", "town_id", "village_id", "name", "is_active", "created_at")
        )
        rules = loader.open(
            "scoring_rules",
            (
                "id", "town_id", "village_id", "family", "version", "is_current", "name",
                "category", "points", "limit_count", "limit_period", "photo_required",
                "warning_first", "active_from", "active_until", "created_by_id", "created_at",
            ),
        )  # fmt: skip
        rounds = loader.open(
            "rating_rounds",
            (
                "id", "village_id", "title", "criteria", "star_points", "status",
                "opened_by_id", "closed_by_id", "created_at", "closed_at",
            ),
        )  # fmt: skip
        households = loader.open(
            "households", ("id", "group_id", "house_number", "name", "is_active", "created_at")
        )
        members = loader.open(
            "members", ("id", "household_id", "name", "phone", "id_last4", "is_head", "is_active")
        )
        cards = loader.open(
            "household_cards",
            (
                "id", "household_id", "token", "code", "issued_by_id", "issued_at",
                "revoked_by_id", "revoked_at", "revoke_reason",
            ),
        )  # fmt: skip

        def user(display: str, username: str, role: str, column: str, place: int) -> int:
            uid = self.next_id("users")
            users.add(
                f"{uid}\t{display}\t{username}\t{self.staff_hash}\t{N}\t{N}\t{N}\tt\t{created}\n"
            )
            grant(uid, role, column, place)
            return uid

        def grant(uid: int, role: str, column: str, place: int) -> None:
            cells = {c: N for c in ("town_id", "village_id", "shop_id", "household_id")}
            cells[column] = str(place)
            grants.add(
                f"{self.next_id('role_grants')}\t{uid}\t{role}\t" + "\t".join(cells.values()) + "\n"
            )

        # Accounts: village source, sink, honour; a shop's; a household's spendable and honour.
        self.villages: list[dict] = []
        self.household_base = 0  # set below: household ids are 1..n in village order
        codes: set[str] = set()
        code_alphabet = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
        token_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        account_rows: list[tuple[int, str, str, int]] = []  # (id, kind, owner column, owner id)

        def account(kind: str, column: str, owner: int) -> int:
            aid = self.next_id("accounts")
            account_rows.append((aid, kind, column, owner))
            return aid

        self.account_rows = account_rows
        revise_from = self.months[len(self.months) // 2]
        v_global = 0
        for t in range(1, shape.towns + 1):
            town_id = self.next_id("towns")
            towns.add(f"{town_id}\t{'青山镇' if shape.towns == 1 else f'{t}镇'}\t{created}\n")
            admin = user("镇管理员", f"admin{t}", "admin", "town_id", town_id)
            templates = {}
            for template in RULES:
                rid = self.next_id("scoring_rules")
                templates[template.name] = rid
                rules.add(self._rule_line(rid, template, town_id, None, 1, True, admin, created))
            for v in range(1, shape.villages + 1):
                v_global += 1
                village_id = self.next_id("villages")
                auto_max = 5 if rng.random() < 0.4 else None
                two_min = 20 if rng.random() < 0.3 else None
                villages.add(
                    f"{village_id}\t{town_id}\t{v}村\tf\tmasked\t"
                    f"{auto_max if auto_max else N}\t{two_min if two_min else N}\t{created}\n"
                )
                cadres = [
                    user(rng_name(), f"cadre{v_global}_{i}", "cadre", "village_id", village_id)
                    for i in (1, 2)
                ]
                committee = [
                    user(
                        rng_name(),
                        f"committee{v_global}_{i}",
                        "committee",
                        "village_id",
                        village_id,
                    )
                    for i in (1, 2)
                ]
                shop_id = self.next_id("shops")
                shops.add(f"{shop_id}\t{town_id}\t{village_id}\t{v}村爱心超市\tt\t{created}\n")
                clerk = user(rng_name(), f"clerk{v_global}", "clerk", "shop_id", shop_id)
                source = account("village_source", "village_id", village_id)
                sink = account("village_sink", "village_id", village_id)
                v_honour = account("village_honour", "village_id", village_id)
                shop_account = account("shop", "shop_id", shop_id)
                items = []
                for name, category, points in GOODS:
                    items.append((self.next_id("shop_items"), name, category, points))
                # The village's copy of the templates; a third revise one rule mid-year.
                award_rules, deduction_rules = [], []
                revised = rng.random() < 1 / 3
                for template in RULES:
                    family = f"{rng.getrandbits(128):032x}"
                    versions = [(1, template.points, None)]
                    if revised and template.name == REVISED:
                        versions = [(1, template.points, revise_from), (2, REVISED_POINTS, None)]
                    chain = []
                    for version, points, until in versions:
                        rid = self.next_id("scoring_rules")
                        current = until is None
                        rules.add(
                            self._rule_line(
                                rid,
                                RuleTemplate(**{**template.__dict__, "points": points}),
                                None,
                                village_id,
                                version,
                                current,
                                committee[0],
                                created,
                                family,
                            )
                        )
                        chain.append((rid, abs(points), until))
                    entry = (template, chain)
                    (award_rules if template.points > 0 else deduction_rules).append(entry)
                # Rating rounds: spring and autumn; a round of the current month is still open.
                round_of_month = {}
                for n, local_month in enumerate(ROUND_MONTHS):
                    for mi, month in enumerate(self.months):
                        if month.month != local_month:
                            continue
                        start, end = self.bounds[mi]
                        opened = start + 86400 + rng.randrange(3600 * 8)
                        closing = start + 24 * 86400
                        is_open = closing >= end
                        round_id = self.next_id("rating_rounds")
                        title = f"{month.year}年{'春季' if n == 0 else '秋季'}美丽庭院评比"
                        stars = STAR_TABLES[v_global % 2]
                        rounds.add(
                            f"{round_id}\t{village_id}\t{title}\t"
                            f"{json.dumps(CRITERIA, ensure_ascii=False)}\t{json.dumps(stars)}\t"
                            f"{'open' if is_open else 'closed'}\t{committee[0]}\t"
                            f"{N if is_open else committee[0]}\t{ts(opened)}\t"
                            f"{N if is_open else ts(closing)}\n"
                        )
                        round_of_month[mi] = (round_id, title, stars, opened, min(closing, end))
                first_household = self.ids["households"] + 1
                for g in range(1, shape.groups + 1):
                    group_id = self.next_id("villager_groups")
                    groups.add(f"{group_id}\t{village_id}\t{g}组\n")
                    for h in range(1, shape.per_group + 1):
                        household_id = self.next_id("households")
                        head = rng_name()
                        households.add(f"{household_id}\t{group_id}\t{h}\t{head}\tt\t{created}\n")
                        phone = f"13{household_id:09d}"
                        head_member = self.next_id("members")
                        members.add(
                            f"{head_member}\t{household_id}\t{head}\t{phone}\t"
                            f"{rng.randrange(10000):04d}\tt\tt\n"
                        )
                        for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
                            members.add(
                                f"{self.next_id('members')}\t{household_id}\t"
                                f"{head[0]}{rng.choice(GIVEN)}\t{N}\t{N}\tf\tt\n"
                            )
                        # Most households have their card; a few had theirs reissued.
                        for revoked in ([True] if rng.random() < 0.02 else []) + [False]:
                            token = "".join(rng.choice(token_alphabet) for _ in range(26))
                            code = "".join(rng.choice(code_alphabet) for _ in range(8))
                            while code in codes:
                                code = "".join(rng.choice(code_alphabet) for _ in range(8))
                            codes.add(code)
                            card_id = self.next_id("household_cards")
                            cards.add(
                                f"{card_id}\t{household_id}\t{token}\t{code}\t{cadres[0]}\t"
                                + (
                                    f"{created}\t{cadres[0]}\t{ts(self.created + 86400)}\t丢失\n"
                                    if revoked
                                    else f"{ts(self.created + 86400 * 2)}\t{N}\t{N}\t{N}\n"
                                )
                            )
                        # A third of the heads log in with their phone.
                        if rng.random() < 0.3:
                            uid = self.next_id("users")
                            users.add(
                                f"{uid}\t{head}\t{N}\t{N}\t{phone}\t{self.pin_hash}\t"
                                f"{head_member}\tt\t{created}\n"
                            )
                            grant(uid, "villager", "household_id", household_id)
                        self.household_meta.append((group_id, h, head_member, card_id))
                last_household = self.ids["households"]
                village = {
                    "id": village_id,
                    "town": town_id,
                    "name": f"{v}村",
                    "households": range(first_household, last_household + 1),
                    "auto_max": auto_max,
                    "two_min": two_min,
                    "cadres": cadres,
                    "committee": committee,
                    "shop": shop_id,
                    "clerk": clerk,
                    "source": source,
                    "sink": sink,
                    "honour": v_honour,
                    "shop_account": shop_account,
                    "items": items,
                    "award_rules": award_rules,
                    "deduction_rules": deduction_rules,
                    "rounds": round_of_month,
                    "demand": [[0, 0] for _ in items],
                }
                self.villages.append(village)
                self.village_of += [village] * (last_household - first_household + 1)
            loader.flush()
        # Household accounts last, so that ids are contiguous: spendable, honour per household.
        self.household_account_base = self.ids["accounts"] + 1
        for household_id in range(1, self.ids["households"] + 1):
            account("household_spendable", "household_id", household_id)
            account("household_honour", "household_id", household_id)
        self.balance = [0] * (self.ids["accounts"] + 1)
        loader.close()

    def _rule_line(
        self, rid, template, town_id, village_id, version, current, creator, created, family=None
    ) -> str:
        count, period = template.limit or (None, "none")
        return (
            f"{rid}\t{town_id or N}\t{village_id or N}\t{family or f'{rid:032x}'}\t{version}\t"
            f"{'t' if current else 'f'}\t{template.name}\t{template.category}\t{template.points}\t"
            f"{count or N}\t{period}\t{'t' if template.photo else 'f'}\t"
            f"{'t' if template.warning_first else 'f'}\t{N}\t{N}\t{creator}\t{created}\n"
        )

    # --- a year of history -------------------------------------------------------------------

    def history(self, loader: Loader, progress) -> None:
        """Replay every household's year, month by month, village by village."""
        s = {
            name: loader.open(name, columns)
            for name, columns in (
                ("transfers", TRANSFER_COLUMNS),
                ("ledger_entries", ("id", "transfer_id", "account_id", "amount")),
                ("approvals", ("id", "transfer_id", "user_id", "created_at")),
                ("redemptions", REDEMPTION_COLUMNS),
                ("redemption_lines", LINE_COLUMNS),
                ("redemption_voids", VOID_COLUMNS),
                ("stock_movements", MOVEMENT_COLUMNS),
                ("ratings", RATING_COLUMNS),
                ("rule_warnings", WARNING_COLUMNS),
                ("household_months", self._hm_columns()),
            )
        }
        self.s = s
        #: (household, month index) -> [awarded, deducted, awards, deductions]
        self.hm: dict[tuple[int, int], list[int]] = {}
        #: Households that planted trees this year, per village (a once-a-year rule).
        self.year_used: set[tuple[int, str]] = set()
        began = time.perf_counter()
        for mi in range(len(self.months)):
            self.mi = mi
            for village in self.villages:
                self._village_month(village, mi)
                loader.flush()
            # Every event of a month happens within it, so its figures are final now.
            self._flush_months(before=mi + 1)
            progress(
                f"  {self.months[mi]:%Y-%m}: {self.ids['transfers']:,} transfers so far, "
                f"{time.perf_counter() - began:.0f} s"
            )
        self._stock_and_writeoffs(loader)
        loader.flush()

    def _hm_columns(self) -> tuple[str, ...]:
        base = (
            "id", "household_id", "month", "group_id", "village_id", "town_id", "points",
            "awarded", "deducted", "awards", "deductions",
        )  # fmt: skip
        if self.hm_extra:
            return base + (
                "is_active",
                "village_name",
                "group_name",
                "house_number",
                "house_length",
            )
        return base

    def _flush_months(self, before: int) -> None:
        """Write the household months of months before ``before`` (final by then)."""
        done = [k for k in self.hm if k[1] < before]
        add = self.s["household_months"].add
        for key in sorted(done):
            household_id, mi = key
            awarded, deducted, awards, deductions = self.hm.pop(key)
            if not (awarded or deducted or awards or deductions):
                continue
            group_id, house, _head, _card = self.household_meta[household_id - 1]
            village = self.village_of[household_id]
            line = (
                f"{self.next_id('household_months')}\t{household_id}\t{self.months[mi]}\t"
                f"{group_id}\t{village['id']}\t{village['town']}\t{awarded - deducted}\t"
                f"{awarded}\t{deducted}\t{awards}\t{deductions}"
            )
            if self.hm_extra:
                group_name = f"{(group_id - 1) % self.shape.groups + 1}组"
                line += f"\tt\t{village['name']}\t{group_name}\t{house}\t{len(str(house))}"
            add(line + "\n")

    def _count(self, household_id: int, awarded: int, deducted: int, n: int) -> None:
        """Add to the household's figures of the month being replayed."""
        key = (household_id, self.mi)
        row = self.hm.get(key)
        if row is None:
            row = self.hm[key] = [0, 0, 0, 0]
        row[0] += awarded
        row[1] += deducted
        if awarded:
            row[2] += n
        else:
            row[3] += n

    def _post(self, transfer_id: int, legs: list[tuple[int, int]], posted: bool) -> None:
        add = self.s["ledger_entries"].add
        for account_id, amount in legs:
            add(f"{self.next_id('ledger_entries')}\t{transfer_id}\t{account_id}\t{amount}\n")
            if posted:
                self.balance[account_id] += amount

    def _transfer(self, **v) -> int:
        tid = self.next_id("transfers")
        self.s["transfers"].add(
            f"{tid}\t{v['key']}\t{self.fingerprint()}\t{v['kind']}\t{v['status']}\t{v['amount']}\t"
            f"{v['household']}\t{v['village']}\t{v.get('shop', N)}\t{v.get('member', N)}\t"
            f"{v.get('category', N)}\t{v['reason']}\t{N}\t{v.get('source_type', N)}\t"
            f"{v.get('source_id', N)}\t{v['recorded_by']}\t{v.get('approved_by', N)}\t"
            f"{v.get('voided_by', N)}\t{v.get('void_reason', N)}\t{v.get('reverses', N)}\t"
            f"{ts(v['created'])}\t{ts(v['posted']) if v.get('posted') else N}\t"
            f"{ts(v['voided']) if v.get('voided') else N}\t{v.get('rule', N)}\t"
            f"{v.get('refunds', N)}\n"
        )
        self.tally[v["kind"]] += 1
        return tid

    def _village_month(self, village: dict, mi: int) -> None:
        rng = self.rng
        start, end = self.bounds[mi]
        if end <= start:
            return
        month = self.months[mi]
        span = end - start
        award_rules = [
            (template, self._version(chain, month))
            for template, chain in village["award_rules"]
            if template.months is None or month.month in template.months
        ]
        cum_weights = list(itertools.accumulate(template.weight for template, _ in award_rules))
        rating = village["rounds"].get(mi)
        for household_id in village["households"]:
            spendable = self.household_account_base + 2 * (household_id - 1)
            events: list[tuple] = []
            seq = 0
            # Awards under the village's rules: most households earn something each month.
            if rng.random() < 0.72:
                chosen = set()
                for _ in range(1 + int(rng.random() * 2.4)):
                    template, (rule_id, points) = rng.choices(award_rules, cum_weights=cum_weights)[
                        0
                    ]
                    if template.name in chosen:
                        continue
                    if template.limit and template.limit[1] == "year":
                        if (household_id, template.name) in self.year_used:
                            continue
                        self.year_used.add((household_id, template.name))
                    chosen.add(template.name)
                    made = start + int(rng.random() * span * 0.97)
                    seq += 1
                    events.append((made, seq, "award", (template, rule_id, points, None, made)))
            # A courtyard rating in a rating month.
            if rating is not None and rng.random() < 0.85:
                round_id, title, stars_table, opened, closing = rating
                if closing > opened + 3600:
                    made = opened + int(rng.random() * (closing - opened - 3600))
                    seq += 1
                    events.append((made, seq, "rating", (round_id, title, stars_table, made)))
            # Deductions (a first offence under a graduated rule is a warning only).
            if rng.random() < 0.06:
                template, chain = rng.choice(village["deduction_rules"])
                rule_id, points = self._version(chain, month)
                made = start + int(rng.random() * span * 0.9)
                seq += 1
                events.append((made, seq, "offence", (template, rule_id, points, made)))
                if template.warning_first and rng.random() < 0.25:
                    again = made + int(rng.random() * (end - made) * 0.5)
                    seq += 1
                    events.append((again, seq, "offence", (template, rule_id, points, again)))
            # A visit to the shop.
            if rng.random() < 0.35:
                made = start + int(span * (0.2 + rng.random() * 0.78))
                seq += 1
                events.append((made, seq, "shop", None))
            if not events:
                continue
            heapq.heapify(events)
            warned = False
            while events:
                t, _, kind, data = heapq.heappop(events)
                if kind == "award":
                    _, seq = self._award(village, household_id, spendable, end, data, events, seq)
                elif kind == "credit":
                    seq = self._credit(village, household_id, t, end, data, events, seq)
                elif kind == "rating":
                    round_id, title, stars_table, made = data
                    scores = {c: rng.choice((2, 3, 3, 4, 4, 4, 5, 5)) for c in CRITERIA}
                    stars = (2 * sum(scores.values()) + 4) // 8
                    points = stars_table[stars - 1]
                    rating_id = self.next_id("ratings")
                    inspector = village["cadres"][household_id % 2]
                    transfer_id = N
                    if points:
                        reason = f"美丽庭院 {stars}星 — {title}"
                        rated = (None, None, points, (rating_id, reason, inspector), made)
                        transfer_id, seq = self._award(
                            village, household_id, spendable, end, rated, events, seq
                        )
                    self.s["ratings"].add(
                        f"{rating_id}\t{round_id}\t{household_id}\t{inspector}\t"
                        f"{json.dumps(scores, ensure_ascii=False)}\t{stars}\t{transfer_id}\t"
                        f"{ts(made)}\n"
                    )
                elif kind == "offence":
                    template, rule_id, points, made = data
                    if template.warning_first and not warned:
                        warned = True
                        self.s["rule_warnings"].add(
                            f"{self.next_id('rule_warnings')}\t{self.key()}\t{household_id}\t{N}\t"
                            f"{rule_id}\t{village['cadres'][0]}\t{N}\t{N}\t{N}\t{ts(made)}\n"
                        )
                        continue
                    posted = min(made + 3600 + int(rng.random() * 2 * 86400), end - 1)
                    seq += 1
                    heapq.heappush(
                        events, (posted, seq, "deduction", (template, rule_id, points, made))
                    )
                elif kind == "deduction":
                    self._deduction(village, household_id, spendable, t, data)
                elif kind == "reversal":
                    self._reversal(village, household_id, spendable, t, data)
                elif kind == "shop":
                    seq = self._redemption(village, household_id, spendable, t, end, events, seq)
                elif kind == "refund":
                    self._refund(village, household_id, spendable, t, data)

    def _version(self, chain, month: date) -> tuple[int, int]:
        for rule_id, points, until in chain:
            if until is None or month < until:
                return rule_id, points
        return chain[-1][0], chain[-1][1]

    def _award(self, village, household_id, spendable, end, data, events, seq):
        """Record an award at its time, with its fate: posted (auto, by one or two committee
        members), still pending (recent) or rejected; the credit is its own later event.

        Returns (transfer id, seq)."""
        rng = self.rng
        template, rule_id, points, rating, made = data
        if rating is not None:
            rating_id, reason, recorder = rating
            category, source_type, source_id, rule = "courtyard", "rating", rating_id, N
            key = f"rating-{rating_id}"
        else:
            recorder = village["cadres"][int(rng.random() * 2)]
            category, reason, source_type, source_id = template.category, template.name, N, N
            rule, key = rule_id, self.key()
        auto_max, two_min = village["auto_max"], village["two_min"]
        committee = village["committee"]
        approvals: list[tuple[int, int]] = []
        approved_by = voided_by = void_reason = N
        posted = voided = None
        if auto_max is not None and points <= auto_max:
            status, posted = "posted", min(made + 2, end - 1)
        elif made > self.now - 7 * 86400 and rng.random() < 0.6:
            status = "pending"
            if two_min is not None and points > two_min and rng.random() < 0.5:
                # The first of two approvals is in; the second is awaited.
                approvals.append((committee[0], max(made, min(made + 3600, self.now - 60))))
        elif rng.random() < 0.01:
            status, voided_by, void_reason = "voided", committee[0], "不属实"
            voided = min(made + 3600 + int(rng.random() * 2 * 86400), end - 1)
        else:
            status = "posted"
            posted = min(made + 60 + int(rng.random() * 3 * 86400), end - 1)
            if two_min is not None and points > two_min:
                first = made + int((posted - made) * rng.random())
                approvals += [(committee[0], first), (committee[1], posted)]
                approved_by = committee[1]
            else:
                approved_by = committee[int(rng.random() * 2)]
                approvals.append((approved_by, posted))
        transfer_id = self._transfer(
            key=key, kind="award", status=status, amount=points, household=household_id,
            village=village["id"], category=category, reason=reason, source_type=source_type,
            source_id=source_id, recorded_by=recorder, approved_by=approved_by,
            voided_by=voided_by, void_reason=void_reason, created=made, posted=posted,
            voided=voided, rule=rule,
        )  # fmt: skip
        legs = [
            (spendable, points),
            (village["source"], -points),
            (spendable + 1, points),
            (village["honour"], -points),
        ]
        self._post(transfer_id, legs, posted=False)  # balances move at the credit
        for user_id, when in approvals:
            self.s["approvals"].add(
                f"{self.next_id('approvals')}\t{transfer_id}\t{user_id}\t{ts(when)}\n"
            )
        if posted is not None:
            seq += 1
            credit = (transfer_id, legs, points, category, source_type, source_id)
            heapq.heappush(events, (posted, seq, "credit", credit))
        return transfer_id, seq

    def _credit(self, village, household_id, t, end, data, events, seq) -> int:
        """Move a posted award's points; now and then it is corrected a few days later."""
        transfer_id, legs, points, category, source_type, source_id = data
        for account_id, amount in legs:
            self.balance[account_id] += amount
        self._count(household_id, points, 0, 1)
        if self.rng.random() < 0.01:
            when = min(t + 3600 + int(self.rng.random() * 5 * 86400), end - 1)
            seq += 1
            heapq.heappush(events, (when, seq, "reversal", data))
        return seq

    def _deduction(self, village, household_id, spendable, t, data) -> None:
        template, rule_id, points, made = data
        committee = village["committee"]
        enough = self.balance[spendable] >= points
        status = "posted" if enough else "voided"
        transfer_id = self._transfer(
            key=self.key(), kind="deduction", status=status, amount=points,
            household=household_id, village=village["id"], category=template.category,
            reason=template.name, recorded_by=village["cadres"][0],
            approved_by=committee[1] if enough else N,
            voided_by=N if enough else committee[1],
            void_reason=N if enough else "积分不足，不予扣分", created=made,
            posted=t if enough else None, voided=None if enough else t, rule=rule_id,
        )  # fmt: skip
        legs = [
            (spendable, -points),
            (village["sink"], points),
            (spendable + 1, -points),
            (village["honour"], points),
        ]
        self._post(transfer_id, legs, posted=enough)
        if enough:
            self.s["approvals"].add(
                f"{self.next_id('approvals')}\t{transfer_id}\t{committee[1]}\t{ts(t)}\n"
            )
            self._count(household_id, 0, points, 1)

    def _reversal(self, village, household_id, spendable, t, data) -> None:
        original, legs, points, category, source_type, source_id = data
        if self.balance[spendable] < points:
            return  # the household spent them; the committee leaves it
        committee = village["committee"][0]
        reversal = self._transfer(
            key=self.key(), kind="reversal", status="posted", amount=points,
            household=household_id, village=village["id"], category=category,
            reason="记错了，更正", source_type=source_type, source_id=source_id,
            recorded_by=committee, approved_by=committee, reverses=original, created=t, posted=t,
        )  # fmt: skip
        self._post(reversal, [(a, -amount) for a, amount in legs], posted=True)
        self._count(household_id, -points, 0, -1)

    def _redemption(self, village, household_id, spendable, t, end, events, seq) -> int:
        rng = self.rng
        balance = self.balance[spendable]
        if balance < 3:
            return seq
        items = village["items"]
        cart, total = [], 0
        picked = set()
        for _ in range(1 + int(rng.random() * 3)):
            index = rng.choices(GOODS_INDEXES, cum_weights=GOODS_CUM_WEIGHTS)[0]
            if index in picked:
                continue
            item_id, name, _category, price = items[index]
            quantity = 1 if rng.random() < 0.7 else 2
            if total + price * quantity > balance:
                continue
            picked.add(index)
            cart.append((index, item_id, name, price, quantity))
            total += price * quantity
        if not cart:
            return seq
        cart.sort(key=lambda line: line[1])
        clerk, shop = village["clerk"], village["shop"]
        redemption_id = self.next_id("redemptions")
        key = self.key()
        reason = "、".join(f"{name}×{q}" for _i, _id, name, _p, q in cart)
        _group, _house, head, card = self.household_meta[household_id - 1]
        member = head if rng.random() < 0.3 else N
        transfer_id = self._transfer(
            key=f"checkout:{key}", kind="redemption", status="posted", amount=total,
            household=household_id, village=village["id"], shop=shop, member=member,
            reason=reason, source_type="redemption", source_id=redemption_id,
            recorded_by=clerk, created=t, posted=t,
        )  # fmt: skip
        self._post(transfer_id, [(spendable, -total), (village["shop_account"], total)], True)
        r = rng.random()
        via, card_id = ("qr", card) if r < 0.85 else ("code", card) if r < 0.95 else ("lookup", N)
        self.s["redemptions"].add(
            f"{redemption_id}\t{key}\t{self.fingerprint()}\t{shop}\t{household_id}\t{member}\t"
            f"{clerk}\t{via}\t{card_id}\t{transfer_id}\t{total}\t{self.balance[spendable]}\t"
            f"{ts(t)}\n"
        )
        half = 0 if self.mi < 6 else 1
        voided_line = int(rng.random() * len(cart)) if rng.random() < 0.02 else None
        lines, movements = self.s["redemption_lines"].add, self.s["stock_movements"].add
        for n, (index, item_id, name, price, quantity) in enumerate(cart):
            village["demand"][index][half] += quantity
            lines(
                f"{self.next_id('redemption_lines')}\t{redemption_id}\t{item_id}\t{name}\t{price}\t"
                f"{quantity}\t{1 if n == voided_line else 0}\n"
            )
            movements(
                f"{self.next_id('stock_movements')}\t{N}\t{item_id}\tredemption\t{-quantity}\t"
                f"{N}\t{N}\t{N}\t{N}\t{redemption_id}\t{N}\t{clerk}\t{ts(t)}\n"
            )
        self.tally["redemption_lines_units"] += sum(line[4] for line in cart)
        if voided_line is not None:
            index, item_id, name, price, _quantity = cart[voided_line]
            when = min(t + 60 + int(rng.random() * 7200), end - 1)
            seq += 1
            heapq.heappush(
                events,
                (
                    when,
                    seq,
                    "refund",
                    (redemption_id, transfer_id, index, item_id, price, half, member),
                ),
            )
        return seq

    def _refund(self, village, household_id, spendable, t, data) -> None:
        redemption_id, original, index, item_id, price, half, member = data
        clerk, shop = village["clerk"], village["shop"]
        void_key = self.key()
        void_id = self.next_id("redemption_voids")
        refund = self._transfer(
            key=f"void:{void_key}", kind="refund", status="posted", amount=price,
            household=household_id, village=village["id"], shop=shop, member=member,
            reason="拿错了", source_type="redemption", source_id=redemption_id, recorded_by=clerk,
            approved_by=clerk, refunds=original, created=t, posted=t,
        )  # fmt: skip
        self._post(refund, [(spendable, price), (village["shop_account"], -price)], True)
        self.s["redemption_voids"].add(
            f"{void_id}\t{void_key}\t{self.fingerprint()}\t{redemption_id}\t{refund}\t{price}\t"
            f"拿错了\t{clerk}\t{ts(t)}\n"
        )
        self.s["stock_movements"].add(
            f"{self.next_id('stock_movements')}\t{N}\t{item_id}\treturn\t1\t{N}\t{N}\t{N}\t"
            f"拿错了\t{redemption_id}\t{void_id}\t{clerk}\t{ts(t)}\n"
        )
        village["demand"][index][half] -= 1

    def _stock_and_writeoffs(self, loader: Loader) -> None:
        """Goods arrive twice (enough for each half year and some over); a few are written off;
        then items and accounts are written with the stock and balances they add up to."""
        rng = self.rng
        movements = self.s["stock_movements"].add
        halves = [0, min(6, len(self.months) - 1)]
        items_stream = loader.open("shop_items", ITEM_COLUMNS)
        created = ts(self.created)
        for village in self.villages:
            clerk = village["clerk"]
            for index, (item_id, name, category, price) in enumerate(village["items"]):
                stock = 0
                for half, start_month in enumerate(halves):
                    demand = village["demand"][index][half]
                    units = demand + 10 + int(rng.random() * 190)
                    when = self.bounds[start_month][0] + 86400 + int(rng.random() * 3600 * 8)
                    donated = rng.random() < 0.2
                    movements(
                        f"{self.next_id('stock_movements')}\tintake-{item_id}-{half}\t{item_id}\t"
                        f"intake\t{units}\t{N if donated else units * price * 45}\t"
                        f"{'donated' if donated else 'purchased'}\t"
                        f"{'县妇联' if donated else N}\t{N}\t{N}\t{N}\t{clerk}\t{ts(when)}\n"
                    )
                    stock += units - demand
                    if rng.random() < 0.05:  # spoiled or broken, from what was over
                        lost = 1 + int(rng.random() * 3)
                        end = self.bounds[min(start_month + 5, len(self.bounds) - 1)][1] - 3600
                        movements(
                            f"{self.next_id('stock_movements')}\twriteoff-{item_id}-{half}\t"
                            f"{item_id}\twrite_off\t{-lost}\t{N}\t{N}\t{N}\t过期损坏\t{N}\t{N}\t"
                            f"{clerk}\t{ts(end)}\n"
                        )
                        stock -= lost
                items_stream.add(
                    f"{item_id}\t{village['shop']}\t{name}\t{category}\t{price}\t{stock}\t5\tt\t"
                    f"{N}\t{created}\n"
                )
        loader.close("shop_items")

    def accounts(self, loader: Loader) -> None:
        stream = loader.open(
            "accounts", ("id", "kind", "household_id", "village_id", "shop_id", "balance",
                         "created_at")
        )  # fmt: skip
        created = ts(self.created)
        for aid, kind, column, owner in self.account_rows:
            cells = {"household_id": N, "village_id": N, "shop_id": N}
            cells[column] = owner
            stream.add(
                f"{aid}\t{kind}\t{cells['household_id']}\t{cells['village_id']}\t"
                f"{cells['shop_id']}\t{self.balance[aid]}\t{created}\n"
            )
        loader.close("accounts")


TRANSFER_COLUMNS = (
    "id", "idempotency_key", "fingerprint", "kind", "status", "amount", "household_id",
    "village_id", "shop_id", "member_id", "category", "reason", "note", "source_type",
    "source_id", "recorded_by_id", "approved_by_id", "voided_by_id", "void_reason",
    "reverses_id", "created_at", "posted_at", "voided_at", "rule_id", "refunds_id",
)  # fmt: skip
REDEMPTION_COLUMNS = (
    "id", "idempotency_key", "fingerprint", "shop_id", "household_id", "member_id", "clerk_id",
    "identified_by", "card_id", "transfer_id", "total_points", "balance_after", "created_at",
)  # fmt: skip
LINE_COLUMNS = (
    "id", "redemption_id", "item_id", "item_name", "unit_points", "quantity", "voided_quantity",
)  # fmt: skip
VOID_COLUMNS = (
    "id", "idempotency_key", "fingerprint", "redemption_id", "transfer_id", "points", "reason",
    "voided_by_id", "created_at",
)  # fmt: skip
MOVEMENT_COLUMNS = (
    "id", "idempotency_key", "item_id", "kind", "quantity", "cost_fen", "funding", "donor",
    "reason", "redemption_id", "void_id", "user_id", "created_at",
)  # fmt: skip
RATING_COLUMNS = (
    "id", "round_id", "household_id", "inspector_id", "scores", "stars", "transfer_id",
    "created_at",
)  # fmt: skip
WARNING_COLUMNS = (
    "id", "idempotency_key", "household_id", "member_id", "rule_id", "recorded_by_id", "note",
    "source_type", "source_id", "created_at",
)  # fmt: skip
ITEM_COLUMNS = (
    "id", "shop_id", "name", "category", "points", "stock", "low_stock_at", "is_active",
    "photo_token", "created_at",
)  # fmt: skip


# --- building a database ------------------------------------------------------------------------

#: Every table the generator fills (each is emptied first).
TABLES = [
    "towns", "users", "role_grants", "villages", "villager_groups", "shops", "scoring_rules",
    "rating_rounds", "households", "members", "household_cards", "transfers", "ledger_entries",
    "approvals", "redemptions", "redemption_lines", "redemption_voids", "stock_movements",
    "ratings", "rule_warnings", "household_months", "shop_items", "accounts",
]  # fmt: skip


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
    )


def build(
    db: common.Database, shape: Shape, seed: int = 42, now: datetime | None = None, progress=print
) -> Built:
    """Migrate an empty database and fill it with ``shape``; return counts and timings.

    Does not run check-ledger (see ``check_ledger``)."""
    now = now or datetime.now(UTC)
    built = Built(shape, db.sqlalchemy_url)
    began = time.perf_counter()
    common.migrate(db.sqlalchemy_url)
    built.timings["migrations"] = time.perf_counter() - began
    with psycopg.connect(db.libpq_url) as conn:
        hm_extra = _has_column(conn, "household_months", "is_active")
        began = time.perf_counter()
        schema = drop_for_load(conn, TABLES)
        built.timings["drop keys and indexes"] = time.perf_counter() - began
    generator = Generator(shape, seed, now, hm_extra)
    built.months = generator.months
    loader = Loader(db.libpq_url)
    try:
        began = time.perf_counter()
        generator.places(loader)
        built.timings["places, people, cards, rules"] = time.perf_counter() - began
        progress(
            f"  places: {generator.ids['households']:,} households, "
            f"{generator.ids['members']:,} members, {generator.ids['users']:,} users "
            f"in {built.timings['places, people, cards, rules']:.0f} s"
        )
        began = time.perf_counter()
        generator.history(loader, progress)
        generator.accounts(loader)
        loader.close()
        built.timings["history (generated and copied)"] = time.perf_counter() - began
    except BaseException:
        loader.abort()
        raise
    built.rows = dict(sorted(loader.rows.items(), key=lambda kv: -kv[1]))
    began = time.perf_counter()
    built.timings.update(restore_after_load(db.libpq_url, schema))
    with psycopg.connect(db.libpq_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({t}, 'id'), "
                    "coalesce((SELECT max(id) FROM {i}), 0) + 1, false)"
                ).format(t=sql.Literal(table), i=sql.Identifier(table))
            )
        # Counters other parts of the schema keep, when it has them: derived here.
        if _has_column(conn, "villager_groups", "active_households"):
            conn.execute(
                "UPDATE villager_groups g SET active_households = (SELECT count(*) FROM "
                "households h WHERE h.group_id = g.id AND h.is_active)"
            )
        began = time.perf_counter()
        conn.execute("ANALYZE")
        built.timings["analyze"] = time.perf_counter() - began
    built.tally = dict(generator.tally)
    return built


def check_ledger(db: common.Database) -> tuple[bool, str, float]:
    """Run ``pointsmart check-ledger`` on the database; return (passed, output, seconds)."""
    instance = common.use_scratch_instance()
    env = {
        **os.environ,
        "DATABASE_URL": db.sqlalchemy_url,
        "POINTSMART_SECRET_KEY": "bench-secret",
        "POINTSMART_INSTANCE_PATH": str(instance),
    }
    script = os.path.join(os.path.dirname(sys.executable), "pointsmart")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "pointsmart.cli"]
    began = time.perf_counter()
    done = subprocess.run(
        [*command, "check-ledger"], env=env, capture_output=True, text=True, cwd=common.ROOT
    )
    seconds = time.perf_counter() - began
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, output, seconds


def table_sizes(db: common.Database) -> dict[str, int]:
    """Return each loaded table's size with its indexes, in bytes."""
    with psycopg.connect(db.libpq_url) as conn:
        return dict(
            conn.execute(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                "WHERE relkind = 'r' AND relname = ANY(%s)",
                (TABLES,),
            ).fetchall()
        )


@contextlib.contextmanager
def named_or_scratch(
    server: str, database: str, what: str, keep: bool
) -> Iterator[common.Database]:
    """Yield the database to build into: a new scratch one (dropped afterwards unless ``keep``),
    or the one named by a URL, created if missing, refused if it already has tables."""
    if database == "scratch":
        with common.scratch_database(server, what, keep=keep) as db:
            yield db
        return
    db = common.database_at(database)
    common.create_database_if_missing(db)
    with psycopg.connect(db.libpq_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()[0]
    if tables:
        raise SystemExit(f"{db.name} already has {tables} tables; give an empty database")
    yield db


def describe(built: Built, sizes: dict[str, int], check: tuple[bool, str, float]) -> str:
    """Return the Markdown section for RESULTS.md."""
    shape = built.shape
    passed, output, seconds = check
    total = sum(v for k, v in built.timings.items() if k != "migrations")
    rows = [[table, count, common.size(sizes.get(table, 0))] for table, count in built.rows.items()]
    timing_rows = [[what, seconds_] for what, seconds_ in built.timings.items()]
    timing_rows.append(["`pointsmart check-ledger`", seconds])
    lines = [
        f"{shape.towns} town(s) × {shape.villages} villages × {shape.groups} groups × "
        f"{shape.per_group} households = {shape.households:,} households, {shape.months} months "
        f"({built.months[0]:%Y-%m} to {built.months[-1]:%Y-%m}, the last one up to now). "
        f"Built in **{total:.0f} s** after the migrations (generation in Python and the COPY "
        "streams overlap; indexes and foreign keys made after the load), then "
        f"`pointsmart check-ledger` in {seconds:.0f} s: "
        + ("**passed**." if passed else "**FAILED**."),
        "",
        common.markdown_table(["step", "seconds"], timing_rows),
        "",
        common.markdown_table(["table", "rows", "size with indexes"], rows),
        "",
        "Transfers by kind: "
        + ", ".join(
            f"{kind} {n:,}"
            for kind, n in built.tally.items()
            if kind in ("award", "deduction", "reversal", "redemption", "refund")
        )
        + ".",
        "",
        "check-ledger said:",
        "",
        "```",
        output[-2000:],
        "```",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build a town or a county, check it with check-ledger, print and record the figures."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("shape", choices=sorted(SHAPES), help="town: 12,000 households; county: 300,000")
    p.add_argument(
        "--database",
        default="scratch",
        help="a PostgreSQL URL of an empty (or new) database to keep, or 'scratch' (default)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--months", type=int, default=12, help="months of history (default 12)")
    args = p.parse_args(argv)
    shape = SHAPES[args.shape]
    if args.months != shape.months:
        shape = Shape(shape.towns, shape.villages, shape.groups, shape.per_group, args.months)
    facts = common.machine(args.server)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    with named_or_scratch(args.server, args.database, args.shape, args.keep) as db:
        print(
            f"building a {args.shape} of {shape.households:,} households in {db.name}", flush=True
        )
        built = build(db, shape, args.seed, progress=lambda m: print(m, flush=True))
        print("built: " + ", ".join(f"{k} {v:.1f} s" for k, v in built.timings.items()), flush=True)
        print("running pointsmart check-ledger", flush=True)
        check = check_ledger(db)
        print(check[1], flush=True)
        sizes = table_sizes(db)
        if args.keep or args.database != "scratch":
            print(f"kept: {db.sqlalchemy_url}")
    body = describe(built, sizes, check)
    print()
    print(body)
    if not args.no_record:
        title = f"Generating a {args.shape} ({shape.households:,} households, PostgreSQL)"
        common.record(title, body, facts, common.command_line())
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    if not check[0]:
        print("\nFAILED: pointsmart check-ledger found differences", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
