"""Monthly rankings of a 300,000-household county and a 10,000-household town on PostgreSQL.

On a scratch database it generates, with plain SQL (generate_series, not the services), a county
of 10 towns × 30 villages × 5 groups × 200 households and one town of 20 villages × 5 groups ×
100 households, about 1 % of households no longer active, and 12 months of ``household_months``
rows: each household has a row in a month with probability 0.7, awarded 0–60 points, and in
6 % of its rows 5–20 points deducted. Then, one untimed call and ``--repeat`` timed calls each
(median reported), it times the services as the pages call them:

- ``rankings.households``: the top 50 of the county (a Scope over its ten towns) and of the
  town, for one month, a quarter and twelve months; the town's top 50 of a month without
  records yet (the first days of a month); page 100 and the last page of the town's month;
- ``rankings.standing`` of one household in the county, the town and its village, for one
  month and for twelve;
- ``rankings.count_households`` of the county; ``rankings.places`` of the town (its villages).

Every list and rank timed is checked against a reference: the ranking as the service computed it
before issue 9 (every active household ranked with a window function), run as plain SQL on the
same data; any difference is a failure. It prints EXPLAIN (ANALYZE, BUFFERS) of the statements of
the slow calls and of those with a target (all of it in ``bench/data/rankings-explain.txt``).

    python -m bench.rankings [--repeat 15] [--towns 10 --villages 30 --groups 5 --per-group 200]
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import astuple, dataclass
from datetime import date
from decimal import Decimal

import psycopg
import sqlalchemy as sa

from bench import common
from bench.common import timed

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
        conn.execute(
            "UPDATE villager_groups g SET active_households = (SELECT count(*) FROM households h "
            "WHERE h.group_id = g.id AND h.is_active)"
        )
        timings["places and households"] = time.perf_counter() - began
        began = time.perf_counter()
        # random() in the select list is evaluated per row; each household-month draws anew.
        conn.execute(
            "INSERT INTO household_months (household_id, month, group_id, village_id, town_id, "
            "is_active, village_name, group_name, house_number, house_length, "
            "points, awarded, deducted, awards, deductions) "
            "SELECT id, month, group_id, village_id, town_id, is_active, village_name, "
            "group_name, house_number, length(house_number), awarded - deducted, awarded, "
            "deducted, CASE WHEN awarded > 0 THEN 1 + awarded / 20 ELSE 0 END, "
            "CASE WHEN deducted > 0 THEN 1 ELSE 0 END FROM ("
            "  SELECT h.id, m.month, h.group_id, g.village_id, v.town_id, h.is_active,"
            "    v.name AS village_name, g.name AS group_name, h.house_number,"
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


def table_facts(db: common.Database) -> dict:
    with psycopg.connect(db.libpq_url) as conn:
        return {
            "households": conn.execute("SELECT count(*) FROM households").fetchone()[0],
            "inactive": conn.execute(
                "SELECT count(*) FROM households WHERE NOT is_active"
            ).fetchone()[0],
            "household_months": conn.execute("SELECT count(*) FROM household_months").fetchone()[0],
            "size": conn.execute("SELECT pg_total_relation_size('household_months')").fetchone()[0],
            "table": conn.execute("SELECT pg_relation_size('household_months')").fetchone()[0],
            "indexes": dict(
                conn.execute(
                    "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                    "WHERE relname = 'household_months' ORDER BY indexrelname"
                ).fetchall()
            ),
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


#: The ranking as the service computed it before issue 9, for a place given as SQL conditions
#: on household_months (``{months}``) and on villages (``{places}``): every active household,
#: its points added up over the period, ranked with a window function. The reference.
REFERENCE_PAGE = """
WITH sums AS (
  SELECT household_id, sum(points) AS points, sum(awarded) AS awarded, sum(deducted) AS deducted
  FROM household_months WHERE {months} AND month >= :first AND month <= :last
  GROUP BY household_id
)
SELECT rank() OVER (ORDER BY coalesce(s.points, 0) DESC), h.id, h.name, h.house_number, g.name,
       v.name, coalesce(s.points, 0), coalesce(s.awarded, 0), coalesce(s.deducted, 0)
FROM households h
JOIN villager_groups g ON g.id = h.group_id
JOIN villages v ON v.id = g.village_id
LEFT JOIN sums s ON s.household_id = h.id
WHERE {places} AND h.is_active
ORDER BY coalesce(s.points, 0) DESC, v.name, g.name, length(h.house_number), h.house_number, h.id
LIMIT :limit OFFSET :offset
"""

#: A household's rank and "of" as the service computed them before issue 9.
REFERENCE_STANDING = """
WITH sums AS (
  SELECT household_id, sum(points) AS points
  FROM household_months WHERE {months} AND month >= :first AND month <= :last
  GROUP BY household_id
), scope AS (
  SELECT coalesce(s.points, 0) AS points
  FROM households h
  JOIN villager_groups g ON g.id = h.group_id
  JOIN villages v ON v.id = g.village_id
  LEFT JOIN sums s ON s.household_id = h.id
  WHERE {places} AND h.is_active
), mine AS (
  SELECT coalesce((SELECT points FROM sums WHERE household_id = :household), 0) AS points
)
SELECT 1 + (SELECT count(*) FROM scope WHERE points > (SELECT points FROM mine)),
       (SELECT count(*) FROM scope), (SELECT points FROM mine)
"""


def reference_conditions(scope) -> tuple[dict[str, str], dict]:
    """Return the SQL conditions and parameters naming a scope's place for the references."""
    if scope.kind.value == "village":
        return {"months": "village_id = :place", "places": "v.id = :place"}, {"place": scope.id}
    towns = list(getattr(scope, "town_ids", ()) or [scope.id])
    return {"months": "town_id = ANY(:towns)", "places": "v.town_id = ANY(:towns)"}, {
        "towns": towns
    }


# --- the run -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Generate the county and the town, time the rankings, check them, print and record."""
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
        loads = [os.getloadavg()[0]]
        with app.app_context():
            timings, plans = measure(made["county"], made["town"], month, args.repeat, failures)
        loads.append(os.getloadavg()[0])
        if args.keep:
            input(f"database {scratch.name} kept until you press Enter: ")

    body = report(shape, table, made, month, timings, plans, args.repeat, loads, failures)
    print()
    print(body)
    if not args.no_record:
        common.record(
            "Rankings of a county and a town (PostgreSQL)", body, facts, common.command_line()
        )
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


def measure(county_ids, town_id, month, repeat, failures):
    """Time the services, check them against the reference, explain the slow calls."""
    from pointsmart.extensions import db
    from pointsmart.models import Household, Town
    from pointsmart.services import rankings
    from pointsmart.services.rankings import Scope, ScopeKind

    county = county_scope(county_ids)
    town = Scope(ScopeKind.TOWN, db.session.get(Town, town_id))
    one = rankings.month_period(month)
    empty = rankings.month_period(_add_months(month, 1))  # this month: no rows generated
    quarter = rankings.Period(rankings.PeriodKind.QUARTER, _add_months(month, -2), month)
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

    in_county, in_town = middling(list(county_ids)), middling([town_id])
    village = Scope(ScopeKind.VILLAGE, in_town.group.village)
    town_total = rankings.count_households(town)
    last_page = (town_total - 1) // 50 * 50

    def page(scope, period, offset=0):
        return lambda: rankings.households(scope, period, offset=offset)

    # (what, call, target, what the reference must agree with: (scope, period, offset) or
    # (scope, period, household) for a standing)
    cases = [
        ("top 50 of the county, one month", page(county, one), TARGET_TOP, (county, one, 0)),
        ("top 50 of the town, one month", page(town, one), TARGET_TOP, (town, one, 0)),
        (
            "top 50 of the town, a month without records yet",
            page(town, empty),
            None,
            (town, empty, 0),
        ),
        ("page 100 of the town, one month", page(town, one, 4950), None, (town, one, 4950)),
        (
            f"the town's last page, one month (from {last_page + 1:,})",
            page(town, one, last_page),
            None,
            (town, one, last_page),
        ),
        ("top 50 of the county, a quarter", page(county, quarter), None, (county, quarter, 0)),
        ("top 50 of the town, a quarter", page(town, quarter), None, (town, quarter, 0)),
        ("top 50 of the county, 12 months", page(county, year), None, (county, year, 0)),
        ("top 50 of the town, 12 months", page(town, year), None, (town, year, 0)),
        ("page 100 of the town, 12 months", page(town, year, 4950), None, (town, year, 4950)),
        (
            "a household's rank in the county, one month",
            lambda: rankings.standing(in_county, county, one),
            TARGET_RANK,
            (county, one, in_county),
        ),
        (
            "a household's rank in the town, one month",
            lambda: rankings.standing(in_town, town, one),
            TARGET_RANK,
            (town, one, in_town),
        ),
        (
            "a household's rank in its village, one month (villager home)",
            lambda: rankings.standing(in_town, village, one),
            None,
            (village, one, in_town),
        ),
        (
            "a household's rank in the county, 12 months",
            lambda: rankings.standing(in_county, county, year),
            None,
            (county, year, in_county),
        ),
        (
            "a household's rank in the town, 12 months",
            lambda: rankings.standing(in_town, town, year),
            None,
            (town, year, in_town),
        ),
        (
            "households of the county (count_households)",
            lambda: rankings.count_households(county),
            None,
            None,
        ),
        ("the town's villages ranked (places)", lambda: rankings.places(town, one), None, None),
    ]
    timings = [timed(what, fn, repeat, target) for what, fn, target, _ in cases]

    for (what, _fn, _target, checked), timing in zip(cases, timings, strict=True):
        if checked is None:
            continue
        scope, period, third = checked
        conditions, params = reference_conditions(scope)
        params |= {"first": period.start, "last": period.end}
        if isinstance(third, int):
            rows = db.session.execute(
                sa.text(REFERENCE_PAGE.format(**conditions)),
                params | {"limit": 50, "offset": third},
            ).all()
            want = [tuple(int(v) if isinstance(v, int | Decimal) else v for v in r) for r in rows]
            have = [astuple(row) for row in timing.result]
        else:
            rank, of, points = db.session.execute(
                sa.text(REFERENCE_STANDING.format(**conditions)), params | {"household": third.id}
            ).one()
            want, have = (rank, of, int(points)), astuple(timing.result)
        db.session.rollback()
        if have != want:
            differ = [
                i for i, pair in enumerate(zip(have, want, strict=False)) if len(set(pair)) > 1
            ]
            at = differ[0] if differ else min(len(have), len(want))
            failures.append(
                f"{what}: differs from the reference at {at} ({len(have)} against "
                f"{len(want)} rows): {have[at : at + 1]} ≠ {want[at : at + 1]}"
                if isinstance(third, int)
                else f"{what}: {have} ≠ reference {want}"
            )
        elif not have:
            failures.append(f"{what}: empty")

    plans = {
        t.what: explain(t.statements)
        for t in timings
        if t.median_ms > EXPLAIN_ABOVE_MS or t.target_ms
    }
    return timings, plans


def report(shape, table, made, month, timings, plans, repeat, loads, failures) -> str:
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
    indexes = ", ".join(f"`{name}` {common.size(n)}" for name, n in table["indexes"].items())
    lines = [
        f"Generated with SQL: a county of {shape.towns} towns × {shape.villages} villages × "
        f"{shape.groups} groups × {shape.per_group} households "
        f"({shape.county_households:,}) and a town of {shape.town_villages} × {shape.town_groups} × "
        f"{shape.town_per_group} ({shape.town_households:,}); {table['inactive']:,} households "
        f"(~1 %) inactive; {table['household_months']:,} `household_months` rows over 12 months "
        f"(a row for ~70 % of households a month, awarded 0–60, 5–20 deducted in 6 % of rows), "
        f"{common.size(table['size'])} with indexes (table {common.size(table['table'])}; "
        f"{indexes}); loaded in "
        f"{made['places and households'] + made['household_months']:.0f} s, VACUUM ANALYZE "
        f'{made["vacuum analyze"]:.0f} s. Ranked month: {month:%Y-%m}; "12 months" is the '
        f'custom range ending there, "a quarter" the quarter ending there, "a month without '
        f'records yet" the month after it. One untimed call, then {repeat} timed calls each '
        "(wall clock through the services and SQLAlchemy, in one process, warm cache; "
        '"statements" counts those of the first call, lazy loads included). The county is a '
        f"Scope over its {shape.towns} towns (the app itself ranks at most a town). Every list "
        "and rank above except the last two rows was compared with the ranking as the services "
        "computed it before issue 9 (every active household ranked by a window function, as "
        f"plain SQL): {'all equal' if not failures else 'see the failures below'}. Load average "
        f"(1 minute) before and after the timings: {loads[0]:.1f} and {loads[1]:.1f} on "
        f"{os.cpu_count()} cores.",
        "",
        common.markdown_table(headers, rows(timings)),
        "",
        f"EXPLAIN (ANALYZE, BUFFERS) of the calls with a target or slower than "
        f"{EXPLAIN_ABOVE_MS:g} ms, first plan nodes of each statement (all of it in "
        "`bench/data/rankings-explain.txt`):",
        "",
    ]
    for what, statement_plans in plans.items():
        shown = [p for p in statement_plans if execution_ms(p) >= SHOW_PLANS_ABOVE_MS]
        quick = len(statement_plans) - len(shown)
        note = f" ({quick} statements under {SHOW_PLANS_ABOVE_MS:g} ms left out)" if quick else ""
        lines.append(f"*{what}*{note}")
        lines.append("")
        if shown:
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
