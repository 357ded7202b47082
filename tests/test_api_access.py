"""Who may call what in /api/v1: every API route × no token, each role's token, and tokens of
another village, shop and town — allowed or refused as the pages allow or refuse the same.

The routes come from ``app.url_map``, so a new API route is covered as soon as it exists, and
this matrix fails until EXPECTED says who may call it. Requests use valid ids of the home
village (and valid bodies), so "allowed" means a 2xx answer and nothing less. Another place's
token gets 404 where the pages answer 404 for another place's object: the API tells no more.
The object-level tests at the end compare the API with the very page the same user would open.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import ApiRequest, Role, Transfer, TransferStatus
from pointsmart.services import api_tokens, cards, submissions
from tests.conftest import app_config, login
from tests.test_api_contract import build_world

#: Scopes of an API route's objects.
PLACE = "place"  #: the objects belong to a place: a token of another place gets 404
OWN = "own"  #: no object in the URL: the call acts on the token's own household
PUBLIC = "public"  #: public information of any village (the 公示 pages need no login)
DOCUMENT = "document"  #: the API's own document: no token needed

ALL = frozenset(Role)


@dataclass(frozen=True)
class Access:
    roles: frozenset[Role]
    scope: str


#: Who may call each API endpoint, with the pages that allow the same (in the comment).
#: A route missing here fails the matrix: whoever adds a route declares its audience.
EXPECTED: dict[str, Access | str] = {
    "api-docs.openapi_json": DOCUMENT,
    "api_docs.docs": DOCUMENT,
    # clerk.counter (scan), cadre.household_card (cadre, committee, town admin)
    "api_households.card": Access(
        frozenset({Role.CLERK, Role.CADRE, Role.COMMITTEE, Role.ADMIN}), PLACE
    ),
    # villager.home and villager.history (own household), cadre.household, admin.household,
    # main.statement (cadres, committee, clerks of a shop serving it)
    "api_households.household": Access(ALL, PLACE),
    "api_households.history": Access(ALL, PLACE),
    # villager.shop (the shops serving the household), clerk.items (its clerks, town admins)
    "api_shop.items": Access(frozenset({Role.VILLAGER, Role.CLERK, Role.ADMIN}), PLACE),
    "api_shop.checkout": Access(frozenset({Role.CLERK}), PLACE),  # clerk.checkout
    "api_shop.redemption": Access(frozenset({Role.CLERK, Role.COMMITTEE}), PLACE),
    "api_shop.void": Access(frozenset({Role.CLERK, Role.COMMITTEE}), PLACE),  # clerk.void
    "api_work.record": Access(frozenset({Role.CADRE, Role.COMMITTEE}), PLACE),  # cadre.household
    "api_work.pending": Access(frozenset({Role.COMMITTEE}), PLACE),  # committee.home
    "api_work.approve": Access(frozenset({Role.COMMITTEE}), PLACE),  # committee.approve
    "api_work.reject": Access(frozenset({Role.COMMITTEE}), PLACE),  # committee.reject
    "api_community.new_claim": Access(frozenset({Role.VILLAGER}), OWN),  # villager.new_claim
    "api_community.claims": Access(frozenset({Role.VILLAGER}), OWN),  # villager.submissions
    "api_community.new_report": Access(frozenset({Role.VILLAGER}), OWN),  # villager.new_report
    "api_community.reports": Access(frozenset({Role.VILLAGER}), OWN),  # villager.submissions
    "api_community.ranking": Access(ALL, PLACE),  # main.rankings: within the user's places
    "api_community.village_boards": Access(ALL, PUBLIC),  # public.village
    "api_community.board": Access(ALL, PUBLIC),  # public.board
    "api_community.totals": Access(ALL, PUBLIC),  # public.village
}

#: How to fill each URL argument from the home village (tests/test_api_contract.World).
ARGUMENTS = {
    "code": lambda w: cards.current_card(w.households[0]).code,
    "household_id": lambda w: w.households[0].id,
    "shop_id": lambda w: w.shop.id,
    "redemption_id": lambda w: w.sales[0].id,
    "village_id": lambda w: w.village.id,
    "transfer_id": lambda w: w.pending[0].id,
    "board_id": lambda w: w.board.id,
}

#: The query string a route needs to name its objects.
QUERIES = {
    "api_community.ranking": lambda w: {"scope": "village", "id": w.village.id},
}

#: A valid body for each write, so that an allowed caller gets 2xx.
BODIES = {
    "api_shop.checkout": lambda w: {
        "household_id": w.households[0].id,
        "items": [{"item_id": w.items[0].id, "quantity": 1}],
    },
    # One unit at a time: the clerk and the committee member both take one back.
    "api_shop.void": lambda w: {
        "reason": "拿错了",
        "lines": [{"line_id": w.sales[0].lines[0].id, "quantity": 1}],
    },
    "api_work.record": lambda w: {"rule_id": w.rules[0].id},
    "api_work.reject": lambda w: {"reason": "核对"},
    "api_community.new_claim": lambda w: {"description": "打扫巷道"},
    "api_community.new_report": lambda w: {"what": "乱倒垃圾", "where": "河边"},
}


def _rules():
    app = create_app(app_config("sqlite://"))
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/")]
    return sorted(rules, key=lambda r: (r.rule, r.endpoint))


RULES = _rules()


def request_for(rule, world) -> tuple[str, str, dict | None, dict | None]:
    """Return (method, path, query, body) of a valid call of the rule on the world's objects."""
    missing = rule.arguments - ARGUMENTS.keys()
    assert not missing, f"{rule.rule} takes {sorted(missing)}: add them to ARGUMENTS in {__file__}"
    _domain, path = rule.build({name: ARGUMENTS[name](world) for name in rule.arguments})
    (method,) = rule.methods - {"HEAD", "OPTIONS"}
    query = QUERIES.get(rule.endpoint, lambda w: None)(world)
    body = BODIES.get(rule.endpoint, lambda w: None)(world)
    return method, path, query, body


def identities(home, away, other_town):
    """Yield (label, secret, role, where): no token, a bad one, each role at home, outsiders.

    Outsiders hold the same role over another village of the same town (its household, its
    committee, its shop) or, for an administrator, over another town.
    """
    yield "no token", None, None, "home"
    yield "not a token", "ps_" + "x" * 43, None, "home"
    for role in Role:
        yield role.value, home.secret(role), role, "home"
    for role in Role:
        outsider = other_town if role is Role.ADMIN else away
        yield f"{role.value} of another place", outsider.secret(role), role, "away"


def expected_outcome(access, role: Role | None, where: str) -> str:
    """Return ok, unauthenticated, refused (403 or 404) or not found."""
    if access == DOCUMENT:
        return "ok"
    if role is None:
        return "unauthenticated"
    if role not in access.roles:
        return "refused"
    if where == "away" and access.scope == PLACE:
        return "not found"  # another place's objects: not even their existence is told
    return "ok"


def matches(outcome: str, response) -> bool:
    status = response.status_code
    if status >= 400 and (
        not response.is_json or not response.json["error"]["code"] or not response.json["error"]
    ):
        return False  # every refusal in the one envelope
    return {
        "ok": 200 <= status < 300,
        "unauthenticated": status == 401 and response.json["error"]["code"] == "unauthenticated",
        "refused": status in (403, 404),
        "not found": status == 404 and response.json["error"]["code"] == "not_found",
    }[outcome]


def test_every_api_route_has_an_expectation_and_no_entry_is_stale():
    endpoints = {rule.endpoint for rule in RULES}
    assert not endpoints - EXPECTED.keys(), (
        f"API routes without an access expectation: {sorted(endpoints - EXPECTED.keys())}; "
        "declare who may call them in EXPECTED in tests/test_api_access.py"
    )
    assert not EXPECTED.keys() - endpoints, f"stale entries: {sorted(EXPECTED.keys() - endpoints)}"


@pytest.fixture
def places(make):
    """The home village, another village of the same town, and a village of another town."""
    home = build_world(make, points=1_000, stock=100)
    away = build_world(make, home.town, points=1_000, stock=100)
    other_town = build_world(make, points=1_000, stock=100)
    return home, away, other_town


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.endpoint}:{r.rule}")
def test_api_access_matrix(app, places, rule):
    assert rule.endpoint in EXPECTED, (
        f"{rule.rule} ({rule.endpoint}) has no access expectation; "
        "declare who may call it in EXPECTED in tests/test_api_access.py"
    )
    access = EXPECTED[rule.endpoint]
    home, away, other_town = places
    method, path, query, body = request_for(rule, home)
    client = app.test_client()
    failures, writes = [], 0
    for n, (label, secret, role, where) in enumerate(identities(home, away, other_town)):
        headers = {"Accept-Language": "en"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        if method == "POST":
            headers["Idempotency-Key"] = f"matrix-{n}"
        outcome = expected_outcome(access, role, where)
        response = client.open(path, method=method, query_string=query, json=body, headers=headers)
        if not matches(outcome, response):
            failures.append(
                f"{label:<28} {method:<4} {path:<40} expected {outcome}, got "
                f"{response.status_code} {response.get_data(as_text=True)[:160]}"
            )
        writes += method == "POST" and outcome == "ok"
    assert not failures, f"{rule.rule} ({rule.endpoint}):\n" + "\n".join(failures)
    # A refused write leaves nothing behind, not even its Idempotency-Key.
    stored = db.session.scalar(sa.select(sa.func.count()).select_from(ApiRequest))
    assert stored == writes


# --- object level: the API next to the page the same user would open --------------------------


def token_for(world, role: Role, place) -> tuple[str, object]:
    """Issue a token over a place of the world's town; return its secret and its user."""
    issued = api_tokens.issue(world.people[Role.ADMIN], f"{role.value} {place.id}", role, place)
    db.session.commit()
    return issued.secret, issued.token.user


def api(app, secret: str, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "object-level"}
    return app.test_client().open(path, method=method, headers=headers, **kwargs)


def page(app, user, path: str, method: str = "GET", **kwargs):
    client = app.test_client()
    login(client, user)
    return client.open(path, method=method, **kwargs)


def test_a_villager_token_sees_its_own_household_only(app, make):
    w = build_world(make, points=1_000, stock=100)
    own, neighbour = w.households[0], w.households[1]  # one group, next door
    secret = w.secret(Role.VILLAGER)
    for household in (own, neighbour):
        for suffix in ("", "/history"):
            response = api(app, secret, "GET", f"/api/v1/households/{household.id}{suffix}")
            assert response.status_code == (200 if household is own else 404), response.json
    # The neighbour's claims never show in the list, as on villager.submissions.
    villager = make.villager(neighbour)
    submissions.submit_claim(villager, "邻居的申请", key="neighbour-claim")
    db.session.commit()
    listed = api(app, secret, "GET", "/api/v1/claims").json
    assert listed["total"] == 3
    assert {c["household_id"] for c in listed["items"]} == {own.id}


def test_a_clerk_token_sees_only_its_own_shops_redemptions(app, make):
    w = build_world(make, points=1_000, stock=100)
    # The town's shop serves the village too, but the sale was made at the village's shop.
    secret, user = token_for(w, Role.CLERK, w.town_shop)
    sale = w.sales[0]
    assert api(app, secret, "GET", f"/api/v1/redemptions/{sale.id}").status_code == 404
    assert page(app, user, f"/clerk/redemptions/{sale.id}").status_code == 404
    void = {"reason": "拿错了"}
    assert (
        api(app, secret, "POST", f"/api/v1/redemptions/{sale.id}/voids", json=void).status_code
        == 404
    )
    checkout = {
        "household_id": w.households[0].id,
        "items": [{"item_id": w.items[0].id, "quantity": 1}],
    }
    assert (
        api(app, secret, "POST", f"/api/v1/shops/{w.shop.id}/checkouts", json=checkout).status_code
        == 404
    )
    # A household the town's shop serves is the clerk's to see, as its statement page is.
    household = w.households[0]
    assert api(app, secret, "GET", f"/api/v1/households/{household.id}").status_code == 200
    assert page(app, user, f"/households/{household.id}/statement").status_code == 200
    assert db.session.get(type(sale), sale.id).voided_points == 0


def test_a_committee_token_cannot_touch_another_villages_award(app, make):
    home = build_world(make, points=1_000, stock=100)
    away = build_world(make, home.town, points=1_000, stock=100)
    secret = away.secret(Role.COMMITTEE)
    user = away.tokens[Role.COMMITTEE].token.user
    award = home.pending[0]
    for action, body in (("approve", None), ("reject", {"reason": "核对"})):
        url = f"/api/v1/transfers/{award.id}/{action}"
        assert api(app, secret, "POST", url, json=body).status_code == 404
        assert (
            page(
                app,
                user,
                f"/committee/transfers/{award.id}/{action}",
                "POST",
                data={"reason": "核对"},
            ).status_code
            == 404
        )
    assert api(app, secret, "GET", f"/api/v1/villages/{home.village.id}/pending").status_code == 404
    db.session.expire_all()
    assert db.session.get(Transfer, award.id).status is TransferStatus.PENDING


def test_a_group_cadre_token_records_only_in_its_group(app, make):
    w = build_world(make, points=1_000, stock=100)
    secret, user = token_for(w, Role.CADRE, w.groups[1])
    mine, theirs = w.households[2], w.households[0]  # groups[1] and groups[0]
    body = {"rule_id": w.rules[0].id}
    response = api(app, secret, "POST", f"/api/v1/households/{theirs.id}/awards", json=body)
    assert response.status_code == 404
    assert page(app, user, f"/cadre/households/{theirs.id}").status_code == 404
    response = api(app, secret, "POST", f"/api/v1/households/{mine.id}/awards", json=body)
    assert response.status_code == 201, response.json
    assert page(app, user, f"/cadre/households/{mine.id}").status_code == 200
