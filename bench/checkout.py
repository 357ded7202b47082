"""Checkout throughput and latency on PostgreSQL, against pgbench's TPC-B on the same server.

On a fresh database it builds a village through the services (households funded by posted
awards, one shop with stocked goods, a clerk), then runs N client processes, each with its
own app and connection, doing for a fixed time what the counter's confirm request does: load
clerk, shop, household and scanned card, parse a 1–3 item cart, ``redemptions.checkout``
under a fresh key, commit. In the same
run pgbench's built-in transaction runs with the same client counts on a scratch database of
the same server. Afterwards the books must balance, or the run fails (exit 1).

    python -m bench.checkout [--duration 20] [--clients 2 8] [--profile 15]
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from bench import common

ITEM_NAMES = [
    ("大米 5kg", "粮油", 60),
    ("面粉 2.5kg", "粮油", 35),
    ("食用油 1.8L", "粮油", 55),
    ("挂面", "粮油", 8),
    ("食盐", "厨房用品", 3),
    ("酱油", "厨房用品", 10),
    ("醋", "厨房用品", 8),
    ("洗衣粉", "清洁用品", 15),
    ("洗洁精", "清洁用品", 10),
    ("肥皂", "清洁用品", 5),
    ("垃圾袋", "清洁用品", 6),
    ("扫帚", "清洁用品", 20),
    ("牙膏", "个人护理", 9),
    ("毛巾", "日用品", 12),
    ("卫生纸", "日用品", 14),
    ("电池", "日用品", 7),
    ("笔记本", "文具", 4),
    ("铅笔", "文具", 2),
    ("手套", "农资", 6),
    ("化肥 1kg", "农资", 25),
]
#: Each intake of goods is at most 10,000 units (catalogue.MAX_QUANTITY).
INTAKES_PER_ITEM = 10
INTAKE_UNITS = 10_000
#: Points each household is given (one posted award) before the load.
FUNDING = 50_000
#: Checkouts each client makes before it reports ready (not timed).
WARM_CHECKOUTS = 10


@dataclass
class Plan:
    """What a client process needs to play the counter (picklable)."""

    url: str
    shop_id: int
    clerk_id: int
    #: (household id, id of its card in force)
    households: list[tuple[int, int]]
    #: (item id, price in points)
    items: list[tuple[int, int]]
    funded_total: int = 0
    intake_units: dict[int, int] = field(default_factory=dict)


# --- the village ----------------------------------------------------------------------------------


def build_village(url: str, households: int, seed: int = 1) -> Plan:
    """Create a town, a village, funded households, a shop with stocked goods and its clerk."""
    from pointsmart.extensions import db
    from pointsmart.models import Card, Role, TransferKind
    from pointsmart.services import accounts, catalogue, ledger, places

    rng = random.Random(seed)
    app = common.make_app(url)
    with app.app_context():
        town = places.create_town("青山镇")
        village = places.create_village(town, "东坡村")
        cadre = accounts.create_staff("bench_cadre", "网格员", "bench password")
        accounts.grant(cadre, Role.CADRE, village)
        committee = accounts.create_staff("bench_committee", "村委会", "bench password")
        accounts.grant(committee, Role.COMMITTEE, village)
        shop = places.create_shop(town, "东坡村爱心超市", village)
        clerk = accounts.create_staff("bench_clerk", "超市管理员", "bench password")
        accounts.grant(clerk, Role.CLERK, shop)
        intake: dict[int, int] = {}
        items: list[tuple[int, int]] = []
        for name, category, points in ITEM_NAMES:
            item = catalogue.create_item(
                shop, catalogue.ItemData(name=name, category=category, points=points), clerk
            )
            for n in range(INTAKES_PER_ITEM):
                catalogue.receive(
                    item,
                    clerk,
                    quantity_=INTAKE_UNITS,
                    key=f"bench-intake-{item.id}-{n}",
                    cost_yuan="1000",
                    funding="donated",
                    donor="县妇联",
                )
            intake[item.id] = INTAKES_PER_ITEM * INTAKE_UNITS
            items.append((item.id, points))
        db.session.commit()

        groups = [
            places.create_group(village, f"{g + 1}组") for g in range(max(1, households // 100))
        ]
        funded = 0
        for n in range(households):
            household = places.create_household(
                groups[n % len(groups)], str(n + 1), f"户主{n + 1}", head_phone=None
            )
            transfer = ledger.record(
                kind=TransferKind.AWARD,
                household=household,
                points=FUNDING,
                reason="垃圾分类",
                recorded_by=cadre,
                key=f"bench-fund-{n}",
            )
            ledger.post(transfer, committee)
            funded += FUNDING
            if n % 200 == 199:
                db.session.commit()
        db.session.commit()
        cards = [
            (household_id, card_id)
            for household_id, card_id in db.session.execute(
                sa.select(Card.household_id, Card.id).where(Card.revoked_at.is_(None))
            )
        ]
        rng.shuffle(cards)
        plan = Plan(
            url=url,
            shop_id=shop.id,
            clerk_id=clerk.id,
            households=cards,
            items=items,
            funded_total=funded,
            intake_units=intake,
        )
        db.session.remove()
        db.engine.dispose()
    return plan


# --- the counter ----------------------------------------------------------------------------------


def random_cart(rng: random.Random, items: list[tuple[int, int]]) -> tuple[list, int]:
    """Return a 1–3 line cart as the counter form posts it (strings), and its expected total."""
    lines = rng.sample(items, rng.randint(1, 3))
    pairs, total = [], 0
    for item_id, points in lines:
        units = rng.randint(1, 2)
        pairs.append((str(item_id), str(units)))
        total += units * points
    return pairs, total


def counter_checkout(
    app, plan: Plan, household: tuple[int, int], pairs: list, expected_total: int
) -> int:
    """Do what the counter's confirm request does: one checkout, committed; return its points.

    As pointsmart/clerk/counter.py's checkout view: the clerk, the shop and the household by
    id (the URL), the card scanned earlier by id (the session), the cart as the form posts it.
    """
    from sqlalchemy.orm import joinedload

    from pointsmart.extensions import db
    from pointsmart.models import Card, Household, Identification, Shop, User, VillagerGroup
    from pointsmart.services import redemptions

    household_id, card_id = household
    with app.app_context():  # a request's lifetime: its own session, removed at the end
        # Loaded as the request loads them: the user with its grants (accounts.load_session),
        # the household with its group and village (counter.household_or_404).
        clerk = db.session.get(User, plan.clerk_id, options=[joinedload(User.grants)])
        shop = db.session.get(Shop, plan.shop_id)
        customer = db.session.get(
            Household,
            household_id,
            options=[joinedload(Household.group).joinedload(VillagerGroup.village)],
        )
        card = db.session.get(Card, card_id)
        cart = redemptions.parse_cart(pairs)
        redemption, _created = redemptions.checkout(
            shop=shop,
            household=customer,
            cart=cart,
            clerk=clerk,
            key=uuid.uuid4().hex,
            identified_by=Identification.QR,
            card=card,
            expected_total=expected_total,
        )
        total = redemption.total_points
        db.session.commit()
    return total


def client_app(url: str):
    """Create a client's app, logging at INFO as production does, into /dev/null."""
    from flask.logging import default_handler

    app = common.make_app(url, LOG_LEVEL="INFO")
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(default_handler.formatter)
    app.logger.removeHandler(default_handler)
    app.logger.addHandler(handler)
    return app


@dataclass
class ClientResult:
    index: int
    latencies: list[float]
    committed: int = 0
    points: int = 0
    refused: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    #: Client CPU seconds and checkouts after the start signal (warm-up and window).
    cpu: float = 0.0
    loaded: int = 0


def _client(plan: Plan, index: int, ready, go, start_at, warmup: float, duration: float, out):
    """One counter: check out carts until the window closes; report latencies and tallies."""
    from pointsmart.services.errors import DomainError

    result = ClientResult(index, [])

    def attempt(app, rng) -> tuple[float, float] | None:
        """Check out one random cart; return when it began and ended, None if it failed."""
        household = rng.choice(plan.households)
        pairs, expected = random_cart(rng, plan.items)
        began = time.monotonic()
        try:
            points = counter_checkout(app, plan, household, pairs, expected)
        except DomainError as exc:
            result.refused[type(exc).__name__] += 1
            return None
        except Exception as exc:  # counted and reported: a benchmark must not hide them
            result.errors.append(repr(exc)[:300])
            return None
        result.committed += 1
        result.points += points
        return began, time.monotonic()

    try:
        app = client_app(plan.url)
        rng = random.Random(1000 + index)
        # Connect, import and compile before the clock starts: a cold process holds row
        # locks while it compiles its first statements and stalls every other client.
        for _ in range(WARM_CHECKOUTS):
            attempt(app, rng)
    except Exception as exc:
        result.errors.append(repr(exc)[:300])
        ready.put(index)
        out.put(result)
        return
    ready.put(index)
    go.wait()
    measure_from = start_at.value + warmup
    stop = measure_from + duration
    cpu, before = time.process_time(), result.committed
    try:
        while time.monotonic() < stop:
            timing = attempt(app, rng)
            if timing is not None and measure_from <= timing[1] <= stop:
                result.latencies.append(timing[1] - timing[0])
    finally:
        result.cpu, result.loaded = time.process_time() - cpu, result.committed - before
        out.put(result)


@dataclass
class LoadRun:
    clients: int
    seconds: float
    checkouts: int
    tps: float
    latency: dict[str, float]
    committed: int
    points: int
    refused: Counter
    errors: list[str]
    activity: dict[str, float]
    #: Python CPU milliseconds per checkout in the client processes.
    cpu_ms: float


def run_load(
    plan: Plan, db: common.Database, clients: int, duration: float, warmup: float
) -> LoadRun:
    """Run ``clients`` counter processes at once for warmup + duration seconds."""
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_client, args=(plan, i, ready, go, start_at, warmup, duration, out), daemon=True
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    start_at.value = time.monotonic()
    go.set()
    time.sleep(warmup)
    results: list[ClientResult] = []
    deadline = time.monotonic() + duration + 120
    with common.ActivitySampler(db) as activity:
        while len(results) < clients:
            try:
                results.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
            except queue.Empty:
                raise SystemExit(f"{clients - len(results)} client(s) did not report") from None
    for p in procs:
        p.join(timeout=30)
    latencies = [s for r in results for s in r.latencies]
    return LoadRun(
        clients=clients,
        seconds=duration,
        checkouts=len(latencies),
        tps=len(latencies) / duration,
        latency=common.latency_summary(latencies),
        committed=sum(r.committed for r in results),
        points=sum(r.points for r in results),
        refused=sum((r.refused for r in results), Counter()),
        errors=[e for r in results for e in r.errors],
        activity=activity.shares(),
        cpu_ms=1000 * sum(r.cpu for r in results) / max(1, sum(r.loaded for r in results)),
    )


# --- the books ------------------------------------------------------------------------------------


def check_books(plan: Plan, committed: int, points: int) -> tuple[list[str], dict[str, int]]:
    """Return every way the books disagree after the load (empty when they balance), and totals."""
    from pointsmart.extensions import db
    from pointsmart.models import Account, AccountKind, Item, Redemption
    from pointsmart.services import catalogue, ledger, redemptions

    problems: list[str] = []
    app = common.make_app(plan.url)
    with app.app_context():
        mismatches, unbalanced = ledger.check()
        if mismatches or unbalanced:
            problems.append(
                f"ledger.check(): {mismatches[:5]} unbalanced transfers {unbalanced[:5]}"
            )
        stock = catalogue.check_stock()
        if stock:
            problems.append(f"catalogue.check_stock(): {stock[:5]}")
        lines = redemptions.check_redemptions()
        if lines:
            problems.append(f"redemptions.check_redemptions(): {lines[:5]}")
        negative = db.session.scalar(
            sa.select(sa.func.count()).where(
                Account.kind == AccountKind.HOUSEHOLD_SPENDABLE, Account.balance < 0
            )
        )
        if negative:
            problems.append(f"{negative} household(s) with a negative spendable balance")
        left = db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Account.balance), 0)).where(
                Account.kind == AccountKind.HOUSEHOLD_SPENDABLE
            )
        )
        shop_received = db.session.scalar(
            sa.select(Account.balance).where(
                Account.kind == AccountKind.SHOP, Account.shop_id == plan.shop_id
            )
        )
        redemption_total = db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Redemption.total_points), 0))
        )
        redemption_count = db.session.scalar(sa.select(sa.func.count(Redemption.id)))
        goods = sum(
            (plan.intake_units[item_id] - stock_left) * price
            for item_id, stock_left, price in db.session.execute(
                sa.select(Item.id, Item.stock, Item.points)
            )
        )
        db.session.remove()
        db.engine.dispose()
    debited = plan.funded_total - int(left)
    totals = {
        "points debited from households": debited,
        "points received by the shop": int(shop_received),
        "sum of redemption totals": int(redemption_total),
        "sum of stock removed × price": int(goods),
        "points the clients committed": points,
    }
    if len(set(totals.values())) != 1:
        problems.append("totals disagree: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    if redemption_count != committed:
        problems.append(f"{redemption_count} redemptions stored, clients committed {committed}")
    totals["redemptions"] = int(redemption_count)
    return problems, totals


# --- profiling ------------------------------------------------------------------------------------


def profile(plan: Plan, seconds: float) -> tuple[str, str]:
    """Measure and profile one client alone; return a summary and the full report.

    Without the profiler: checkouts per second, wall and CPU time per checkout, and how long
    the item rows and the accounts stay locked (from their UPDATE to the end of the commit).
    For one 2-line checkout: its SQL statements and ORM flushes. Then pyinstrument for
    ``seconds``: a call tree and the functions with the most time of their own.
    """
    from pyinstrument import Profiler
    from sqlalchemy.orm import Session

    from pointsmart.extensions import db

    app = client_app(plan.url)
    statements: list[tuple[float, str]] = []
    flushes = [0]
    rng = random.Random(7)
    with app.app_context():
        sa.event.listen(
            db.engine,
            "before_cursor_execute",
            lambda conn, cursor, stmt, params, context, many: statements.append(
                (time.monotonic(), stmt)
            ),
        )
    sa.event.listen(Session, "before_flush", lambda *args: flushes.__setitem__(0, flushes[0] + 1))

    def one_random() -> None:
        counter_checkout(app, plan, rng.choice(plan.households), *random_cart(rng, plan.items))

    for _ in range(20):  # warm caches
        one_random()

    # Alone, no profiler: rate, CPU, and how long rows stay locked.
    done, held_items, held_accounts = 0, 0.0, 0.0
    wall, cpu = time.monotonic(), time.process_time()
    while time.monotonic() < wall + seconds:
        statements.clear()
        one_random()
        ended = time.monotonic()
        held_items += ended - next(t for t, q in statements if q.startswith("UPDATE shop_items"))
        held_accounts += ended - next(t for t, q in statements if q.startswith("UPDATE accounts"))
        done += 1
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu

    statements.clear()
    flushes[0] = 0
    (first, first_points), (second, second_points) = plan.items[:2]
    pairs, expected = [(str(first), "1"), (str(second), "1")], first_points + second_points
    counter_checkout(app, plan, rng.choice(plan.households), pairs, expected)
    one, one_flushes = [q for _, q in statements], flushes[0]

    profiler = Profiler(interval=0.0005)
    profiled = 0
    stop = time.monotonic() + seconds
    profiler.start()
    while time.monotonic() < stop:
        one_random()
        profiled += 1
    profiler.stop()
    common.DATA_DIR.mkdir(exist_ok=True)
    html = common.DATA_DIR / "checkout-profile.html"
    html.write_text(profiler.output_html())
    tree = profiler.output_text(time="percent_of_total")
    flat = profiler.output_text(flat=True, time="percent_of_total")
    (common.DATA_DIR / "checkout-profile.txt").write_text(tree + "\n\n" + flat)
    ms = 1000 / max(done, 1)
    lines = [
        f"One client alone, no profiler, {seconds:.0f} s: {done / wall:.0f} checkouts/s, "
        f"{wall * ms:.1f} ms wall and {cpu * ms:.1f} ms Python CPU per checkout; item rows "
        f"locked {held_items * ms:.1f} ms and accounts (the shop's included) "
        f"{held_accounts * ms:.1f} ms of each (from their UPDATE to the end of the commit).",
        "",
        f"One 2-line checkout: {len(one)} SQL statements (plus BEGIN and COMMIT), "
        f"{one_flushes} ORM flushes:",
        "",
        *(f"    {i + 1:2}. {' '.join(q.split())[:110]}" for i, q in enumerate(one)),
        "",
        f"pyinstrument, {profiled} checkouts in {seconds:.0f} s (profiler on); full profile in "
        f"{html.relative_to(common.ROOT)} and checkout-profile.txt. Top of the call tree:",
        "",
        *("    " + line for line in tree.splitlines()[4:60]),
        "",
        "Functions with the most time of their own:",
        "",
        *("    " + line for line in flat.splitlines()[4:30]),
    ]
    summary = (
        f"{lines[0]} One 2-line checkout: {len(one)} SQL statements and {one_flushes} ORM flushes."
    )
    return summary, "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------


STATES = (
    "waiting on a lock",
    "in PostgreSQL",
    "in the client, mid-transaction",
    "in the client, between transactions",
)


def main(argv: list[str] | None = None) -> int:
    """Build, load, compare with pgbench, check the books, print and record the figures."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=20, help="seconds measured per run (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="seconds before measuring (default 2)")
    p.add_argument("--clients", type=int, nargs="+", default=[2, 8], help="client counts (2 8)")
    p.add_argument("--households", type=int, default=2000, help="households (default 2000)")
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="afterwards, profile one client alone with pyinstrument for SECONDS",
    )
    args = p.parse_args(argv)
    facts = common.machine(args.server)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)

    failures: list[str] = []
    rows, activity_rows, runs = [], [], []
    with (
        common.scratch_database(args.server, "checkout") as app_db,
        common.scratch_database(args.server, "pgbench") as pg_db,
    ):
        began = time.monotonic()
        common.migrate(app_db.sqlalchemy_url)
        plan = build_village(app_db.sqlalchemy_url, args.households)
        common.vacuum_analyze(app_db)
        setup = time.monotonic() - began
        print(f"village built through the services in {setup:.1f} s", flush=True)
        common.pgbench_init(pg_db, args.scale)

        for clients in args.clients:
            load_before = os.getloadavg()[0]
            with common.ActivitySampler(pg_db) as pg_activity:
                pg = common.pgbench_run(pg_db, clients, args.duration)
            print(f"pgbench   {clients} clients: {pg.tps:8.1f} tps", flush=True)
            run = run_load(plan, app_db, clients, args.duration, args.warmup)
            print(f"checkout  {clients} clients: {run.tps:8.1f} /s", flush=True)
            runs.append(run)
            if run.errors:
                failures.append(f"{len(run.errors)} errors at {clients} clients: {run.errors[:3]}")
            if pg.failed:
                failures.append(f"pgbench reported {pg.failed} failed transactions")
            rows.append(
                [
                    clients,
                    run.tps,
                    run.latency["p50"],
                    run.latency["p95"],
                    run.latency["p99"],
                    pg.tps,
                    pg.latency["p50"],
                    pg.latency["p95"],
                    pg.latency["p99"],
                    f"{100 * run.tps / pg.tps:.1f} %",
                    run.cpu_ms,
                    f"{load_before:.1f}",
                ]
            )
            for name, shares in (("checkout", run.activity), ("pgbench", pg_activity.shares())):
                activity_rows.append(
                    [f"{name}, {clients} clients"] + [f"{shares.get(k, 0):.0f} %" for k in STATES]
                )

        committed = sum(r.committed for r in runs)
        points = sum(r.points for r in runs)
        problems, totals = check_books(plan, committed, points)
        failures += problems
        profile_summary, profile_text = profile(plan, args.profile) if args.profile else ("", "")

    table = common.markdown_table(
        [
            "clients",
            "checkout/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "pgbench tps",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "ratio",
            "client CPU ms",
            "load avg",
        ],
        rows,
    )
    activity_table = common.markdown_table(["connections", *STATES], activity_rows)
    refused = sum((r.refused for r in runs), Counter())
    books = "balanced" if not problems else "NOT BALANCED"
    body = "\n".join(
        [
            f"{args.households} households, {len(plan.items)} goods, one shop; each client process "
            f"has its own app and connection and does what the counter's confirm request does "
            f"(load clerk, shop, household and the scanned card by id, parse a 1–3 line cart, "
            f"`redemptions.checkout` under a fresh key, commit); {WARM_CHECKOUTS} untimed "
            f"checkouts per client and {args.warmup} s of warm-up, then {args.duration} s "
            f"measured. pgbench: built-in TPC-B-like transaction, scale {args.scale}, "
            f"`pgbench -c N -j N -T {args.duration}`, same server, just before each checkout "
            f"load. Village built through the services in {setup:.0f} s. Client CPU ms: Python "
            f"CPU time per checkout in the client processes. Load avg: the machine's 1-minute "
            f"load average before the pair of runs.",
            "",
            table,
            "",
            "ratio = checkouts per second / pgbench transactions per second at the same "
            "client count.",
            "",
            "Where the client connections were, sampled every 50 ms from pg_stat_activity:",
            "",
            activity_table,
            "",
            f"Books after the load: {books} ("
            + ", ".join(f"{k} {v:,}" for k, v in totals.items())
            + f"); refusals {dict(refused) or 'none'}; errors "
            + str(sum(len(r.errors) for r in runs))
            + ".",
        ]
    )
    if profile_summary:
        body += f"\n\n{profile_summary}"
    for failure in failures:
        body += f"\n\n**FAILURE:** {failure}"
    print()
    print(body)
    if profile_text:
        print()
        print(profile_text)
    if not args.no_record:
        common.record("Checkout vs pgbench (PostgreSQL)", body, facts, common.command_line())
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
