"""Monthly rankings of a 300,000-household county and a 10,000-household town on PostgreSQL.

On a scratch database it generates, with plain SQL (generate_series, not the services), a county
of 10 towns × 30 villages × 5 groups × 200 households and one town of 20 villages × 5 groups ×
100 households, about 1 % of households no longer active, and 12 months of ``household_months``
rows: each household has a row in a month with probability 0.7, awarded 0–60 points, and in
6 % of its rows 5–20 points deducted. Then, one untimed call and ``--repeat`` timed calls each
(median reported), it times the services as the pages call them:

- ``rankings.households`` (the top 50) of the county (a Scope over its ten towns) and of the
  town, for one month and for twelve;
- ``rankings.standing`` of one household in the county, the town and its village;
- ``rankings.count_households`` of the county; ``rankings.places`` of the town (its villages).

It prints EXPLAIN (ANALYZE, BUFFERS) of every statement of the slow calls (written whole to
``bench/data/rankings-explain.txt``) and times, on the same data, index-driven forms of the
monthly top 50 and of a household's rank, to show what meeting issue 9's targets would take.

    python -m bench.rankings [--repeat 15] [--towns 10 --villages 30 --groups 5 --per-group 200]
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import psycopg
import sqlalchemy as sa

from bench import common

#: Issue 9's targets, in milliseconds.
TARGET_TOP = 5.0
TARGET_RANK = 50.0
#: A call slower than this gets its statements explained in RESULTS.md ...
EXPLAIN_ABOVE_MS = 10.0
#: ... those of its statements that take at least this long (not the lazy loads).
SHOW_PLANS_ABOVE_MS = 1.0

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = ["建国", "秀英", "桂兰", "志强", "玉梅", "海燕", "国华", "明", "红", "春生", "德胜", "淑芬"]


# --- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    towns: int
    villages: int
    groups: int
    per_group: int
    town_villages: int
    town_groups: int
    town_per_group: int

    @property
    def county_households(self) -> int:
        return self.towns * self.villages * self.groups * self.per_group

    @property
    def town_households(self) -> int:
        return self.town_villages * self.town_groups * self.town_per_group


def _add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def generate(db: common.Database, shape: Shape, last_month: date) -> dict[str, float]:
    """Fill places, households and the 12 months up to ``last_month`` with SQL; return timings."""
    timings: dict[str, float] = {}
    first_month = _add_months(last_month, -11)
    name_sql = (
        f"substr('{SURNAMES}', 1 + floor(random() * {len(SURNAMES)})::int, 1)"
        f" || (ARRAY{GIVEN!r})[1 + floor(random() * {len(GIVEN)})::int]"
    )

    def places(conn, town_name: str, towns: int, villages: int, groups: int, per_group: int):
        town_ids = [
            row[0]
            for row in conn.execute(
                "INSERT INTO towns (name, created_at) "
                "SELECT %s || t, now() FROM generate_series(1, %s) t RETURNING id",
                (town_name, towns),
            )
        ]
        conn.execute(
            "INSERT INTO villages (town_id, name, allow_negative_balance, board_names, created_at) "
            "SELECT t, v || '村', false, 'masked', now() "
            "FROM unnest(%s::int[]) t CROSS JOIN generate_series(1, %s) v",
            (town_ids, villages),
        )
        conn.execute(
            "INSERT INTO villager_groups (village_id, name) "
            "SELECT v.id, g || '组' FROM villages v CROSS JOIN generate_series(1, %s) g "
            "WHERE v.town_id = ANY(%s)",
            (groups, town_ids),
        )
        conn.execute(
            "INSERT INTO households (group_id, house_number, name, is_active, created_at) "
            f"SELECT g.id, h::text, {name_sql}, random() >= 0.01, now() "
            "FROM villager_groups g JOIN villages v ON v.id = g.village_id "
            "CROSS JOIN generate_series(1, %s) h WHERE v.town_id = ANY(%s)",
            (per_group, town_ids),
        )
        return town_ids

    with psycopg.connect(db.libpq_url) as conn:
        conn.execute("SELECT setseed(0.42)")
        began = time.perf_counter()
        county = places(conn, "县", shape.towns, shape.villages, shape.groups, shape.per_group)
        (town,) = places(
            conn, "大镇", 1, shape.town_villages, shape.town_groups, shape.town_per_group
        )
        timings["places and households"] = time.perf_counter() - began
        began = time.perf_counter()
        # random() in the select list is evaluated per row; each household-month draws anew.
        conn.execute(
            "INSERT INTO household_months (household_id, month, group_id, village_id, town_id, "
            "points, awarded, deducted, awards, deductions) "
            "SELECT id, month, group_id, village_id, town_id, awarded - deducted, awarded, "
            "deducted, CASE WHEN awarded > 0 THEN 1 + awarded / 20 ELSE 0 END, "
            "CASE WHEN deducted > 0 THEN 1 ELSE 0 END FROM ("
            "  SELECT h.id, m.month, h.group_id, g.village_id, v.town_id,"
            "    floor(random() * 61)::int AS awarded,"
            "    CASE WHEN random() < 0.06 THEN 5 + floor(random() * 16)::int ELSE 0 END"
            "      AS deducted"
            "  FROM households h JOIN villager_groups g ON g.id = h.group_id"
            "  JOIN villages v ON v.id = g.village_id"
            "  CROSS JOIN (SELECT (%s::date + make_interval(months => n))::date AS month"
            "              FROM generate_series(0, 11) n) m"
            "  WHERE random() < 0.7"
            ") draws",
            (first_month,),
        )
        conn.commit()
        timings["household_months"] = time.perf_counter() - began
    began = time.perf_counter()
    common.vacuum_analyze(db)
    timings["vacuum analyze"] = time.perf_counter() - began
    timings["county"] = county
    timings["town"] = town
    return timings


def table_facts(db: common.Database) -> dict[str, int]:
    with psycopg.connect(db.libpq_url) as conn:
        return {
            "households": conn.execute("SELECT count(*) FROM households").fetchone()[0],
            "inactive": conn.execute(
                "SELECT count(*) FROM households WHERE NOT is_active"
            ).fetchone()[0],
            "household_months": conn.execute("SELECT count(*) FROM household_months").fetchone()[0],
            "size": conn.execute("SELECT pg_total_relation_size('household_months')").fetchone()[0],
        }


# --- what is timed -------------------------------------------------------------------------------


def county_scope(town_ids: list[int]):
    """Return a Scope over every household of several towns (the app ranks at most a town)."""
    from pointsmart.extensions import db
    from pointsmart.models import HouseholdMonth, Town, Village
    from pointsmart.services import rankings

    @dataclass(frozen=True)
    class CountyScope(rankings.Scope):
        town_ids: tuple[int, ...] = ()

        @property
        def name(self) -> str:
            return "county"

        def months_filter(self):
            return HouseholdMonth.town_id.in_(self.town_ids)

        def households_filter(self):
            return Village.town_id.in_(self.town_ids)

    first = db.session.get(Town, town_ids[0])
    return CountyScope(rankings.ScopeKind.TOWN, first, tuple(town_ids))


@dataclass
class Timing:
    what: str
    seconds: list[float]
    result: object
    statements: list[tuple[str, dict]]
    target_ms: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000


@contextlib.contextmanager
def captured(engine):
    """Collect the SQL statements and parameters sent while the block runs."""
    statements: list[tuple[str, dict]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def timed(what: str, fn: Callable[[], object], repeat: int, target_ms=None) -> Timing:
    """Call fn once untimed with its statements captured, then ``repeat`` times timed."""
    from pointsmart.extensions import db

    with captured(db.engine) as statements:
        result = fn()
    db.session.rollback()
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - began)
        db.session.rollback()
    timing = Timing(what, seconds, result, statements, target_ms)
    print(f"{what}: median {timing.median_ms:.1f} ms", flush=True)
    return timing


def explain(statements: list[tuple[str, dict]]) -> list[str]:
    """Return EXPLAIN (ANALYZE, BUFFERS) of each statement, run on the app's connection."""
    from pointsmart.extensions import db

    plans = []
    for statement, parameters in statements:
        rows = db.session.connection().exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
        )
        plans.append("\n".join(row[0] for row in rows))
        db.session.rollback()
    return plans


def execution_ms(plan: str) -> float:
    """Return the execution time EXPLAIN ANALYZE reported, in milliseconds."""
    line = next(line for line in plan.splitlines() if line.startswith("Execution Time"))
    return float(line.split(":")[1].split()[0])


def summary(plan: str, nodes: int = 8) -> str:
    """Return the first plan nodes (with their actual times) and the execution time."""
    lines = plan.splitlines()
    kept = [lines[0]]
    kept += [line for line in lines[1:] if "->" in line][: nodes - 1]
    kept += [line for line in lines if line.startswith("Execution Time")]
    return "\n".join(line.rstrip() for line in kept)


def proposed(sql: str, params: dict) -> Callable[[], object]:
    """Return a call running one SQL statement through the app's session (an alternative)."""
    from pointsmart.extensions import db

    return lambda: db.session.execute(sa.text(sql), params).all()


#: The top 50 of one month read from the (month, town_id, points) index: the 50th-best points
#: first, then every household at or above it, ordered by the stated tie rule. Exact whenever
#: the cutoff is above 0 (else households without a row would belong in the list).
TOP_FROM_INDEX = """
WITH cutoff AS (
  SELECT hm.points FROM household_months hm JOIN households h ON h.id = hm.household_id
  WHERE hm.month = :month AND hm.town_id {towns} AND h.is_active
  ORDER BY hm.points DESC OFFSET 49 LIMIT 1
)
SELECT rank() OVER (ORDER BY hm.points DESC), h.id, h.name, h.house_number, g.name, v.name,
       hm.points, hm.awarded, hm.deducted
FROM household_months hm
JOIN households h ON h.id = hm.household_id
JOIN villager_groups g ON g.id = h.group_id
JOIN villages v ON v.id = g.village_id
WHERE hm.month = :month AND hm.town_id {towns} AND h.is_active
  AND hm.points >= (SELECT points FROM cutoff)
ORDER BY hm.points DESC, v.name, g.name, length(h.house_number), h.house_number, h.id
LIMIT 50
"""

#: How many rows of the month are ahead of a household: a count over the same index alone.
AHEAD_FROM_INDEX = """
SELECT count(*) FROM household_months
WHERE month = :month AND town_id {towns} AND points > :mine
"""


# --- the run -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Generate the county and the town, time the rankings, print and record."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=15, help="timed repetitions (default 15)")
    p.add_argument("--towns", type=int, default=10)
    p.add_argument("--villages", type=int, default=30, help="villages per county town")
    p.add_argument("--groups", type=int, default=5, help="groups per village")
    p.add_argument("--per-group", type=int, default=200, help="households per county group")
    p.add_argument("--town-villages", type=int, default=20)
    p.add_argument("--town-per-group", type=int, default=100)
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch database until Enter is pressed (to explore it with psql)",
    )
    args = p.parse_args(argv)
    shape = Shape(
        args.towns,
        args.villages,
        args.groups,
        args.per_group,
        args.town_villages,
        args.groups,
        args.town_per_group,
    )
    facts = common.machine(args.server)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)

    failures: list[str] = []
    with common.scratch_database(args.server, "rankings") as scratch:
        common.migrate(scratch.sqlalchemy_url)
        app = common.make_app(scratch.sqlalchemy_url)
        with app.app_context():
            from pointsmart.services import rankings

            month = _add_months(rankings.this_month(), -1)  # the last whole month
        print(
            f"generating {shape.county_households:,} + {shape.town_households:,} households",
            flush=True,
        )
        made = generate(scratch, shape, month)
        table = table_facts(scratch)
        print(
            f"{table['households']:,} households, {table['household_months']:,} household "
            f"months ({common.size(table['size'])}) in "
            f"{made['places and households'] + made['household_months']:.0f} s",
            flush=True,
        )
        with app.app_context():
            timings, plans, alternatives = measure(
                made["county"], made["town"], month, args.repeat, failures
            )
        if args.keep:
            input(f"database {scratch.name} kept until you press Enter: ")

    body = report(shape, table, made, month, timings, plans, alternatives, args.repeat, failures)
    print()
    print(body)
    if not args.no_record:
        common.record(
            "Rankings of a county and a town (PostgreSQL)", body, facts, common.command_line()
        )
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


def measure(county_ids, town_id, month, repeat, failures):
    """Time the services, explain the slow calls, time the index-driven alternatives."""
    from pointsmart.extensions import db
    from pointsmart.models import Household, Town
    from pointsmart.services import rankings
    from pointsmart.services.rankings import Scope, ScopeKind

    county = county_scope(county_ids)
    town = Scope(ScopeKind.TOWN, db.session.get(Town, town_id))
    one = rankings.month_period(month)
    year = rankings.Period(rankings.PeriodKind.CUSTOM, _add_months(month, -11), month)

    def middling(town_ids: list[int]) -> Household:
        """Return an active household ranked about halfway in the month."""
        household_id = db.session.execute(
            sa.text(
                "SELECT hm.household_id FROM household_months hm JOIN households h "
                "ON h.id = hm.household_id WHERE hm.month = :m AND hm.town_id = ANY(:t) "
                "AND h.is_active ORDER BY hm.points DESC, hm.household_id "
                "OFFSET (SELECT count(*) / 2 FROM household_months WHERE month = :m "
                "AND town_id = ANY(:t)) LIMIT 1"
            ),
            {"m": month, "t": town_ids},
        ).scalar_one()
        return db.session.get(Household, household_id)

    in_county, in_town = middling(county_ids), middling([town_id])
    village = Scope(ScopeKind.VILLAGE, in_town.group.village)

    timings = [
        timed(
            "top 50 of the county, one month",
            lambda: rankings.households(county, one),
            repeat,
            TARGET_TOP,
        ),
        timed("top 50 of the town, one month", lambda: rankings.households(town, one), repeat),
        timed("top 50 of the county, 12 months", lambda: rankings.households(county, year), repeat),
        timed("top 50 of the town, 12 months", lambda: rankings.households(town, year), repeat),
        timed(
            "a household's rank in the county, one month",
            lambda: rankings.standing(in_county, county, one),
            repeat,
            TARGET_RANK,
        ),
        timed(
            "a household's rank in the town, one month",
            lambda: rankings.standing(in_town, town, one),
            repeat,
            TARGET_RANK,
        ),
        timed(
            "a household's rank in its village, one month (villager home)",
            lambda: rankings.standing(in_town, village, one),
            repeat,
        ),
        timed(
            "households of the county (count_households)",
            lambda: rankings.count_households(county),
            repeat,
        ),
        timed("the town's villages ranked (places)", lambda: rankings.places(town, one), repeat),
    ]
    # Sanity: the lists are full, ranks start at 1 and never fall, a standing is within range.
    for t in timings:
        if isinstance(t.result, list) and t.result and hasattr(t.result[0], "rank"):
            ranks = [row.rank for row in t.result]
            if len(ranks) != 50 or ranks[0] != 1 or ranks != sorted(ranks):
                failures.append(f"{t.what}: ranks {ranks[:5]}… ({len(ranks)} rows)")
        if isinstance(t.result, rankings.Standing) and not 1 <= t.result.rank <= t.result.of:
            failures.append(f"{t.what}: {t.result}")

    plans = {t.what: explain(t.statements) for t in timings if t.median_ms > EXPLAIN_ABOVE_MS}

    # What index-driven queries cost on the same data (not what the services do today).
    county_top = timings[0].result
    town_top = timings[1].result
    alternatives = []
    town_sql = TOP_FROM_INDEX.format(towns="= :town")
    alternatives.append(
        timed(
            "top 50 of the town, one month, from the (month, town_id, points) index",
            proposed(town_sql, {"month": month, "town": town_id}),
            repeat,
            TARGET_TOP,
        )
    )
    mine_town = rankings.standing(in_town, town, one).points
    alternatives.append(
        timed(
            "rows ahead of a household in the town, counted in the index",
            proposed(
                AHEAD_FROM_INDEX.format(towns="= :town"),
                {"month": month, "town": town_id, "mine": mine_town},
            ),
            repeat,
            TARGET_RANK,
        )
    )
    mine_county = rankings.standing(in_county, county, one).points
    alternatives.append(
        timed(
            "rows ahead of a household in the county, counted in the index",
            proposed(
                AHEAD_FROM_INDEX.format(towns="= ANY(:towns)"),
                {"month": month, "towns": list(county_ids), "mine": mine_county},
            ),
            repeat,
            TARGET_RANK,
        )
    )
    # A county-wide ranking needs an index that leads with the month and orders by points.
    db.session.execute(
        sa.text(
            "CREATE INDEX bench_household_months_month_points ON household_months (month, points)"
        )
    )
    db.session.commit()
    county_sql = TOP_FROM_INDEX.format(towns="= ANY(:towns)")
    alternatives.append(
        timed(
            "top 50 of the county, one month, with an index on (month, points)",
            proposed(county_sql, {"month": month, "towns": list(county_ids)}),
            repeat,
            TARGET_TOP,
        )
    )
    plans["top 50 of the county, one month, with an index on (month, points)"] = explain(
        alternatives[-1].statements
    )
    plans["top 50 of the town, one month, from the (month, town_id, points) index"] = explain(
        alternatives[0].statements
    )
    # The alternatives must list what the services list (same households, ranks, order).
    for what, service_rows, alternative in (
        ("town", town_top, alternatives[0].result),
        ("county", county_top, alternatives[-1].result),
    ):
        mine = [(r.rank, r.household_id, r.points) for r in service_rows]
        theirs = [(row[0], row[1], row[6]) for row in alternative]
        if mine != theirs:
            failures.append(f"the index-driven top 50 of the {what} differs from the service's")
    return timings, plans, alternatives


def report(shape, table, made, month, timings, plans, alternatives, repeat, failures) -> str:
    """Return the Markdown section for RESULTS.md."""

    def rows(items):
        out = []
        for t in items:
            target = f"≤ {t.target_ms:g} ms" if t.target_ms else ""
            met = "" if not t.target_ms else ("yes" if t.median_ms <= t.target_ms else "**no**")
            out.append(
                [
                    t.what,
                    t.median_ms,
                    min(t.seconds) * 1000,
                    max(t.seconds) * 1000,
                    len(t.statements),
                    target,
                    met,
                ]
            )
        return out

    headers = ["what", "median ms", "min ms", "max ms", "statements", "issue 9 target", "met"]
    lines = [
        f"Generated with SQL: a county of {shape.towns} towns × {shape.villages} villages × "
        f"{shape.groups} groups × {shape.per_group} households "
        f"({shape.county_households:,}) and a town of {shape.town_villages} × {shape.town_groups} × "
        f"{shape.town_per_group} ({shape.town_households:,}); {table['inactive']:,} households "
        f"(~1 %) inactive; {table['household_months']:,} `household_months` rows over 12 months "
        f"(a row for ~70 % of households a month, awarded 0–60, 5–20 deducted in 6 % of rows), "
        f"{common.size(table['size'])} with indexes; loaded in "
        f"{made['places and households'] + made['household_months']:.0f} s, VACUUM ANALYZE "
        f'{made["vacuum analyze"]:.0f} s. Ranked month: {month:%Y-%m}; "12 months" is the '
        f"custom range ending there. One untimed call, then {repeat} timed calls each (wall "
        "clock through the services and SQLAlchemy, in one process, warm cache; "
        '"statements" counts those of the first call, lazy loads included). The county is a '
        f"Scope over its {shape.towns} towns (the app itself ranks at most a town).",
        "",
        "**The services as they are:**",
        "",
        common.markdown_table(headers, rows(timings)),
        "",
        "**Index-driven alternatives on the same data** (raw SQL in this script, not in the "
        "services; each lists exactly what the service lists, checked):",
        "",
        common.markdown_table(headers, rows(alternatives)),
        "",
        f"EXPLAIN (ANALYZE, BUFFERS) of the calls slower than {EXPLAIN_ABOVE_MS:g} ms, first plan "
        "nodes of each statement (all of it in `bench/data/rankings-explain.txt`):",
        "",
    ]
    for what, statement_plans in plans.items():
        shown = [p for p in statement_plans if execution_ms(p) >= SHOW_PLANS_ABOVE_MS]
        quick = len(statement_plans) - len(shown)
        note = f" ({quick} statements under {SHOW_PLANS_ABOVE_MS:g} ms left out)" if quick else ""
        lines.append(f"*{what}*{note}")
        lines.append("")
        lines.append("```")
        lines.append("\n\n".join(summary(plan) for plan in shown))
        lines.append("```")
        lines.append("")
    common.DATA_DIR.mkdir(exist_ok=True)
    with (common.DATA_DIR / "rankings-explain.txt").open("w", encoding="utf-8") as fh:
        for what, statement_plans in plans.items():
            fh.write(f"=== {what}\n\n" + "\n\n".join(statement_plans) + "\n\n")
    for failure in failures:
        lines.append(f"**FAILURE:** {failure}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
