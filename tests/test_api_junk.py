"""Junk into every API write: a 4xx in the one envelope with a message, never a 500, nothing stored.

The writes come from the URL map and their fields from the OpenAPI document, so a new write or
field is covered at once. Each request starts from a valid body (tests/test_api_access.BODIES)
and breaks it: one field gets a value its schema refuses (huge strings, wrong types, negative
and enormous integers, fractions, nulls), a required field goes missing, an unknown field comes
along, or the whole body is not an object or not JSON. Strings around the broken field carry
emoji, control characters, SQL and HTML. Hostile but valid text is sent too: it is stored as
sent or refused, never a 500.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pointsmart.extensions import db
from pointsmart.models import Claim, Report
from tests.test_api_access import ARGUMENTS, BODIES, EXPECTED, RULES
from tests.test_api_contract import SPEC_APP, build_world, openapi_path

SPEC = SPEC_APP.test_client().get("/api/v1/openapi.json").json
COMPONENTS = SPEC["components"]["schemas"]

#: Writes that read no body: junk sent to them is not read, so it cannot be refused.
BODILESS = {"api_work.approve"}

#: Tables a request may touch without anybody having done anything.
BOOKKEEPING = {"api_tokens", "login_sessions", "alembic_version"}

NASTY = [
    "😀🎉👨‍👩‍👧‍👦" * 3,
    "\x00\x01\x07\x1b[31m\u202e\ufeff\r\n\t圾",
    "'; DROP TABLE households; --",
    "1 OR 1=1",
    '<script>alert("x")</script><img src=x onerror=alert(1)>',
    "{{ 7*7 }}${7*7}%s%n",
    "\\x00\\u0000",
]
NOT_A_NUMBER = st.sampled_from(NASTY + ["", " ", "1e400", "0x10", "一", "NaN", "Infinity"])


def _schema(ref_or_schema: dict) -> dict:
    if "$ref" in ref_or_schema:
        return COMPONENTS[ref_or_schema["$ref"].rsplit("/", 1)[1]]
    return ref_or_schema


def body_schema(rule) -> dict | None:
    operation = SPEC["paths"][openapi_path(rule)]["post"]
    body = operation.get("requestBody")
    return _schema(body["content"]["application/json"]["schema"]) if body else None


def invalid_for(schema: dict) -> st.SearchStrategy:
    """Return values the field's schema refuses."""
    wrong_shapes = st.one_of(
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63)
        return st.one_of(
            st.integers(max_value=low - 1, min_value=-(2**80)),
            st.integers(min_value=high + 1, max_value=10**40),
            st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
            st.booleans(),
            NOT_A_NUMBER,
            wrong_shapes,
        )
    if kind == "string":
        longest = schema.get("maxLength", 10_000)
        too_long = st.sampled_from(NASTY).map(
            lambda s: (s * (longest // len(s) + 2))[: longest + 50]
        )
        options = [too_long, st.integers(), st.booleans(), wrong_shapes]
        if schema.get("minLength", 0) >= 1:
            options.append(st.just(""))
        return st.one_of(*options)
    if kind == "boolean":
        return st.one_of(
            st.sampled_from(["maybe", "2", "是", "nope"]), st.integers(2, 10**9), wrong_shapes
        )
    if kind == "array":
        entry = _schema(schema["items"])
        return st.one_of(
            st.integers(),
            st.text(max_size=20),
            st.just([]) if schema.get("minItems", 0) >= 1 else st.nothing(),
            st.lists(st.just({}), min_size=1, max_size=3),  # entries missing their required fields
            st.lists(
                st.fixed_dictionaries(
                    {
                        name: invalid_for(_schema(field))
                        for name, field in entry["properties"].items()
                    }
                ),
                min_size=1,
                max_size=3,
            ),
            st.none(),
        )
    return wrong_shapes


def broken_bodies(valid: dict, schema: dict) -> st.SearchStrategy:
    """Return bodies made from ``valid`` that the schema refuses, in every way above."""
    fields = schema["properties"]
    one_field = st.sampled_from(sorted(fields)).flatmap(
        lambda name: invalid_for(_schema(fields[name])).map(lambda junk: {**valid, name: junk})
    )
    required = sorted(schema.get("required", []))
    missing = (
        st.sampled_from(required).map(lambda name: {k: v for k, v in valid.items() if k != name})
        if required
        else st.nothing()
    )
    unknown = st.tuples(
        st.sampled_from(["id", "points", "household", "__proto__", "admin"]), st.sampled_from(NASTY)
    ).map(lambda pair: {**valid, pair[0]: pair[1]})
    not_an_object = st.one_of(
        st.none(), st.integers(), st.sampled_from(NASTY), st.lists(st.just(valid), max_size=2)
    )
    return st.one_of(one_field, missing, unknown, not_an_object)


def counts() -> dict[str, int]:
    """Return the number of rows of every table but the bookkeeping ones."""
    return {
        table.name: db.session.scalar(sa.select(sa.func.count()).select_from(table))
        for table in db.metadata.sorted_tables
        if table.name not in BOOKKEEPING
    }


WRITES = [r for r in RULES if "POST" in r.methods]
JUNK_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,  # every run posts the same junk: a failure is a bug, never a fluke
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def caller(rule, world) -> tuple[str, str, dict]:
    """Return (path, secret, valid body) of an allowed call of the write on the world."""
    role = sorted(EXPECTED[rule.endpoint].roles)[0]
    _domain, path = rule.build({name: ARGUMENTS[name](world) for name in rule.arguments})
    return path, world.secret(role), BODIES[rule.endpoint](world)


def test_every_write_reads_a_documented_body_or_is_declared_bodiless():
    bodiless = {r.endpoint for r in WRITES if body_schema(r) is None}
    assert bodiless == BODILESS


@pytest.mark.parametrize(
    "rule", [r for r in WRITES if r.endpoint not in BODILESS], ids=lambda r: r.endpoint
)
def test_junk_bodies_are_refused_in_the_envelope_and_store_nothing(app, make, rule):
    world = build_world(make, points=1_000, stock=100)
    path, secret, valid = caller(rule, world)
    client = app.test_client()

    def post(**kwargs):
        headers = {
            "Authorization": f"Bearer {secret}",
            "Idempotency-Key": uuid.uuid4().hex,
            "Accept-Language": "en",
        }
        return client.post(path, headers=headers, **kwargs)

    # The valid body works: the junk below is refused for being junk, not for the caller.
    assert post(json=valid).status_code in (200, 201)
    db.session.commit()

    @JUNK_SETTINGS
    @given(body=broken_bodies(valid, body_schema(rule)))
    def refused(body):
        before = counts()
        db.session.commit()
        response = post(json=body)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.json)
        error = response.json["error"]
        assert error["code"] and error["message"].strip(), response.json
        db.session.expire_all()
        assert counts() == before, body
        db.session.commit()

    refused()

    # Not JSON at all, or JSON under another content type.
    for kwargs in (
        {"data": b"\xff\xfe{'items': [", "content_type": "application/json"},
        {"data": "{" * 10_000, "content_type": "application/json"},
        {"data": "[" * 100_000, "content_type": "application/json"},  # deeper than Python recurses
        {"data": '{"a": NaN}', "content_type": "application/json"},
        {"data": "reason=x", "content_type": "application/x-www-form-urlencoded"},
        {"data": b"", "content_type": "application/json"},
    ):
        before = counts()
        response = post(**kwargs)
        assert 400 <= response.status_code < 500, (kwargs, response.status_code)
        assert response.json["error"]["message"], response.json
        assert counts() == before


#: Text fields a villager writes, with a valid body around them: what is stored comes back.
TEXT_WRITES = {
    "api_community.new_claim": (Claim, "description"),
    "api_community.new_report": (Report, "what"),
}


@pytest.mark.parametrize("endpoint", sorted(TEXT_WRITES))
def test_hostile_but_valid_text_is_stored_as_sent_or_refused_never_a_500(app, make, endpoint):
    world = build_world(make, points=1_000, stock=100)
    (rule,) = [r for r in WRITES if r.endpoint == endpoint]
    path, secret, valid = caller(rule, world)
    model, field = TEXT_WRITES[endpoint]
    client = app.test_client()

    @JUNK_SETTINGS
    @given(text=st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=100)))
    def stored_or_refused(text):
        before = counts()
        db.session.commit()
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex}
        with force_locale("en"):
            response = client.post(path, headers=headers, json={**valid, field: text})
        db.session.expire_all()
        if response.status_code == 201:
            record = db.session.get(model, response.json["id"])
            assert getattr(record, field) == response.json[field] == text.strip()
        else:
            assert 400 <= response.status_code < 500, (text, response.status_code, response.json)
            assert response.json["error"]["message"], response.json
            assert counts() == before, text
        db.session.commit()

    stored_or_refused()


@pytest.mark.parametrize("endpoint", sorted(TEXT_WRITES) + ["api_shop.checkout"])
def test_a_key_of_any_allowed_length_works_and_a_blank_one_is_refused(app, make, endpoint):
    world = build_world(make, points=1_000, stock=100)
    (rule,) = [r for r in WRITES if r.endpoint == endpoint]
    path, secret, valid = caller(rule, world)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    longest = "k" * 100  # the most the document allows
    first = client.post(path, headers={**auth, "Idempotency-Key": longest}, json=valid)
    assert first.status_code == 201, first.json
    again = client.post(path, headers={**auth, "Idempotency-Key": longest}, json=valid)
    assert again.status_code == 201 and again.json == first.json
    before = counts()
    for blank in ("", "   "):
        refused = client.post(path, headers={**auth, "Idempotency-Key": blank}, json=valid)
        assert refused.status_code == 400, refused.json
        assert refused.json["error"]["code"] == "invalid_idempotency_key"
    assert counts() == before
