"""Contract tests: schemathesis drives every operation of /api/v1/openapi.json in process.

Each operation gets a freshly seeded village (households with points, a shop with stock, rules,
pending awards, redemptions, a board, claims and reports) and a token per role. Schemathesis
generates valid requests (whose ids are mostly swapped for ids of that village, so reads find
something and writes go through) and invalid ones; every answer must be no server error, have a
documented status and content type, match its schema, show timestamps in ISO 8601 with an offset
and amounts as integers, and page every list. Each operation must also succeed at least once.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Category, LimitPeriod, Role, TransferKind
from pointsmart.services import (
    api_tokens,
    boards,
    cards,
    catalogue,
    ledger,
    rankings,
    redemptions,
    rules,
    submissions,
)
from tests.conftest import app_config

load_all_checks()
from schemathesis import checks  # noqa: E402  (the built-in checks exist once loaded)

#: The document as the app serves it; requests go to each test's own app (``case.call(app=…)``).
SPEC_APP = create_app(app_config("sqlite://"))
SCHEMA = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", SPEC_APP)
OPERATIONS = list(SCHEMA.get_all_operations())

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
EXAMPLES = 50  # per operation, valid and invalid together

#: ISO 8601 with seconds and an offset, as LocalDateTime writes it: 2026-11-30T09:15:00+08:00.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")


@dataclass
class World:
    """One village of one town with what every API operation reads or writes, and its tokens."""

    town: object
    village: object
    groups: list
    households: list
    shop: object
    town_shop: object
    items: list
    rules: list  #: an award, a "warning first" deduction, one that needs a photo
    pending: list
    sales: list
    board: object
    people: dict[Role, object]  #: a person per staff role, who recorded and approved the seed
    tokens: dict[Role, api_tokens.Issued] = field(default_factory=dict)

    def secret(self, role: Role) -> str:
        return self.tokens[role].secret

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret(role)}"}

    def ids(self) -> dict[str, list]:
        """Return valid values for each parameter or body field name."""
        codes = [cards.current_card(h).code for h in self.households]
        return {
            "household_id": [h.id for h in self.households],
            "shop_id": [self.shop.id] * 3 + [self.town_shop.id],
            "redemption_id": [s.id for s in self.sales],
            "village_id": [self.village.id],
            "transfer_id": [t.id for t in self.pending],
            "board_id": [self.board.id],
            "code": codes + [cards.current_card(self.households[1]).token],
            "card": codes,
            "item_id": [i.id for i in self.items],
            "line_id": [line.id for s in self.sales for line in s.lines],
            "rule_id": [r.id for r in self.rules],
            "member_id": [h.members[0].id for h in self.households],
            "id": [self.groups[0].id, self.village.id, self.town.id],  # rankings' place
        }


def build_world(make, town=None, points: int = 100_000, stock: int = 10_000) -> World:
    """Seed a village through the services and issue a token for each role; commit."""
    town = town or make.town()
    village = make.village(town)
    groups = [make.group(village), make.group(village)]
    households = [make.household(groups[0]), make.household(groups[0]), make.household(groups[1])]
    shop = make.shop(village)
    town_shop = make.shop(town=town)
    people = {
        Role.CADRE: make.staff(Role.CADRE, village),
        Role.COMMITTEE: make.staff(Role.COMMITTEE, village),
        Role.CLERK: make.staff(Role.CLERK, shop),
        Role.ADMIN: make.staff(Role.ADMIN, town),
    }
    cadre, committee, clerk = people[Role.CADRE], people[Role.COMMITTEE], people[Role.CLERK]
    for household in households:
        make.funded(household, points, cadre, committee)
    items = []
    for name, price in (("大米", 10), ("肥皂", 1)):
        item = catalogue.create_item(shop, catalogue.ItemData(name, "日用品", price), clerk)
        catalogue.receive(item, clerk, quantity_=stock, key=f"seed-{shop.id}-{name}")
        items.append(item)
    data = [
        rules.RuleData("打扫巷道", Category.SANITATION, 5),
        rules.RuleData("乱倒垃圾", Category.OTHER, -5, 100, LimitPeriod.YEAR, warning_first=True),
        rules.RuleData("植树", Category.OTHER, 8, photo_required=True),
    ]
    village_rules = [rules.create(d, committee, village=village) for d in data]
    pending = [
        ledger.record(
            kind=TransferKind.AWARD,
            household=household,
            points=3,
            reason="清扫",
            recorded_by=cadre,
            key=f"seed-pending-{village.id}-{i}",
        )
        for i, household in enumerate(households * 4)
    ]
    sales = [
        redemptions.checkout(
            shop=shop,
            household=household,
            cart={items[0].id: 2, items[1].id: 3},
            clerk=clerk,
            key=f"seed-sale-{village.id}-{i}",
        )[0]
        for i, household in enumerate(households * 2)
    ]
    board = boards.publish_monthly(village, rankings.this_month(), committee)
    world = World(
        town,
        village,
        groups,
        households,
        shop,
        town_shop,
        items,
        village_rules,
        pending,
        sales,
        board,
        people,
    )
    admin = people[Role.ADMIN]
    places = {
        Role.VILLAGER: households[0],
        Role.CADRE: village,
        Role.COMMITTEE: village,
        Role.CLERK: shop,
        Role.ADMIN: town,
    }
    for role, place in places.items():
        world.tokens[role] = api_tokens.issue(admin, f"{role.value}-{village.id}", role, place)
    villager = world.tokens[Role.VILLAGER].token.user
    for i in range(3):
        submissions.submit_claim(villager, f"打扫巷道{i}", key=f"seed-claim-{village.id}-{i}")
        submissions.submit_report(villager, "乱倒垃圾", "河边", key=f"seed-report-{village.id}-{i}")
    db.session.commit()
    return world


#: A request part known to be valid in the seeded village, for a share of the valid requests
#: (the rest is generated whole): a generated body rarely gets every cross-field rule right.
SEEDED = {
    "POST /api/v1/shops/{shop_id}/checkouts": lambda w: {
        "path_parameters": {"shop_id": w.shop.id},
        "body": {
            "card": cards.current_card(w.households[0]).code,
            "items": [{"item_id": w.items[0].id, "quantity": 1}],
        },
    },
    "POST /api/v1/redemptions/{redemption_id}/voids": lambda w: {"body": {"reason": "拿错了"}},
    "POST /api/v1/households/{household_id}/awards": lambda w: {
        "path_parameters": {"household_id": w.households[0].id},
        "body": {"rule_id": w.rules[0].id},
    },
    "GET /api/v1/rankings": lambda w: {"query": {"scope": "village", "id": w.village.id}},
}


def openapi_path(rule) -> str:
    """Return a URL rule as the OpenAPI document writes its path: <int:id> becomes {id}."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)


def roles_of(app, operation) -> list[Role]:
    """Return the roles the operation's view lets through (every role if it names none)."""
    for rule in app.url_map.iter_rules():
        if openapi_path(rule) == operation.path and operation.method.upper() in rule.methods:
            required = getattr(app.view_functions[rule.endpoint], "required_roles", None)
            assert required is not None, f"{rule.endpoint} has no token_required"
            return sorted(required or Role)
    raise AssertionError(f"no URL rule serves {operation.label}")


def with_world_ids(container: dict, ids: dict[str, list], data) -> None:
    """Replace most generated ids in place (nested too) by ids of the seeded village."""
    for name, value in container.items():
        if isinstance(value, dict):
            with_world_ids(value, ids, data)
        elif isinstance(value, list):
            for entry in value:
                if isinstance(entry, dict):
                    with_world_ids(entry, ids, data)
        elif name in ids and not isinstance(value, bool) and data.draw(st.integers(0, 9)):
            container[name] = data.draw(st.sampled_from(ids[name]))


def format_problems(value, path: str = "$") -> list[str]:
    """Return where a response breaks the API's conventions: timestamps with an offset,
    integer amounts (no floats at all), and every list paged."""
    problems = []
    if isinstance(value, float):
        problems.append(f"{path}: {value!r} is not an integer")
    elif isinstance(value, dict):
        for key, inner in value.items():
            if (
                key.endswith("_at")
                and inner is not None
                and not (isinstance(inner, str) and TIMESTAMP.fullmatch(inner))
            ):
                problems.append(f"{path}.{key}: {inner!r} is not ISO 8601 with an offset")
            problems += format_problems(inner, f"{path}.{key}")
        if path == "$" and isinstance(value.get("items"), list):
            for key in ("page", "per_page", "total"):
                if not isinstance(value.get(key), int):
                    problems.append(f"$.{key}: a list must be paged")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            problems += format_problems(inner, f"{path}[{i}]")
    return problems


@pytest.mark.parametrize(
    "found", OPERATIONS, ids=lambda r: r.ok().label if hasattr(r, "ok") else str(r)
)
def test_every_operation_keeps_its_contract(app, make, found):
    operation = found.ok()  # an operation the document cannot describe fails here
    world = build_world(make)
    ids = world.ids()
    allowed = roles_of(app, operation)
    answers: Counter = Counter()
    valid = operation.as_strategy(GenerationMode.POSITIVE)
    seeded = SEEDED.get(operation.label)
    if seeded is not None:
        valid = valid | operation.as_strategy(GenerationMode.POSITIVE, **seeded(world))
    invalid = operation.as_strategy(GenerationMode.NEGATIVE)
    # Two valid requests for each invalid one.
    cases = st.one_of(
        valid.map(lambda case: (case, True)),
        valid.map(lambda case: (case, True)),
        invalid.map(lambda case: (case, False)),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(generated=cases, data=st.data())
    def run(generated, data):
        case, valid = generated
        # Mostly a role the operation serves, sometimes any: refusals keep the contract too.
        role = data.draw(st.sampled_from(allowed * 4 + list(Role)))
        headers = world.auth(role)
        if valid:
            # Ids of the seeded village, so reads find something and writes go through; a
            # fresh Idempotency-Key half the time, else the generated one (replays, conflicts).
            for container in (case.path_parameters, case.query, case.body):
                if isinstance(container, dict):
                    with_world_ids(container, ids, data)
            if case.headers and "Idempotency-Key" in case.headers and data.draw(st.booleans()):
                headers["Idempotency-Key"] = uuid.uuid4().hex
        response = case.call(app=app, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            problems = format_problems(response.json())
            assert not problems, f"{case.as_curl_command()}\n" + "\n".join(problems)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"] and error["message"], response.text
        answers[
            (valid, response.status_code, error["code"] if response.status_code >= 400 else "")
        ] += 1

    run()
    succeeded = sum(n for (valid, status, _code), n in answers.items() if valid and status < 300)
    assert succeeded, f"{operation.label}: no generated request succeeded: {dict(answers)}"
