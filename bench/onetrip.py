"""How close to pgbench's TPC-B can a checkout's SQL come at all? The same writes in one round trip.

Issue 9 asks the checkout's SQL, replayed as a pgbench script, for ≥ 90 % of TPC-B. bench/web.py
replays the statements the app sends, one round trip each. This experiment removes the round
trips: the checkout's writes (the redemption under its key, the audit entry, the posted
transfer and its two entries, the lines, the stock movements, the guarded stock UPDATEs in
item order, the guarded account UPDATEs in account order, the redemption's transfer and
balance) as one PL/pgSQL function created in the scratch database only, called by a pgbench
script once per checkout: the upper bound of what a server-side checkout could reach, with
the same rows written. The app does not use the function.

    python -m bench.onetrip [--quick] [--duration 15] [--clients 2 8]

On a generated town (``--quick``: 8 villages of 100 households), a 2-line cart (one unit of
the shop's 5th good, two of its 9th) for a random household of each counter's pool; pgbench's
built-in TPC-B on the same server just before, same clients. The books are checked after each
load as bench/web.py checks them; a run that breaks them exits 1.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import psycopg

from bench import common, generate, web

#: The cart, as (position in the shop's goods, quantity): the captured 2-line cart of bench.web.
CART = web.SQL_CARTS[1]

FUNCTION = """
CREATE OR REPLACE FUNCTION bench_checkout(
    p_key text, p_hh int, p_acc int, p_card int, p_village int, p_town int, p_shop int,
    p_shop_acc int, p_clerk int, p_items int[], p_qty int[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r_id int;
    t_id int;
    v_total bigint;
    v_reason text;
    v_balance bigint;
    line record;
BEGIN
    SELECT sum(i.points * q.qty), string_agg(i.name || '×' || q.qty, '、' ORDER BY i.id)
      INTO v_total, v_reason
      FROM unnest(p_items, p_qty) AS q(item, qty)
      JOIN shop_items i ON i.id = q.item AND i.shop_id = p_shop AND i.is_active;
    INSERT INTO redemptions (idempotency_key, fingerprint, shop_id, household_id, clerk_id,
                             identified_by, card_id, total_points, balance_after, created_at)
    VALUES (p_key, md5(p_key), p_shop, p_hh, p_clerk, 'qr', p_card, v_total, 0, now())
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO r_id;
    IF r_id IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_log (at, actor_id, actor_name, action, target_type, target_id, town_id,
                           village_id, summary, before, after, ip)
    VALUES (now(), p_clerk, 'bench', 'redemption.checkout', 'redemption', r_id, p_town,
            p_village, v_reason, 'null', 'null', '127.0.0.1');
    INSERT INTO transfers (idempotency_key, fingerprint, kind, status, amount, household_id,
                           village_id, shop_id, reason, source_type, source_id, recorded_by_id,
                           created_at, posted_at)
    VALUES ('checkout:' || p_key, md5('checkout:' || p_key), 'redemption', 'posted', v_total,
            p_hh, p_village, p_shop, v_reason, 'redemption', r_id, p_clerk, now(), now())
    RETURNING id INTO t_id;
    INSERT INTO ledger_entries (transfer_id, account_id, amount)
    VALUES (t_id, p_acc, -v_total), (t_id, p_shop_acc, v_total);
    INSERT INTO redemption_lines (redemption_id, item_id, item_name, unit_points, quantity,
                                  voided_quantity)
    SELECT r_id, i.id, i.name, i.points, q.qty, 0
      FROM unnest(p_items, p_qty) AS q(item, qty) JOIN shop_items i ON i.id = q.item
     ORDER BY i.id;
    INSERT INTO stock_movements (item_id, kind, quantity, redemption_id, user_id, created_at)
    SELECT q.item, 'redemption', -q.qty, r_id, p_clerk, now()
      FROM unnest(p_items, p_qty) AS q(item, qty) ORDER BY q.item;
    FOR line IN SELECT q.item, q.qty FROM unnest(p_items, p_qty) AS q(item, qty) ORDER BY q.item
    LOOP
        UPDATE shop_items SET stock = stock - line.qty
         WHERE id = line.item AND stock >= line.qty AND is_active;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'out of stock: item %', line.item;
        END IF;
    END LOOP;
    IF p_shop_acc < p_acc THEN
        UPDATE accounts SET balance = balance + v_total WHERE id = p_shop_acc;
    END IF;
    UPDATE accounts SET balance = balance - v_total
     WHERE id = p_acc AND balance - v_total >= 0
    RETURNING balance INTO v_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient points: account %', p_acc;
    END IF;
    IF p_shop_acc > p_acc THEN
        UPDATE accounts SET balance = balance + v_total WHERE id = p_shop_acc;
    END IF;
    UPDATE redemptions SET transfer_id = t_id, balance_after = v_balance WHERE id = r_id;
    RETURN v_total;
END $$;
"""

SCRIPT = """-- one checkout in one round trip: bench/onetrip.py's function (not the app's code)
\\set n random(0, {last})
\\set slot :client_id % {slots}
\\set key random(1, 9000000000000000000)
SELECT household AS hh, account AS acc, card, village, town, shop, shop_acc, clerk, item_base
  FROM bench_pool WHERE slot = :slot AND n = :n \\gset
SELECT bench_checkout('onetrip' || :key, :hh, :acc, :card, :village, :town, :shop, :shop_acc,
                      :clerk, ARRAY[{items}], ARRAY[{quantities}]);
"""


def cart_total(counter: web.Counter) -> int:
    return sum(counter.items[position][1] * quantity for position, quantity in CART)


def main(argv: list[str] | None = None) -> int:
    """Generate, create the function, load, compare with TPC-B, check the books, record."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 villages of 100 households")
    p.add_argument("--duration", type=int, default=15, help="seconds measured per run (15)")
    p.add_argument("--clients", type=int, nargs="+", default=[2, 8], help="connections (2 8)")
    p.add_argument("--pool", type=int, default=100, help="households per counter (100)")
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    args = p.parse_args(argv)
    shape = web.QUICK if args.quick else generate.SHAPES["town"]
    facts = common.machine(args.server)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    failures: list[str] = []
    rows: list[list[object]] = []
    books: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-onetrip-"))
    common.use_scratch_instance()
    with (
        common.scratch_database(args.server, "onetrip") as data_db,
        common.scratch_database(args.server, "pgbench") as pg_db,
    ):
        began = time.perf_counter()
        generate.build(data_db, shape, progress=lambda m: None)
        print(f"generated {shape.households:,} households in {time.perf_counter() - began:.0f} s")
        url = data_db.sqlalchemy_url
        slots = max(args.clients)
        counters = web.load_counters(url, slots, args.pool)
        web.stock_and_top_up(url, counters)
        web.make_pool_table(data_db.libpq_url, counters)
        with psycopg.connect(data_db.libpq_url, autocommit=True) as conn:
            conn.execute(FUNCTION)
        totals_by_slot = {cart_total(c) for c in counters}
        if len(totals_by_slot) != 1:  # every shop sells the same goods at the same prices
            raise SystemExit(f"the cart costs differently at different shops: {totals_by_slot}")
        (total,) = totals_by_slot
        positions = ", ".join(f":item_base + {position}" for position, _ in CART)
        script = folder / "onetrip.sql"
        script.write_text(
            SCRIPT.format(
                last=min(len(c.pool) for c in counters) - 1,
                slots=slots,
                items=positions,
                quantities=", ".join(str(q) for _, q in CART),
            )
        )
        common.DATA_DIR.mkdir(exist_ok=True)
        (common.DATA_DIR / script.name).write_text(script.read_text())
        common.pgbench_init(pg_db, args.scale)
        common.vacuum_analyze(data_db)
        for n in args.clients:
            load_avg = os.getloadavg()[0]
            tpcb = common.pgbench_run(pg_db, n, args.duration)
            print(f"pgbench TPC-B {n} clients: {tpcb.tps:.0f} tps", flush=True)
            before = web.totals(url)
            run = common.pgbench_scripts(data_db, n, args.duration, [(str(script), 1)])
            print(f"one-round-trip checkout {n} clients: {run.tps:.0f} tps", flush=True)
            problems, line = web.check_books(
                url, before, run.transactions, run.transactions * total, cut=n
            )
            if run.aborted:
                problems.append(f"pgbench: {run.aborted[:300]}")
            failures += [f"{n} clients: {problem}" for problem in problems]
            books.append(f"- {n} clients (load avg {load_avg:.1f} before): {line}")
            for label, tps, latency, ratio in (
                ("pgbench TPC-B (ceiling)", tpcb.tps, tpcb.latency, ""),
                ("checkout in one round trip (PL/pgSQL)", run.tps, run.latency,
                 f"{run.tps / tpcb.tps:.1%}"),
            ):  # fmt: skip
                rows.append(
                    [label, n, f"{tps:,.1f}", *(f"{latency[k]:.2f}" for k in
                     ("p50", "p95", "p99")), ratio]
                )  # fmt: skip
    table = common.markdown_table(
        ["load", "clients", "per s", "p50 ms", "p95 ms", "p99 ms", "ratio to TPC-B"], rows
    )
    body = "\n\n".join(
        [
            f"Data: a generated town of {shape.households:,} households "
            f"({shape.villages} villages), a year of history. Each transaction: one random "
            f"household of the counter's pool (one SELECT from bench_pool, as in bench.web's "
            f"scripts), then `SELECT bench_checkout(…)`: the checkout's writes for a 2-line cart "
            f"({total} points) in one PL/pgSQL function, created in the scratch database only "
            f"(not the app's code). pgbench `-M prepared`, {args.duration} s per run; TPC-B scale "
            f"{args.scale}, same server, just before. Issue 9's target for the checkout's SQL: "
            f"≥ {web.TARGET_SQL_RATIO:.0%} of TPC-B.",
            table,
            "Books after each load:\n\n" + "\n".join(books),
            *(["**FAILURE:** " + "; ".join(failures)] if failures else []),
        ]
    )
    print()
    print(body)
    if not args.no_record:
        common.record(
            "A checkout's writes in one round trip vs pgbench (PostgreSQL)",
            body,
            facts,
            common.command_line(),
        )
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
