"""Checkout through the full web stack (gunicorn, login session, CSRF, audit) under wrk, against
pgbench on the same server, and the checkout's own SQL as a pgbench script.

On a generated town (bench/generate.py; ``--quick``: 8 villages of 100 households) it serves
the app with gunicorn, one sync worker per core, as production does (pointsmart.wsgi, logging
at INFO), logs N clerks in through the staff login page, each at the counter of a shop of its
own, scans a pool of household cards at each counter (the real counter POST, which keeps the
scanned card in the session cookie), then drives the counter's confirm POST with wrk on
loopback: each request a fresh idempotency key, the CSRF token, and a random valid cart of
1–3 goods. For each client count, just before the web load: pgbench's built-in TPC-B with the
same clients (the ceiling), and the SQL of one checkout, captured through the full stack with
SQLAlchemy events and replayed as a pgbench script (random household of the counter's pool,
fresh keys). After every load the books must balance, or the run fails (exit 1).

    python -m bench.web [--quick] [--duration 15] [--clients 2 8] [--database postgresql|sqlite]

``--database sqlite``: the same load on the embedded default (the generated data copied into a
SQLite file migrated by the app), at 2 connections unless told otherwise; no ceiling.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests
import sqlalchemy as sa

from bench import common, generate

#: Issue 9's targets.
TARGET_RATIO = {2: 0.30, 8: 0.20}
TARGET_P99_MS = {8: 15.0}
TARGET_SQL_RATIO = 0.90
TARGET_SQLITE_P99_MS = {2: 100.0}
QUICK = generate.Shape(1, 8, 2, 50)
#: Points given to each household of a counter's pool before the load (one posted award), so
#: that no cart is refused for lack of points; units received for every good of those shops.
TOP_UP = 20_000
INTAKES = 3
INTAKE_UNITS = 10_000
#: Carts of the captured checkouts, as positions in the shop's goods and quantities.
SQL_CARTS = [[(2, 1)], [(4, 1), (8, 2)], [(6, 1), (9, 1), (13, 1)]]
WARMUP_SECONDS = 3


# --- the counters ---------------------------------------------------------------------------------


@dataclass
class Counter:
    """One counter: a shop, its clerk, its goods and the pool of households scanned there."""

    slot: int
    shop_id: int
    shop_account: int
    village_id: int
    town_id: int
    clerk: str
    clerk_id: int
    cadre_id: int
    #: Both committee members: large awards need two approvers in some villages.
    committee_ids: list[int]
    #: (item id, price) in id order, the order of generate.GOODS
    items: list[tuple[int, int]]
    #: (household id, spendable account, card id, card token, group id)
    pool: list[tuple[int, int, int, str, int]]
    csrf: str = ""
    session_token: str = ""
    #: household id -> session cookie holding the scanned card
    cookies: dict[int, str] = field(default_factory=dict)


def load_counters(url: str, slots: int, pool: int) -> list[Counter]:
    """Read the first ``slots`` shops, their people, goods and a pool of households each."""
    engine = sa.create_engine(url)
    counters = []
    with engine.connect() as conn:
        shops = conn.execute(
            sa.text(
                "SELECT s.id, a.id, s.village_id, s.town_id FROM shops s "
                "JOIN accounts a ON a.shop_id = s.id AND a.kind = 'shop' ORDER BY s.id LIMIT :n"
            ),
            {"n": slots},
        ).all()
        if len(shops) < slots:
            raise SystemExit(f"{slots} counters need {slots} shops; the data has {len(shops)}")
        for slot, (shop_id, shop_account, village_id, town_id) in enumerate(shops):

            def users(role: str, column: str, place: int) -> list[tuple[int, str]]:
                return conn.execute(
                    sa.text(
                        f"SELECT u.id, u.username FROM users u JOIN role_grants g ON "
                        f"g.user_id = u.id WHERE g.role = :role AND g.{column} = :place "
                        "ORDER BY u.id"
                    ),
                    {"role": role, "place": place},
                ).all()

            ((clerk_id, clerk), *_) = users("clerk", "shop_id", shop_id)
            ((cadre_id, _), *_) = users("cadre", "village_id", village_id)
            committee_ids = [u for u, _ in users("committee", "village_id", village_id)]
            items = [
                tuple(r)
                for r in conn.execute(
                    sa.text("SELECT id, points FROM shop_items WHERE shop_id = :s ORDER BY id"),
                    {"s": shop_id},
                )
            ]
            households = conn.execute(
                sa.text(
                    "SELECT h.id, a.id, c.id, c.token, h.group_id FROM households h "
                    "JOIN villager_groups g ON g.id = h.group_id "
                    "JOIN accounts a ON a.household_id = h.id AND a.kind = 'household_spendable' "
                    "JOIN household_cards c ON c.household_id = h.id AND c.revoked_at IS NULL "
                    "WHERE g.village_id = :v AND h.is_active ORDER BY h.id LIMIT :n"
                ),
                {"v": village_id, "n": pool},
            ).all()
            counters.append(
                Counter(
                    slot,
                    shop_id,
                    shop_account,
                    village_id,
                    town_id,
                    clerk,
                    clerk_id,
                    cadre_id,
                    committee_ids,
                    items,
                    [tuple(h) for h in households],
                )  # fmt: skip
            )
    engine.dispose()
    return counters


def stock_and_top_up(url: str, counters: list[Counter]) -> None:
    """Receive goods at the counters' shops and give each pool household points (services)."""
    from pointsmart.extensions import db
    from pointsmart.models import Household, Item, TransferKind, User
    from pointsmart.services import catalogue, ledger

    app = common.make_app(url)
    stamp = secrets.token_hex(4)
    with app.app_context():
        for counter in counters:
            clerk = db.session.get(User, counter.clerk_id)
            cadre = db.session.get(User, counter.cadre_id)
            committee = [db.session.get(User, u) for u in counter.committee_ids]
            for item_id, _price in counter.items:
                item = db.session.get(Item, item_id)
                for n in range(INTAKES):
                    catalogue.receive(
                        item,
                        clerk,
                        quantity_=INTAKE_UNITS,
                        key=f"bench-web-{stamp}-{item_id}-{n}",
                        cost_yuan="1000",
                        funding="donated",
                        donor="县妇联",
                    )
            for household_id, *_ in counter.pool:
                transfer = ledger.record(
                    kind=TransferKind.AWARD,
                    household=db.session.get(Household, household_id),
                    points=TOP_UP,
                    reason="积分测试充值",
                    recorded_by=cadre,
                    key=f"bench-web-{stamp}-{household_id}",
                )
                for member in committee[: ledger.required_approvals(transfer)]:
                    ledger.post(transfer, member)
            db.session.commit()
        db.session.remove()
        db.engine.dispose()


# --- logging in and scanning, through the real pages ----------------------------------------------

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    if not match:
        raise SystemExit("no CSRF token on the page")
    return match.group(1)


def staff_login(base: str, username: str, password: str) -> requests.Session:
    """Log a staff member in through the staff login page; return the browser session."""
    browser = requests.Session()
    page = browser.get(f"{base}/login/staff")
    answer = browser.post(
        f"{base}/login/staff",
        data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        allow_redirects=False,
    )
    if answer.status_code != 302 or "session" not in browser.cookies:
        raise SystemExit(f"login as {username} failed: {answer.status_code}")
    return browser


def open_counter(base: str, counter: Counter) -> None:
    """Log the clerk in, open the counter, scan every card of the pool (one cookie each)."""
    browser = staff_login(base, counter.clerk, generate.STAFF_PASSWORD)
    page = browser.get(f"{base}/clerk/shops/{counter.shop_id}/counter")
    if page.status_code != 200:
        raise SystemExit(f"counter of shop {counter.shop_id}: {page.status_code}")
    counter.csrf = csrf_of(page.text)
    base_cookie = browser.cookies["session"]
    for household_id, _account, _card, token, _group in counter.pool:
        answer = requests.post(
            f"{base}/clerk/shops/{counter.shop_id}/counter",
            data={"code": token, "csrf_token": counter.csrf},
            headers={"Cookie": f"session={base_cookie}"},
            allow_redirects=False,
        )
        expected = f"/clerk/shops/{counter.shop_id}/households/{household_id}/cart"
        if answer.status_code != 302 or not answer.headers["Location"].endswith(expected):
            raise SystemExit(f"scanning household {household_id}: {answer.status_code}")
        counter.cookies[household_id] = answer.cookies["session"]
    # One review through the cart page, to check that our prices are the server's.
    household_id = counter.pool[0][0]
    (first, p1), (second, p2) = counter.items[2], counter.items[3]
    review = requests.post(
        f"{base}/clerk/shops/{counter.shop_id}/households/{household_id}/cart",
        data={"csrf_token": counter.csrf, f"qty-{first}": "1", f"qty-{second}": "2"},
        headers={"Cookie": f"session={counter.cookies[household_id]}"},
        allow_redirects=False,
    )
    total = re.search(r'name="total"[^>]*value="(\d+)"', review.text)
    if review.status_code != 200 or not total or int(total.group(1)) != p1 + 2 * p2:
        said = re.findall(r'class="flash[^"]*"[^>]*>(.*?)<', review.text, re.S)
        raise SystemExit(f"the cart review disagrees with our prices: {review.status_code} {said}")


def login_token_of(url: str, user_id: int) -> str:
    """Return the newest server-side session of a user (the SQL script acts through it)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        token = conn.execute(
            sa.text(
                "SELECT id FROM login_sessions WHERE user_id = :u AND ended_at IS NULL "
                "ORDER BY created_at DESC LIMIT 1"
            ),
            {"u": user_id},
        ).scalar_one()
    engine.dispose()
    return token


# --- wrk --------------------------------------------------------------------------------------


def checkout_script(counters: list[Counter], nonce: str) -> str:
    """Return the wrk Lua script: each connection is one counter; each request a fresh key and
    a random 1–3 line cart for a random scanned household."""
    rows = []
    for c in counters:
        households = ", ".join(f'{{{h}, "{cookie}"}}' for h, cookie in c.cookies.items())
        items = ", ".join(f"{{{i}, {p}}}" for i, p in c.items)
        rows.append(
            f'  {{shop = {c.shop_id}, csrf = "{quote(c.csrf, safe="")}", '
            f"households = {{{households}}}, items = {{{items}}}}}"
        )
    return (
        "-- written by bench/web.py for one run\n"
        f'nonce = "{nonce}"\n'
        "counters = {\n"
        + ",\n".join(rows)
        + "\n}\n"
        + r"""
counter, sent, last_total = nil, 0, 0
function init(args)
  counter = counters[((index - 1) % #counters) + 1]
  math.randomseed(index * 7919 + os.time())
end
function request()
  sent = sent + 1
  local hh = counter.households[math.random(#counter.households)]
  local items = counter.items
  local wanted = math.random(3)
  local chosen, fields, total = {}, {}, 0
  while #fields < wanted do
    local i = math.random(#items)
    if not chosen[i] then
      chosen[i] = true
      local units = math.random(2)
      total = total + items[i][2] * units
      fields[#fields + 1] = "&qty-" .. items[i][1] .. "=" .. units
    end
  end
  last_total = total
  local body = "csrf_token=" .. counter.csrf .. "&key=" .. nonce .. "-" .. index .. "-" .. sent
    .. "&total=" .. total .. "&member=" .. table.concat(fields)
  return wrk.format("POST", "/clerk/shops/" .. counter.shop .. "/households/" .. hh[1] .. "/checkout",
    {["Cookie"] = "session=" .. hh[2], ["Content-Type"] = "application/x-www-form-urlencoded"},
    body)
end
function response(status, headers, body)
  local location = headers["Location"] or ""
  if status == 302 and string.find(location, "/clerk/redemptions/", 1, true) then
    ok = ok + 1
    points = points + last_total
  elseif status == 409 or status == 422 then
    refused = refused + 1
  else
    other = other + 1
    if first_other == "" then first_other = status .. " " .. location end
  end
end
"""
        + common.WRK_DONE
    )


# --- the checkout's SQL as a pgbench script -----------------------------------------------------

#: Which id a (table, column) or a column anywhere holds.
_ENTITY_BY_COLUMN = {
    "household_id": "household",
    "account_id": "account",
    "shop_id": "shop",
    "item_id": "item",
    "user_id": "user",
    "clerk_id": "user",
    "recorded_by_id": "user",
    "approved_by_id": "user",
    "voided_by_id": "user",
    "actor_id": "user",
    "card_id": "card",
    "group_id": "group",
    "village_id": "village",
    "town_id": "town",
    "redemption_id": "redemption",
    "transfer_id": "transfer",
    "refunds_id": "transfer",
    "member_id": "member",
}
_ENTITY_BY_TABLE = {
    "households": "household",
    "accounts": "account",
    "shops": "shop",
    "shop_items": "item",
    "users": "user",
    "household_cards": "card",
    "villager_groups": "group",
    "villages": "village",
    "towns": "town",
    "login_sessions": "session",
    "redemptions": "redemption",
    "transfers": "transfer",
    "members": "member",
}
#: Columns that hold the redemption's id without saying so.
_REDEMPTION_BY_SOURCE = {("transfers", "source_id"), ("audit_log", "target_id")}


@dataclass
class Captured:
    kind: str  #: SQL, BEGIN, COMMIT, ROLLBACK
    statement: str = ""
    parameters: dict | None = None


def capture_checkouts(url: str, counter: Counter) -> list[tuple[list[Captured], dict]]:
    """Check out each of SQL_CARTS through the full stack in this process (Flask's test client,
    a real staff login, the counter scan) and record the SQL of the confirm request.

    Returns, per cart, the captured statements and what they mean: {value: name} per entity."""
    from pointsmart.extensions import db

    app = common.make_app(url)
    client = app.test_client()
    page = client.get("/login/staff")
    client.post(
        "/login/staff",
        data={
            "username": counter.clerk,
            "password": generate.STAFF_PASSWORD,
            "csrf_token": csrf_of(page.text),
        },
    )
    token = csrf_of(client.get(f"/clerk/shops/{counter.shop_id}/counter").text)
    with app.app_context():
        engine = db.engine
        pre_ping = bool(engine.pool._pre_ping)
    log: list[Captured] = []
    recording = [False]

    def on_sql(conn, cursor, statement, parameters, context, executemany):
        if recording[0]:
            log.append(Captured("SQL", statement, dict(parameters or {})))

    def on(kind):
        return lambda *args: recording[0] and log.append(Captured(kind))

    sa.event.listen(engine, "before_cursor_execute", on_sql)
    for event, kind in (("begin", "BEGIN"), ("commit", "COMMIT"), ("rollback", "ROLLBACK")):
        sa.event.listen(engine, event, on(kind))
    household_id, account_id, card_id, card_token, group_id = counter.pool[0]
    results = []
    for cart in SQL_CARTS:
        for _attempt in range(2):  # the second, warm, is kept
            client.post(
                f"/clerk/shops/{counter.shop_id}/counter",
                data={"code": card_token, "csrf_token": token},
            )
            fields = {f"qty-{counter.items[p][0]}": str(q) for p, q in cart}
            total = sum(counter.items[p][1] * q for p, q in cart)
            key = f"capture{secrets.token_hex(8)}"
            log.clear()
            recording[0] = True
            answer = client.post(
                f"/clerk/shops/{counter.shop_id}/households/{household_id}/checkout",
                data={"csrf_token": token, "key": key, "total": str(total), "member": "", **fields},
            )
            recording[0] = False
            location = answer.headers.get("Location", "")
            if answer.status_code != 302 or "/clerk/redemptions/" not in location:
                raise SystemExit(f"captured checkout failed: {answer.status_code} {location}")
        redemption_id = int(location.rsplit("/", 1)[1])
        with app.app_context():
            transfer_id = db.session.scalar(
                sa.text("SELECT transfer_id FROM redemptions WHERE id = :r"), {"r": redemption_id}
            )
            session_token = db.session.scalar(
                sa.text(
                    "SELECT id FROM login_sessions WHERE user_id = :u AND ended_at IS NULL "
                    "ORDER BY created_at DESC LIMIT 1"
                ),
                {"u": counter.clerk_id},
            )
            db.session.remove()
        known = {
            "household": {household_id: "hh"},
            "account": {account_id: "acc", counter.shop_account: "shop_acc"},
            "card": {card_id: "card"},
            "group": {group_id: "grp"},
            "village": {counter.village_id: "village"},
            "town": {counter.town_id: "town"},
            "shop": {counter.shop_id: "shop"},
            "user": {counter.clerk_id: "clerk"},
            "session": {session_token: "sess"},
            "item": {
                item_id: f"item_{position}" for position, (item_id, _) in enumerate(counter.items)
            },
            "redemption": {redemption_id: "r_id"},
            "transfer": {transfer_id: "t_id"},
            "_key": key,
            "_total": total,
            "_pre_ping": pre_ping,
        }
        results.append((list(log), known))
    with app.app_context():
        db.engine.dispose()
    return results


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _column_of(statement: str, name: str, start: int) -> tuple[str | None, str | None]:
    """Return the (table, column) a placeholder stands for, from the statement around it."""
    before, after = statement[:start], statement[start:]
    insert = re.match(r"INSERT INTO (\w+) \(([^)]*)\)", statement)
    base = re.sub(r"__\d+$", "", name)
    if insert and base in [c.strip() for c in insert.group(2).split(",")]:
        return insert.group(1), base
    update = re.match(r"UPDATE (\w+) SET", statement)
    set_match = re.search(r"(\w+)=$", before)
    if update and set_match:
        return update.group(1), set_match.group(1)
    compared = re.search(r"(\w+)\.(\w+) (?:=|>=|<=|<>|!=|<|>) $", before)
    if compared:
        return compared.group(1), compared.group(2)
    listed = re.search(r"(\w+)\.(\w+) IN \((?:%\(\w+\)s(?:::[A-Z ]+)?, )*$", before)
    if listed:
        return listed.group(1), listed.group(2)
    reverse = re.match(r"%\(\w+\)s(?:::[A-Z ]+)? = (\w+)\.(\w+)", after)
    if reverse:
        return reverse.group(1), reverse.group(2)
    return None, None


def _literal(value) -> str:
    """Return a value as SQL; a ':' before a letter is kept apart (pgbench reads :name)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return "now()"
    if hasattr(value, "obj"):  # psycopg's Json wrapper, as SQLAlchemy passes JSON columns
        value = json.dumps(value.obj, ensure_ascii=False)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    pieces = re.split(r":(?=\w)", str(value))
    quoted = " || ':' || ".join("'" + p.replace("'", "''") + "'" for p in pieces)
    return f"({quoted})" if len(pieces) > 1 else quoted


def to_pgbench(captured: list[Captured], known: dict, slots: int, pool: int) -> tuple[str, list]:
    """Turn one captured checkout into a pgbench script; return it and what stayed literal."""
    key = known["_key"]
    literal_ids: list[str] = []
    lines = [
        "-- the SQL of one checkout (the counter's confirm POST), captured through the full",
        "-- stack by bench/web.py; ids and keys replaced by variables",
        f"\\set n random(0, {pool - 1})",
        f"\\set slot :client_id % {slots}",
        "\\set key random(1, 9000000000000000000)",
        "-- not in the app: pgbench picks the counter's household here",
        "SELECT household AS hh, account AS acc, card, grp, village, town, shop, shop_acc, clerk,"
        " sess, item_base FROM bench_pool WHERE slot = :slot AND n = :n \\gset",
    ]
    items = sorted(known["item"].items())
    base_item = items[0][0]
    for item_id, name in items:
        lines.append(f"\\set {name} :item_base + {item_id - base_item}")
    first = True
    for entry in captured:
        if entry.kind == "BEGIN":
            lines.append("BEGIN;")
            if first and known["_pre_ping"]:
                lines.append("SELECT 1;  -- the connection pool's pre-ping")
            first = False
            continue
        if entry.kind in ("COMMIT", "ROLLBACK"):
            lines.append(f"{entry.kind};")
            continue
        statement = " ".join(entry.statement.split())
        params = entry.parameters or {}
        out, last = [], 0
        for match in _PLACEHOLDER.finditer(statement):
            name = match.group(1)
            value = params.get(name)
            table, column = _column_of(statement, name, match.start())
            entity = None
            if (table, column) in _REDEMPTION_BY_SOURCE:
                entity = "redemption"
            elif column == "id":
                entity = _ENTITY_BY_TABLE.get(table)
            elif column:
                entity = _ENTITY_BY_COLUMN.get(column)
            if entity and value in known.get(entity, {}):
                text = f":{known[entity][value]}"
            elif isinstance(value, str) and key in value:
                prefix, suffix = value.split(key, 1)
                parts = (
                    [_literal(prefix + "pgb")] + [":key"] + ([_literal(suffix)] if suffix else [])
                )
                text = "(" + " || ".join(parts) + ")"
            else:
                text = _literal(value)
                if entity and entity != "member" and value is not None:
                    literal_ids.append(f"{table}.{column}={value}")
            out.append(statement[last : match.start()] + text)
            last = match.end()
        out.append(statement[last:])
        sql_text = "".join(out)
        if sql_text.startswith("INSERT INTO redemptions "):
            lines.append(sql_text + " \\gset r_")
        elif sql_text.startswith("INSERT INTO transfers "):
            lines.append(sql_text + " \\gset t_")
        else:
            lines.append(sql_text + ";")
    return "\n".join(lines) + "\n", literal_ids


def make_pool_table(url: str, counters: list[Counter]) -> None:
    """Write each counter's pool as a table the SQL script picks its household from."""
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_pool")
        conn.execute(
            "CREATE TABLE bench_pool (slot int, n int, household int, account int, card int, "
            "grp int, village int, town int, shop int, shop_acc int, clerk int, sess text, "
            "item_base int, PRIMARY KEY (slot, n))"
        )
        with conn.cursor().copy("COPY bench_pool FROM STDIN") as copy:
            for c in counters:
                for n, (household, account, card, _token, group) in enumerate(c.pool):
                    copy.write_row(
                        (c.slot, n, household, account, card, group, c.village_id, c.town_id,
                         c.shop_id, c.shop_account, c.clerk_id, c.session_token, c.items[0][0])
                    )  # fmt: skip
        conn.execute("ANALYZE bench_pool")


# --- the books ----------------------------------------------------------------------------------


@dataclass
class Totals:
    households: int  #: sum of household spendable balances
    shops: int  #: sum of shop accounts
    redeemed: int  #: sum of redemption totals
    redemptions: int
    shelves: int  #: sum of stock × price


def totals(url: str) -> Totals:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT (SELECT coalesce(sum(balance), 0) FROM accounts "
                "        WHERE kind = 'household_spendable'),"
                " (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'shop'),"
                " (SELECT coalesce(sum(total_points), 0) FROM redemptions),"
                " (SELECT count(*) FROM redemptions),"
                " (SELECT coalesce(sum(stock * points), 0) FROM shop_items)"
            )
        ).one()
    engine.dispose()
    return Totals(*(int(v) for v in row))


def settle(url: str, timeout: float = 30) -> None:
    """Wait until no other connection to the database is inside a transaction: a request
    that wrk stopped waiting for at the end of its run may still be committing, and a check
    that read half before and half after it would see a difference that is not there."""
    if not url.startswith("postgresql"):
        time.sleep(2)
        return
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            busy = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
                )
            ).scalar_one()
            conn.rollback()
            if not busy:
                break
            time.sleep(0.1)
    engine.dispose()


def check_books(
    url: str, before: Totals, committed: int, points: int, cut: int = 0
) -> tuple[list[str], str]:
    """Return every way the books disagree after a load, and a one-line account of them.

    The services' own checks (ledger, stock, redemptions, monthly figures), no negative
    balance, and: points debited from households = received by the shops = redemption totals
    = stock removed × price; redemptions added = the checkouts the clients saw committed, plus
    at most ``cut`` requests that were in flight when the load generator stopped (it closes
    its connections without waiting for their answers; the server still commits them)."""
    from pointsmart.extensions import db
    from pointsmart.services import catalogue, ledger, monthly, redemptions

    settle(url)
    problems = []
    app = common.make_app(url)
    with app.app_context():
        mismatches, unbalanced = ledger.check()
        if mismatches or unbalanced:
            problems.append(f"ledger.check: {mismatches[:3]}, unbalanced {unbalanced[:3]}")
        if stock := catalogue.check_stock():
            problems.append(f"catalogue.check_stock: {stock[:3]}")
        if lines := redemptions.check_redemptions():
            problems.append(f"redemptions.check_redemptions: {lines[:3]}")
        if months := monthly.check():
            problems.append(f"monthly.check: {months[:3]}")
        negative = db.session.scalar(
            sa.text(
                "SELECT count(*) FROM accounts WHERE kind = 'household_spendable' AND balance < 0"
            )
        )
        if negative:
            problems.append(f"{negative} household(s) with a negative balance")
        db.session.remove()
        db.engine.dispose()
    after = totals(url)
    moved = {
        "debited from households": before.households - after.households,
        "received by the shops": after.shops - before.shops,
        "redemption totals": after.redeemed - before.redeemed,
        "stock removed × price": before.shelves - after.shelves,
    }
    if len(set(moved.values())) != 1:
        problems.append("points disagree: " + ", ".join(f"{k} {v:,}" for k, v in moved.items()))
    added = after.redemptions - before.redemptions
    extra = added - committed
    if not 0 <= extra <= cut:
        problems.append(
            f"{added:,} redemptions stored, {committed:,} committed by the clients "
            f"(and at most {cut} cut off at the end)"
        )
    elif (extra == 0) != (moved["redemption totals"] == points) or moved[
        "redemption totals"
    ] < points:
        problems.append(f"{moved['redemption totals']:,} points redeemed, clients saw {points:,}")
    state = "balanced" if not problems else "**NOT BALANCED**"
    line = (
        f"{state}: {added:,} checkouts, "
        + ", ".join(f"{k} {v:,}" for k, v in moved.items())
        + f"; the clients saw {committed:,} checkouts of {points:,} points"
        + (f" ({extra} more committed after the load generator stopped waiting)" if extra else "")
        + "; no negative balance; ledger, stock, redemption and monthly checks "
        + ("clean" if not problems else "NOT clean")
    )
    return problems, line


# --- SQLite ---------------------------------------------------------------------------------------


def copy_to_sqlite(source: str, target: Path) -> float:
    """Copy every table of the generated PostgreSQL database into a SQLite file migrated by
    the app's migrations; return the seconds it took."""
    from pointsmart.extensions import db

    began = time.perf_counter()
    url = f"sqlite:///{target}"
    common.migrate(url)
    pg = sa.create_engine(source)
    lite = sa.create_engine(url)
    with pg.connect() as src, lite.begin() as dst:
        for table in db.metadata.sorted_tables:
            query = sa.select(table).order_by(*table.primary_key.columns)
            result = src.execution_options(yield_per=20_000).execute(query)
            for rows in result.partitions():
                dst.execute(table.insert(), [dict(r._mapping) for r in rows])
    pg.dispose()
    lite.dispose()
    return time.perf_counter() - began


# --- a run ----------------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    clients: int
    rate: float
    latency: dict[str, float]
    ceiling: float | None = None
    books: str = ""
    note: str = ""
    #: gunicorn workers' CPU milliseconds per checkout (user + system)
    cpu_ms: float | None = None
    #: where the app's connections were, sampled from pg_stat_activity (PostgreSQL)
    activity: dict[str, float] = field(default_factory=dict)


def app_env(url: str, instance: Path) -> dict[str, str]:
    """The environment gunicorn serves pointsmart.wsgi with: production defaults, this database."""
    return {
        "DATABASE_URL": url,
        "POINTSMART_SECRET_KEY": "bench-web-secret",
        "POINTSMART_INSTANCE_PATH": str(instance),
        # N clerks log in from one address within seconds; the limiter itself stays on.
        "POINTSMART_LOGIN_RATE_LIMIT": "1000 per minute",
    }


def web_load(server, counters, clients, duration, folder, failures, url, label, db=None) -> Row:
    """Warm up, then drive the checkout with wrk; check the books; return the row."""
    before = totals(url)
    ok = points = 0
    runs = []
    measured = (None, {})
    for seconds in (WARMUP_SECONDS, duration):
        script = folder / f"checkout-{clients}-{seconds}.lua"
        script.write_text(checkout_script(counters[:clients], secrets.token_hex(4)))
        cpu = server.cpu_seconds()
        if db is not None and seconds == duration:
            with common.ActivitySampler(db) as sampler:
                run = common.run_wrk(server.url, script, clients, seconds)
            measured = (server.cpu_seconds() - cpu, sampler.shares())
        else:
            run = common.run_wrk(server.url, script, clients, seconds)
            measured = (server.cpu_seconds() - cpu, {})
        ok += run.tally["ok"]
        points += run.tally["points"]
        runs.append(run)
    run = runs[-1]
    problems, books = check_books(url, before, ok, points, cut=clients * len(runs))
    cpu, activity = measured
    failures += [f"{label}, {clients} connections: {p}" for p in problems]
    other = sum(r.tally["other"] + r.tally["refused"] for r in runs)
    if other or run.socket_errors:
        failures.append(
            f"{label}, {clients} connections: {other} requests not redeemed "
            f"(first: {run.tally['first_other'] or '-'}), socket errors {run.socket_errors}"
        )
    rate = run.tally["ok"] / run.seconds
    print(f"{label} {clients} connections: {rate:.1f} checkouts/s, p99 {run.latency['p99']:.1f} ms")
    return Row(
        f"{label}",
        clients,
        rate,
        run.latency,
        books=books,
        cpu_ms=1000 * cpu / max(1, run.tally["ok"]),
        activity=activity,
    )


def main(argv: list[str] | None = None) -> int:
    """Generate, serve, log in, load, compare, check the books, print and record."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 villages of 100 households")
    p.add_argument("--duration", type=int, default=15, help="seconds measured per run (15)")
    p.add_argument("--clients", type=int, nargs="+", help="connections (2 8; sqlite: 2)")
    p.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--pool", type=int, default=100, help="households scanned per counter (100)")
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    p.add_argument(
        "--workers",
        type=int,
        help="gunicorn workers (default: one per core; sqlite: one, as the README serves it)",
    )
    p.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    args = p.parse_args(argv)
    # SQLite is served as the README says: one sync process, since it lets one writer in at a
    # time and every transaction begins IMMEDIATE (pointsmart/extensions.py).
    sqlite = args.database == "sqlite"
    args.workers = args.workers or (1 if sqlite else os.cpu_count())
    clients = args.clients or ([2] if args.database == "sqlite" else [2, 8])
    shape = QUICK if args.quick else generate.SHAPES["town"]
    facts = common.machine(args.server)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    failures: list[str] = []
    rows: list[Row] = []
    sql_rows: list[Row] = []
    notes: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    instance = common.use_scratch_instance()
    with (
        common.scratch_database(args.server, "web") as data_db,
        common.scratch_database(args.server, "pgbench") as pg_db,
    ):
        began = time.perf_counter()
        generate.build(data_db, shape, progress=lambda m: None)
        print(
            f"generated {shape.households:,} households in {time.perf_counter() - began:.0f} s",
            flush=True,
        )
        url = data_db.sqlalchemy_url
        if args.database == "sqlite":
            target = folder / "pointsmart.sqlite"
            seconds = copy_to_sqlite(url, target)
            url = f"sqlite:///{target}"
            notes.append(
                f"copied into SQLite in {seconds:.0f} s ({common.size(target.stat().st_size)})"
            )
            print(notes[-1], flush=True)
        counters = load_counters(url, max(clients), args.pool)
        stock_and_top_up(url, counters)
        if args.database == "postgresql":
            common.pgbench_init(pg_db, args.scale)
            common.vacuum_analyze(data_db)
        log = folder / "gunicorn.log"
        with common.Gunicorn(
            "pointsmart.wsgi:app",
            app_env(url, instance),
            log,
            ready="/login/staff",
            workers=args.workers,
            threads=args.threads,
        ) as server:
            began = time.perf_counter()
            for counter in counters:
                open_counter(server.url, counter)
            print(
                f"{len(counters)} clerks logged in, {sum(len(c.cookies) for c in counters)} "
                f"cards scanned in {time.perf_counter() - began:.0f} s",
                flush=True,
            )
            scripts = []
            if args.database == "postgresql":
                for counter in counters:
                    counter.session_token = login_token_of(url, counter.clerk_id)
                captured = capture_checkouts(url, counters[0])
                for n, (log_entries, known) in enumerate(captured):
                    pool = min(len(c.pool) for c in counters)
                    text, literal_ids = to_pgbench(log_entries, known, max(clients), pool)
                    path = folder / f"checkout-sql-{n + 1}.sql"
                    path.write_text(text)
                    scripts.append((path, known["_total"], log_entries))
                    if literal_ids:
                        notes.append(f"script {n + 1} kept ids literal: {literal_ids}")
                make_pool_table(data_db.libpq_url, counters)
                common.DATA_DIR.mkdir(exist_ok=True)
                for path, _, _ in scripts:
                    (common.DATA_DIR / path.name).write_text(path.read_text())
            for n in clients:
                load_avg = os.getloadavg()[0]
                ceiling = None
                if args.database == "postgresql":
                    tpcb = common.pgbench_run(pg_db, n, args.duration)
                    ceiling = tpcb.tps
                    rows.append(Row("pgbench TPC-B (ceiling)", n, tpcb.tps, tpcb.latency))
                    print(f"pgbench TPC-B {n} clients: {tpcb.tps:.0f} tps", flush=True)
                    before = totals(url)
                    sql_run = common.pgbench_scripts(
                        data_db, n, args.duration, [(str(s), 1) for s, _, _ in scripts]
                    )
                    committed = sql_run.transactions
                    points = sum(
                        count * total
                        for count, (_, total, _) in zip(sql_run.per_script, scripts, strict=False)
                    )
                    # A client stopped by the timer between its COMMIT and the end of the
                    # script leaves a checkout that pgbench does not count: at most one each.
                    problems, books = check_books(url, before, committed, points, cut=n)
                    if sql_run.aborted:
                        problems.append(f"pgbench: {sql_run.aborted[:300]}")
                    failures += [f"checkout SQL script, {n} clients: {p}" for p in problems]
                    sql_rows.append(
                        Row("checkout SQL as a pgbench script", n, sql_run.tps, sql_run.latency,
                            ceiling, books)
                    )  # fmt: skip
                    print(f"checkout SQL {n} clients: {sql_run.tps:.0f} tps", flush=True)
                row = web_load(
                    server, counters, n, args.duration, folder, failures, url,
                    "checkout, full web stack",
                    data_db if args.database == "postgresql" else None,
                )  # fmt: skip
                row.ceiling = ceiling
                row.note = f"load avg {load_avg:.1f}"
                rows.append(row)
        if args.database == "postgresql":
            statements = sum(1 for e in scripts[1][2] if e.kind == "SQL")
            notes.append(
                f"The captured 2-line checkout: {statements} SQL statements in "
                f"{sum(1 for e in scripts[1][2] if e.kind == 'BEGIN')} transaction(s); "
                "scripts in bench/data/checkout-sql-*.sql"
            )
    body = describe(args, shape, clients, rows, sql_rows, notes, failures)
    print()
    print(body)
    if not args.no_record:
        title = (
            "Checkout through the full web stack vs pgbench (PostgreSQL)"
            if args.database == "postgresql"
            else "Checkout through the full web stack on SQLite (the embedded default)"
        )
        common.record(title, body, facts, common.command_line())
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def describe(args, shape, clients, rows, sql_rows, notes, failures) -> str:
    """Return the Markdown section for RESULTS.md."""
    sqlite = args.database == "sqlite"
    table = []
    for row in rows + sql_rows:
        lat = row.latency
        ratio = f"{100 * row.rate / row.ceiling:.1f} %" if row.ceiling else ""
        targets, met = [], []
        if row.what.startswith("checkout, full web stack"):
            if not sqlite and row.clients in TARGET_RATIO:
                targets.append(f"ratio ≥ {TARGET_RATIO[row.clients]:.0%}")
                met.append(_met(row.rate / row.ceiling >= TARGET_RATIO[row.clients]))
            p99_target = (TARGET_SQLITE_P99_MS if sqlite else TARGET_P99_MS).get(row.clients)
            if p99_target:
                targets.append(f"p99 ≤ {p99_target:.0f} ms")
                met.append(_met(lat["p99"] <= p99_target))
        if row.what.startswith("checkout SQL"):
            targets.append(f"ratio ≥ {TARGET_SQL_RATIO:.0%}")
            met.append(_met(row.rate / row.ceiling >= TARGET_SQL_RATIO))
        table.append(
            [row.what, row.clients, row.rate, lat["p50"], lat["p95"], lat["p99"], lat["max"],
             ratio, ", ".join(targets), ", ".join(met)]
        )  # fmt: skip
    headers = ["load", "clients", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "ratio to TPC-B",
               "issue 9 target", "met"]  # fmt: skip
    books = [f"- {r.what}, {r.clients} clients: {r.books}" for r in rows + sql_rows if r.books]
    web_rows = [r for r in rows if r.cpu_ms is not None]
    states = (
        "waiting on a lock",
        "in PostgreSQL",
        "in the client, mid-transaction",
        "in the client, between transactions",
    )
    diagnostics = [
        [r.clients, r.cpu_ms, *(f"{r.activity.get(k, 0):.0f} %" for k in states)] for r in web_rows
    ]
    loads = [f"{r.clients} connections: {r.note}" for r in rows if r.note]
    lines = [
        f"Data: a generated town (bench/generate.py) of {shape.households:,} households "
        f"({shape.villages} villages), a year of history"
        + (", copied into SQLite" if sqlite else "")
        + f". gunicorn `pointsmart.wsgi:app`, {args.workers} "
        + (f"worker(s) of {args.threads} threads" if args.threads > 1 else "sync worker(s)")
        + (" (one per core)" if args.workers == os.cpu_count() and args.threads == 1 else "")
        + (" (as the README serves SQLite)" if sqlite and args.workers == 1 else "")
        + ", "
        "logging at INFO as in production; wrk on loopback, one thread per connection. Each "
        "connection is a clerk logged in through the staff login page, at the counter of a shop "
        f"of its own, with {args.pool} household cards scanned there (the counter POST); each "
        "request is the counter's confirm POST (CSRF token, server-side login session, audit "
        "entry) with a fresh key and a random 1–3 line cart; a request counts when it answers "
        f"302 to the receipt. {WARMUP_SECONDS} s of warm-up load, then {args.duration} s "
        "measured. Before the load each pool household got "
        f"{TOP_UP:,} points (one posted award) and each good {INTAKES * INTAKE_UNITS:,} units.",
    ]
    if not sqlite:
        lines[0] += (
            f" Ceiling: pgbench's built-in TPC-B, scale {args.scale}, same clients, same server, "
            "just before. The checkout's SQL: the statements of the confirm request (1-, 2- and "
            "3-line carts, one script each, equal weights) captured through the full stack with "
            "SQLAlchemy events, replayed by `pgbench -M prepared` with the counter's shop per "
            "client, a random pool household and fresh keys (one extra SELECT picks the "
            "household from a pool table)."
        )
    lines += [
        "",
        common.markdown_table(headers, table),
        "",
        "Books after each load (" + "; ".join(loads) + "):",
        "",
        *books,
        "",
    ]
    if sqlite:
        lines += [
            "gunicorn workers' CPU time per checkout: "
            + ", ".join(f"{r.cpu_ms:.1f} ms at {r.clients} connections" for r in web_rows)
            + "."
        ]
    else:
        lines += [
            "The web loads: gunicorn workers' CPU time per checkout, and where the app's database "
            "connections were (pg_stat_activity every 50 ms; idle connections of the pool count "
            "as between transactions):",
            "",
            common.markdown_table(
                ["connections", "worker CPU ms / checkout", *states], diagnostics
            ),
        ]
    if notes:
        lines += ["", *notes]
    for failure in failures:
        lines += ["", f"**FAILURE:** {failure}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
