"""The villager's balance page through the full web stack, against a bare Flask endpoint doing
one primary-key SELECT, both under wrk on the same gunicorn setup.

On a generated town (bench/generate.py; ``--quick``: 8 villages of 100 households) it serves
the app with gunicorn, one sync worker per core (pointsmart.wsgi, logging at INFO), logs N
villagers in through the villager login page (phone and PIN), one per connection, and has wrk
ask for their home page (``GET /me/``, where ``GET /`` sends a villager: balances, the latest
changes with their reasons, ranks this month in group and village). The ceiling, just before
each page load with the same connections: ``bare_app`` below, served the same way, answering
``GET /balance/<account id>`` with one ``SELECT balance FROM accounts WHERE id = …`` for a random
household. Between the two, the floor (``floor_app`` below): the product's app with one
bench-only page that does everything every villager page does before its own content and
shows the two balances only. After every load the books must balance (nothing may have
changed them).

    python -m bench.balance [--quick] [--duration 15] [--clients 2 8]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa

from bench import common, generate, web

#: Issue 9's targets: the page's rate against the bare endpoint's, and its p99 at 8.
TARGET_RATIO = 0.70
TARGET_P99_MS = {8: 10.0}
WARMUP_SECONDS = 3


def bare_app():
    """Return a bare Flask app: one primary-key SELECT per request, nothing else.

    gunicorn serves it as ``bench.balance:bare_app()``; $DATABASE_URL names the database."""
    from flask import Flask, abort

    url = sa.engine.make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    query = sa.text("SELECT balance FROM accounts WHERE id = :id")
    app = Flask(__name__)

    @app.get("/balance/<int:account_id>")
    def balance(account_id: int):
        with engine.connect() as conn:
            value = conn.execute(query, {"id": account_id}).scalar()
        if value is None:
            abort(404)
        return str(value)

    return app


#: The floor page: the product's layout around the household's two balances, nothing else.
FLOOR_TEMPLATE = """{% extends "base.html" %}{% block content %}<section class="card">
<h1>{{ household.name }}</h1><p>{{ balance.spendable }} · {{ balance.honour }}</p>
</section>{% endblock %}"""


def floor_app():
    """Return the product's app with one bench-only page: the floor under any villager page.

    ``GET /bench/floor`` goes through everything every villager page goes through (the login
    session and its grants, the role check, the household, the base layout with its
    navigation, translations and security headers) and shows only the two balances. It is
    added here, to this app object; the product has no such route. gunicorn serves it as
    ``bench.balance:floor_app()``."""
    from flask import render_template

    from pointsmart import create_app
    from pointsmart.auth import role_required
    from pointsmart.models import Role
    from pointsmart.services import ledger
    from pointsmart.villager import my_household

    app = create_app()
    template = app.jinja_env.from_string(FLOOR_TEMPLATE)  # compiled once, as files are

    @app.get("/bench/floor")
    @role_required(Role.VILLAGER)
    def floor():
        household = my_household()
        balance = ledger.balance_of(household)
        return render_template(template, household=household, balance=balance)

    return app


def villagers(url: str, count: int) -> list[tuple[str, str, int]]:
    """Return (phone, household name, household id) of ``count`` villagers with a login, each
    of another village."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT DISTINCT ON (g.village_id) u.phone, h.name, h.id FROM users u "
                "JOIN role_grants r ON r.user_id = u.id AND r.role = 'villager' "
                "JOIN households h ON h.id = r.household_id "
                "JOIN villager_groups g ON g.id = h.group_id "
                "ORDER BY g.village_id, u.id LIMIT :n"
            ),
            {"n": count},
        ).all()
    engine.dispose()
    if len(rows) < count:
        raise SystemExit(f"{count} villagers of different villages needed, found {len(rows)}")
    return [tuple(r) for r in rows]


def villager_login(base: str, phone: str, name: str) -> str:
    """Log a villager in through the login page; return the session cookie."""
    browser = requests.Session()
    page = browser.get(f"{base}/login")
    answer = browser.post(
        f"{base}/login",
        data={"phone": phone, "pin": generate.VILLAGER_PIN, "csrf_token": web.csrf_of(page.text)},
        allow_redirects=False,
    )
    if answer.status_code != 302:
        raise SystemExit(f"login of villager {phone} failed: {answer.status_code}")
    home = browser.get(f"{base}/me/")
    if home.status_code != 200 or name not in home.text:
        raise SystemExit(f"the home page of {phone} did not show the household: {home.status_code}")
    return browser.cookies["session"]


def page_script(cookies: list[str], path: str = "/me/") -> str:
    listed = ", ".join(f'"{c}"' for c in cookies)
    return (
        f'cookies = {{{listed}}}\npath = "{path}"\n'
        + r"""
cookie = nil
function init(args)
  cookie = cookies[((index - 1) % #cookies) + 1]
end
function request()
  return wrk.format("GET", path, {["Cookie"] = "session=" .. cookie})
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else
    other = other + 1
    if first_other == "" then first_other = tostring(status) end
  end
end
"""
        + common.WRK_DONE
    )


def bare_script(first: int, count: int) -> str:
    return (
        f"first, count = {first}, {count}\n"
        + r"""
function init(args)
  math.randomseed(index * 7919 + os.time())
end
function request()
  -- a random household's spendable account (they are every other id from the first)
  return wrk.format("GET", "/balance/" .. (first + 2 * math.random(0, count - 1)))
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else
    other = other + 1
    if first_other == "" then first_other = tostring(status) end
  end
end
"""
        + common.WRK_DONE
    )


def load(server, script_text: str, folder: Path, name: str, clients: int, duration: int, url: str,
         failures: list[str], label: str) -> tuple[common.WrkRun, str]:  # fmt: skip
    """Warm up, measure, check the books; return the measured run and the books' line."""
    before = web.totals(url)
    script = folder / f"{name}-{clients}.lua"
    script.write_text(script_text)
    runs = [common.run_wrk(server.url, script, clients, s) for s in (WARMUP_SECONDS, duration)]
    problems, books = web.check_books(url, before, 0, 0)
    for run in runs:
        if run.tally["other"] or run.socket_errors:
            problems.append(
                f"{run.tally['other']} answers were not 200 (first: {run.tally['first_other']}), "
                f"socket errors {run.socket_errors}"
            )
    failures += [f"{label}, {clients} connections: {p}" for p in problems]
    run = runs[-1]
    print(f"{label}, {clients} connections: {run.rate:.0f}/s, p99 {run.latency['p99']:.1f} ms")
    return run, books


def main(argv: list[str] | None = None) -> int:
    """Generate, serve both apps, log villagers in, load, compare, check, print and record."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 villages of 100 households")
    p.add_argument("--duration", type=int, default=15, help="seconds measured per run (15)")
    p.add_argument("--clients", type=int, nargs="+", default=[2, 8], help="connections (2 8)")
    args = p.parse_args(argv)
    shape = web.QUICK if args.quick else generate.SHAPES["town"]
    facts = common.machine(args.server)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    failures: list[str] = []
    table, books = [], []
    folder = Path(tempfile.mkdtemp(prefix="bench-balance-"))
    instance = common.use_scratch_instance()
    with common.scratch_database(args.server, "balance") as db:
        began = time.perf_counter()
        generate.build(db, shape, progress=lambda m: None)
        print(f"generated {shape.households:,} households in {time.perf_counter() - began:.0f} s")
        url = db.sqlalchemy_url
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            first, count = conn.execute(
                sa.text("SELECT min(id), count(*) FROM accounts WHERE kind = 'household_spendable'")
            ).one()
        engine.dispose()
        people = villagers(url, max(args.clients))
        env = web.app_env(url, instance)
        with (
            common.Gunicorn("pointsmart.wsgi:app", env, folder / "app.log", "/login") as app,
            common.Gunicorn("bench.balance:bare_app()", env, folder / "bare.log", "/balance/0") as bare,
            common.Gunicorn("bench.balance:floor_app()", env, folder / "floor.log", "/login") as floor,
        ):  # fmt: skip
            cookies = [villager_login(app.url, phone, name) for phone, name, _ in people]
            print(f"{len(cookies)} villagers logged in", flush=True)
            for n in args.clients:
                load_avg = os.getloadavg()[0]
                ceiling, ceiling_books = load(
                    bare, bare_script(first, count), folder, "bare", n, args.duration, url,
                    failures, "bare endpoint",
                )  # fmt: skip
                least, least_books = load(
                    floor, page_script(cookies[:n], "/bench/floor"), folder, "floor", n,
                    args.duration, url, failures, "floor page",
                )  # fmt: skip
                page, page_books = load(
                    app, page_script(cookies[:n]), folder, "page", n, args.duration, url,
                    failures, "balance page",
                )  # fmt: skip
                ratio = page.rate / ceiling.rate
                targets = [f"ratio ≥ {TARGET_RATIO:.0%}"]
                met = [_met(ratio >= TARGET_RATIO)]
                if n in TARGET_P99_MS:
                    targets.append(f"p99 ≤ {TARGET_P99_MS[n]:.0f} ms")
                    met.append(_met(page.latency["p99"] <= TARGET_P99_MS[n]))
                for what, run, extra in (
                    ("bare Flask endpoint, one PK SELECT (ceiling)", ceiling, ["", "", ""]),
                    ("floor: the product's layout and login, two balances only (bench route)",
                     least, [f"{100 * least.rate / ceiling.rate:.1f} %", "", ""]),
                    ("balance page `GET /me/`", page, [f"{100 * ratio:.1f} %", ", ".join(targets),
                                                       ", ".join(met)]),
                ):  # fmt: skip
                    lat = run.latency
                    table.append(
                        [what, n, run.rate, lat["p50"], lat["p95"], lat["p99"], lat["max"], *extra]
                    )
                books.append(
                    f"- {n} connections (load avg {load_avg:.1f} before): after the bare endpoint "
                    f"{ceiling_books.split(':')[0]}, after the floor page "
                    f"{least_books.split(':')[0]}, after the page {page_books.split(':')[0]}"
                )
    headers = ["load", "clients", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "ratio",
               "issue 9 target", "met"]  # fmt: skip
    lines = [
        f"Data: a generated town (bench/generate.py) of {shape.households:,} households "
        f"({shape.villages} villages), a year of history (about 20 transfers per household). "
        f"Both apps served by gunicorn, {os.cpu_count()} sync workers (one per core); the "
        "product as `pointsmart.wsgi:app` logging at INFO, the bare endpoint as "
        "`bench.balance:bare_app()` (Flask, a SQLAlchemy engine, `SELECT balance FROM accounts "
        "WHERE id = :id` for a random household, the value as text). wrk on loopback, one thread "
        "per connection; each page connection is a villager of another village logged in through "
        "the login page (phone and PIN), asking for their home page, where `GET /` redirects "
        f"them. {WARMUP_SECONDS} s of warm-up, then {args.duration} s measured; the bare "
        "endpoint just before the page, same connections. ratio = pages per second / bare "
        "requests per second. The floor page (`bench.balance:floor_app()`: the product's app "
        "with one route added by the bench, `GET /bench/floor`) does what every villager page "
        "does before its own content (login session with its grants, role check, household, "
        "base layout with navigation and translations, security headers) and shows the two "
        "balances only: what no page of this stack can go below.",
        "",
        common.markdown_table(headers, table),
        "",
        "Books after each load (nothing should change them; the ledger, stock, redemption and "
        "monthly checks run each time):",
        "",
        *books,
    ]
    for failure in failures:
        lines += ["", f"**FAILURE:** {failure}"]
    body = "\n".join(lines)
    print()
    print(body)
    if not args.no_record:
        common.record(
            "Villager balance page vs a bare Flask endpoint (PostgreSQL)",
            body,
            facts,
            common.command_line(),
        )
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


if __name__ == "__main__":
    sys.exit(main())
