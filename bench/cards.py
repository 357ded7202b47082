"""The cost of printing 1,000 household cards: the PDF sheet and the print-ready HTML page.

Creates a village of 1,000 households through the services (each gets its card), then times,
several times each, with the median reported:

- ``card_sheets.render_pdf(cards)`` alone, on cards already loaded;
- ``GET /cadre/cards/sheet?village_id=…&format=pdf``, the whole view (query, PDF, response);
- ``GET /cadre/cards/sheet?village_id=…``, the print-ready HTML page with inline SVG QR codes;

through Flask's test client, logged in as a cadre of the village. SQLite by default (the
embedded default), or PostgreSQL with ``--database postgresql``.

    python -m bench.cards [--households 1000] [--repeat 5] [--database sqlite|postgresql]
"""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bench import common


@contextlib.contextmanager
def database(kind: str, server: str) -> Iterator[str]:
    """Yield the SQLAlchemy URL of an empty database of that kind, removed afterwards."""
    if kind == "postgresql":
        with common.scratch_database(server, "cards") as db:
            yield db.sqlalchemy_url
    else:
        with tempfile.TemporaryDirectory(prefix="bench-cards-") as folder:
            yield "sqlite:///" + str(Path(folder) / "cards.sqlite")


def build_village(households: int):
    """Create a town, a village of ``households`` households in groups of 50, and a cadre."""
    from pointsmart.extensions import db
    from pointsmart.models import Role
    from pointsmart.services import accounts, places

    town = places.create_town("青山镇")
    village = places.create_village(town, "东坡村")
    groups = [places.create_group(village, f"{g + 1}组") for g in range((households + 49) // 50)]
    for n in range(households):
        places.create_household(groups[n // 50], str(n % 50 + 1), f"王建国{n + 1}")
    cadre = accounts.create_staff("bench_cadre", "网格员", "bench password")
    accounts.grant(cadre, Role.CADRE, village)
    db.session.commit()
    return village, cadre


def login(client, user) -> None:
    """Log a user in through a real server-side session, as tests/conftest.py's login does."""
    from pointsmart.extensions import db
    from pointsmart.services import accounts

    session = accounts.start_session(user, timedelta(hours=1))
    db.session.commit()
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = session.id
        flask_session["_fresh"] = True


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]
    result: bytes


def timed(fn: Callable[[], bytes], repeat: int) -> Timing:
    """Call fn once untimed (warm-up), then ``repeat`` times; return wall and CPU seconds."""
    timing = Timing([], [], fn())
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        timing.result = fn()
        timing.cpu.append(time.process_time() - cpu)
        timing.wall.append(time.perf_counter() - wall)
    return timing


def main(argv: list[str] | None = None) -> int:
    """Build the village, time the three ways of printing its cards, print and record."""
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--households", type=int, default=1000, help="cards to print (default 1000)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = p.parse_args(argv)
    facts = common.machine(args.server if args.database == "postgresql" else None)
    print("machine:", ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)

    failures: list[str] = []
    with database(args.database, args.server) as url:
        common.migrate(url)
        app = common.make_app(url)
        from pointsmart.extensions import db
        from pointsmart.services import card_sheets

        with app.app_context():
            began = time.perf_counter()
            village, cadre = build_village(args.households)
            setup = time.perf_counter() - began
            print(f"{args.households} households with cards built in {setup:.1f} s", flush=True)
            village_id, cadre_id = village.id, cadre.id

            with app.test_request_context():
                found = card_sheets.sheet_cards(cadre, village=village)
                if len(found) != args.households:
                    failures.append(f"sheet_cards found {len(found)} cards")
                alone = timed(lambda: card_sheets.render_pdf(found), args.repeat)
            db.session.remove()

        client = app.test_client()
        with app.app_context():
            from pointsmart.models import User

            login(client, db.session.get(User, cadre_id))
        url_html = f"/cadre/cards/sheet?village_id={village_id}"

        def get(path: str):
            response = client.get(path)
            if response.status_code != 200:
                raise SystemExit(f"GET {path} answered {response.status_code}")
            return response.data

        view = timed(lambda: get(url_html + "&format=pdf"), args.repeat)
        page = timed(lambda: get(url_html), args.repeat)

    pages = len(re.findall(rb"/Type\s*/Page(?!s)", alone.result))
    qr_in_html = page.result.count(b"<svg")
    if not alone.result.startswith(b"%PDF") or not view.result.startswith(b"%PDF"):
        failures.append("the PDF is not a PDF")
    if pages != -(-args.households // card_sheets.PER_PAGE):
        failures.append(f"the PDF has {pages} pages")
    if qr_in_html < args.households:
        failures.append(f"the HTML sheet holds {qr_in_html} QR codes")

    def row(what: str, timing: Timing) -> list:
        return [
            what,
            statistics.median(timing.wall),
            min(timing.wall),
            max(timing.wall),
            statistics.median(timing.cpu),
            common.size(len(timing.result)),
        ]

    table = common.markdown_table(
        ["what", "median s", "min s", "max s", "median CPU s", "size"],
        [
            row("`card_sheets.render_pdf(cards)`", alone),
            row("`GET /cadre/cards/sheet?village_id=…&format=pdf`", view),
            row("`GET /cadre/cards/sheet?village_id=…` (HTML)", page),
        ],
    )
    body = "\n".join(
        [
            f"{args.households} cards of one village on {args.database}, a cadre of the village "
            f"logged in through Flask's test client; one untimed call, then {args.repeat} timed "
            f"(wall-clock median, min, max; CPU time of this process). The PDF has {pages} A4 pages of 10 cards; the HTML page "
            f"{qr_in_html} inline SVG QR codes. Issue 9's target for the PDF: ≤ 10 s.",
            "",
            table,
        ]
    )
    for failure in failures:
        body += f"\n\n**FAILURE:** {failure}"
    print()
    print(body)
    if not args.no_record:
        title = f"Printing {args.households:,} cards ({args.database})"
        common.record(title, body, facts, common.command_line())
        print(f"\nrecorded in {common.RESULTS.relative_to(common.ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
