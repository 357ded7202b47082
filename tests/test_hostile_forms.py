"""Junk into every form, URL and query string, and fake or oversized images into every upload.

The POST endpoints come from the URL map (as in the access matrix), so a new form is covered at
once. Each is found on the page that shows it and filled in as a person would (that must go
through); then every field in turn gets junk: missing, huge, emoji, control characters with NUL,
SQL and HTML, negative and enormous numbers, and a few texts and integers from Hypothesis (seeded,
so every run posts the same). The answer is never a 500; it is a page or a redirect, and whenever
it says no (an error message, a 4xx) nothing was stored; check-ledger passes afterwards.

Every form that takes photos refuses a text file named .jpg, an HTML file named .png, an SVG, a
truncated JPEG, a decompression bomb and a file over the size limit, each with its own message,
and serves what it accepts only as a re-encoded JPEG with nosniff.
"""

from __future__ import annotations

import functools
import html
import io
import random
import re
import struct
import zlib
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import url_for
from flask_babel import gettext
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image
from werkzeug.exceptions import HTTPException
from werkzeug.routing import UnicodeConverter

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Item, Photo, Role
from pointsmart.services import accounts, api_tokens, cards, photos, places, ratings
from pointsmart.services import admin as admin_service
from pointsmart.timeutil import local_today
from tests.conftest import PASSWORD, PIN, app_config, empty_tables, login
from tests.test_access_matrix import (
    ANY_USER,
    ANYONE,
    ARGUMENTS,
    EXPECTED,
    LOGIN_PAGE,
    RULES,
    Place,
    a_redemption,
    a_rule,
    build_place,
    open_rating_round,
    shop_item,
    url_for_place,
)
from tests.test_request_safety import who_may

#: Tables a request may write to without anybody having done anything: sessions are bookkeeping.
BOOKKEEPING = {"login_sessions", "api_tokens", "alembic_version"}


@pytest.fixture
def app(migrated):
    """The test app without login limits (junk posted to a login form is not an attack here)."""
    app = create_app(app_config(migrated, RATELIMIT_ENABLED=False, PROPAGATE_EXCEPTIONS=False))
    with app.app_context():
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


def state() -> tuple:
    """Return every table's row count, all balances and all stock, in one query."""
    tables = [t.name for t in db.metadata.sorted_tables if t.name not in BOOKKEEPING]
    parts = [f'(SELECT count(*) FROM "{name}")' for name in tables]
    parts += [
        "(SELECT COALESCE(SUM(balance), 0) FROM accounts)",
        "(SELECT COALESCE(SUM(stock), 0) FROM shop_items)",
    ]
    row = db.session.execute(sa.text("SELECT " + ", ".join(parts))).one()
    db.session.rollback()
    return tuple(row)


def assert_check_ledger_passes(app) -> None:
    db.session.rollback()
    result = app.test_cli_runner().invoke(args=["check-ledger"])
    assert result.exit_code == 0, result.output


# --- finding the forms ------------------------------------------------------------------------------


class FormParser(HTMLParser):
    """Collect the POST forms of a page: action, the fields a browser would send, file inputs.

    ``guessed`` names the selects and radios nobody chose yet (sent as the first choice unless
    GOOD says better), ``unticked`` the checkboxes not ticked (sent only if GOOD says so).
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._by_id: dict[str, dict] = {}
        self._waiting: dict[str, list] = {}  # inputs naming a form (form="…") not yet seen
        self._form = None
        self._select = None
        self._options: set[str] = set()
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "get").lower() == "post":
            self._form = {
                "action": a.get("action") or "",
                "fields": {},
                "files": {},
                "guessed": set(),
                "unticked": set(),
            }
            self.forms.append(self._form)
            if a.get("id"):
                self._by_id[a["id"]] = self._form
                for waiting in self._waiting.pop(a["id"], []):
                    self._field(self._form, *waiting)
            return
        if "form" in a and tag in ("input", "select", "textarea", "button"):
            owner = self._by_id.get(a["form"])
            if owner is None:
                self._waiting.setdefault(a["form"], []).append((tag, a))
                return
            self._field(owner, tag, a)
        elif self._form is not None:
            self._field(self._form, tag, a)

    def _field(self, form, tag, a):
        fields = form["fields"]
        if tag == "option" and self._select:
            value, name = a.get("value", ""), self._select
            if "selected" in a or name not in self._options:  # else the first, as browsers do
                fields[name] = [value]
            if "selected" in a:
                form["guessed"].discard(name)
            self._options.add(name)
            return
        name = a.get("name")
        if not name:
            return
        kind = (a.get("type") or "text").lower() if tag == "input" else tag
        if kind == "file":
            form["files"][name] = a.get("accept", "")
        elif kind == "checkbox":
            if "checked" in a:
                form["unticked"].discard(name)
                fields[name] = fields.get(name, []) + [a.get("value", "on")]
            elif name not in fields:
                form["unticked"].add(name)
        elif kind == "radio":
            if "checked" in a:
                form["guessed"].discard(name)
                fields[name] = [a.get("value", "on")]
            elif name not in fields:
                form["guessed"].add(name)
                fields[name] = [a.get("value", "on")]  # a person picks the first
        elif kind == "select":
            self._select = name
            self._options = set()
            fields[name] = [""]
            form["guessed"].add(name)
        elif kind == "textarea":
            self._textarea = (form, name)
            fields[name] = [""]
        elif kind == "button" and a.get("type", "submit") != "submit":
            pass
        else:  # text, hidden, number…, and the submit button's name and value
            fields.setdefault(name, [a.get("value", "")])

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            form, name = self._textarea
            form["fields"][name][0] += data


def forms_on(app, page_url: str, body: str):
    """Yield (endpoint, url, form) for every POST form of a page."""
    adapter = app.url_map.bind("localhost")
    parser = FormParser()
    parser.feed(body)
    for form in parser.forms:
        action = html.unescape(form["action"]) or page_url
        parts = urlsplit(action)
        try:
            endpoint, _args = adapter.match(parts.path, method="POST")
        except HTTPException:  # a form posting elsewhere (or nowhere) is not ours
            continue
        url = parts.path + (f"?{parts.query}" if parts.query else "")
        yield endpoint, url, form


POSTS = [r for r in RULES if "POST" in r.methods]
GETS = [r for r in RULES if "GET" in r.methods and not r.endpoint.startswith("media.")]

#: Per role: the GET rule of the page that shows each endpoint's form (found once per run).
_HOSTS: dict[str | None, dict[str, object]] = {}


def user_for(access, place: Place):
    """Return a user allowed to post to an endpoint: None for the login forms."""
    if access == LOGIN_PAGE:
        return None
    if access in (ANY_USER, ANYONE):
        return place.users[Role.VILLAGER]
    return place.users[sorted(access)[0]]


def role_of(access) -> str | None:
    if access == LOGIN_PAGE:
        return None
    if access in (ANY_USER, ANYONE):
        return Role.VILLAGER.value
    return sorted(access)[0].value


def may_open(access, role: str | None) -> bool:
    if role is None:
        return access in (LOGIN_PAGE, ANYONE)
    if access in (ANY_USER, ANYONE):
        return True
    return isinstance(access, frozenset) and Role(role) in access


def hosts(app, client, place: Place, role: str | None) -> dict[str, object]:
    """Return {endpoint: GET rule of a page with its form} for what this role can open."""
    if role not in _HOSTS:
        found: dict[str, object] = {}
        for rule in GETS:
            if rule.endpoint.endswith(("_xlsx", "_csv")) or not may_open(
                EXPECTED.get(rule.endpoint), role
            ):
                continue
            url = url_for_place(rule, place)  # once: some builders make a new object each time
            response = client.get(url)
            if response.status_code != 200 or response.mimetype != "text/html":
                continue
            for endpoint, *_ in forms_on(app, url, response.text):
                found.setdefault(endpoint, rule)
        _HOSTS[role] = found
    return _HOSTS[role]


def checkout_page(client, place: Place) -> str:
    """The review page that carries the checkout form (it exists only after a cart is posted)."""
    a_redemption(place)  # funds the household and stocks the shop
    item = shop_item(place)
    url = f"/clerk/shops/{place.shop.id}/households/{place.household.id}/cart"
    return client.post(url, data={f"qty-{item.id}": "1"}).text


ROSTER_CSV = "组,门牌号,户主,姓名,与户主关系,电话\n{group},99,王新户,王新户,户主,13900001111\n"


def roster_preview_page(client, place: Place) -> str:
    """The preview page that carries the import form (it exists only after a file is sent)."""
    url = f"/admin/villages/{place.village.id}/roster/preview"
    data = ROSTER_CSV.format(group=place.group.name).encode()
    upload = {"file": (io.BytesIO(data), "roster.csv")}
    return client.post(url, data=upload, content_type="multipart/form-data").text


#: Forms that only a POST brings up, and how to bring them up.
AFTER_A_POST = {"clerk.checkout": checkout_page, "admin.roster_import": roster_preview_page}


def _member_without_login(place: Place) -> None:
    places.add_member(place.household, "新成员")


def _closed_shop(place: Place) -> None:
    place.shop.is_active = False


def _deactivated_cadre(place: Place) -> None:
    admin_service.deactivate(place.users[Role.ADMIN], place.users[Role.CADRE])


def _cadre_with_two_roles(place: Place) -> None:
    accounts.grant(place.users[Role.CADRE], Role.CADRE, place.group)


def _issued_token(place: Place) -> None:
    api_tokens.issue(place.users[Role.ADMIN], "扫码枪", Role.CLERK, place.shop)


def _closed_rating_round(place: Place) -> str:
    round_ = ratings.close_round(open_rating_round(place), place.users[Role.COMMITTEE])
    return f"/committee/ratings/{round_.id}"


def _due_clearing(place: Place) -> None:
    today = local_today()
    village = place.village
    village.clearing_month, village.clearing_day = today.month, today.day
    village.clearing_set_on = today - timedelta(days=90)


#: Forms a page shows only in some state: how to get there, and the page (endpoint).
SHOWN_WHEN = {
    "admin.create_login": (_member_without_login, "admin.household"),
    "admin.activate_shop": (_closed_shop, "admin.shops"),
    "admin.reactivate_staff": (_deactivated_cadre, "admin.staff_account"),
    "admin.remove_grant": (_cadre_with_two_roles, "admin.staff_account"),
    "admin.revoke_token": (_issued_token, "admin.tokens"),
    "committee.publish_courtyard": (_closed_rating_round, "committee.rating_round"),
    "committee.run_clearing": (_due_clearing, "committee.approval_settings"),
    "committee.copy_rule_templates": (lambda place: a_rule(place, town=True), "committee.rules"),
    "cadre.household": (lambda place: a_rule(place, town=False), "cadre.household"),
    "cadre.new_round": (lambda place: a_rule(place, town=False), "cadre.new_round"),
    "clerk.cart": (a_redemption, "clerk.cart"),
}

RULE_OF = {rule.endpoint: rule for rule in RULES}


def find_form(app, client, place: Place, rule) -> tuple[str, dict]:
    """Return (url, form) of the form that posts to ``rule``, as a page shows it."""
    shown_at = None
    if rule.endpoint in AFTER_A_POST:
        page_url, body = "(after a POST)", AFTER_A_POST[rule.endpoint](client, place)
    else:
        if rule.endpoint in SHOWN_WHEN:
            prepare, host_endpoint = SHOWN_WHEN[rule.endpoint]
            shown_at = prepare(place)  # the page's URL, where the objects are made here
            db.session.commit()
            host = RULE_OF[host_endpoint]
        elif "GET" in rule.methods:
            host = rule
        else:
            role = role_of(EXPECTED[rule.endpoint])
            host = hosts(app, client, place, role).get(rule.endpoint)
        assert host is not None, (
            f"no page shows a form posting to {rule.endpoint}; say how to get there in SHOWN_WHEN"
        )
        page_url = shown_at if isinstance(shown_at, str) else url_for_place(host, place)
        body = client.get(page_url).text
    for endpoint, url, form in forms_on(app, page_url, body):
        if endpoint == rule.endpoint:
            return url, form
    raise AssertionError(f"{page_url} has no form posting to {rule.endpoint}")


# --- sensible values, and junk ---------------------------------------------------------------------


class Upload:
    """A file to send; a fresh stream per request."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name

    def part(self) -> tuple:
        return (io.BytesIO(self.data), self.name)


def image_bytes(fmt: str = "JPEG", size=(40, 30), color="green") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


#: Values that pass validation, for fields a page leaves empty, by field name (or its prefix
#: before "-"); a callable gets the place.
GOOD = {
    "reason": "核对",
    "description": "打扫了村口",
    "what": "有人往河里倒垃圾",
    "where": "村东河边",
    "note": "",
    "name": "新名称",
    "title": "第二季度",
    "display_name": "新职员",
    "category": "其他",
    "points": "5",
    "quantity": "1",
    "qty": "1",
    "low_stock_at": "1",
    "phone": "13900002222",
    "password": PASSWORD,
    "username": "newstaff",
    "locale": "en",
    "mode": "large",
    "code": lambda place: cards.current_card(place.household).code,
    "file": lambda place: Upload(ROSTER_CSV.format(group=place.group.name).encode(), "roster.csv"),
    "photos": Upload(image_bytes(), "photo.jpg"),
    "role": "cadre",
    "place": lambda place: f"group:{place.group.id}",
    "rule": lambda place: str(a_rule(place, town=False).id),
    "transfer_id": lambda place: str(place.pending.id),
    "photo": Upload(image_bytes("PNG"), "photo.png"),
}

#: Per form, what a person fills in there instead.
FOR_FORM = {
    "auth.login": {"phone": lambda place: place.users[Role.VILLAGER].phone, "pin": PIN},
    "auth.staff_login": {"username": lambda place: place.users[Role.CADRE].username},
    "cadre.inspection_round": {"rule": ""},  # a mark or a rule, not both
    "cadre.verify_report": {"offender": "0"},  # "nobody": the reporter's household is no choice
}

#: Fields a person always fills in, whatever the page shows (a quantity of 0 buys nothing).
ALWAYS = {"qty"}

MISSING = object()

#: Every field gets each of these, then what Hypothesis makes.
NASTY = {
    "missing": MISSING,
    "huge": "A" * 100_000,
    "emoji-control-nul": "😀\x00\x01\x07\x1b[31m\u202e\ufeff\r\n\t圾",
    "sql-html": "1' OR '1'='1'; DROP TABLE users; -- <script>alert(1)</script>\"><img src=x>",
    "negative": "-7",
    "enormous": "9" * 40,
}

JUNK = st.one_of(
    st.text(max_size=300),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.sampled_from(
        ["", " ", "0", "1.5", "1e309", "NaN", "-0", "１２", "0x1F", "../../etc/passwd"]
    ),
)
GENERATED_PER_FIELD = 3


def good_value(endpoint: str, name: str, place: Place):
    good = {**GOOD, **FOR_FORM.get(endpoint, {})}
    value = good.get(name, good.get(name.split("-")[0], ""))
    return value(place) if callable(value) else value


def base_form(endpoint: str, form: dict, place: Place) -> dict:
    """Return the form as a person fills it in: what the page shows, else a GOOD value."""
    data = {}
    for name, values in form["fields"].items():
        good = good_value(endpoint, name, place)
        if name in form["guessed"] or name.split("-")[0] in ALWAYS or values == ["0"]:
            values = [good or values[0]]  # "0": a select's "choose…" placeholder
        filled = [v.strip() or good for v in values]
        data[name] = filled if len(filled) > 1 else filled[0]
    for name in form["unticked"]:
        if good := good_value(endpoint, name, place):
            data[name] = good
    for name in form["files"]:
        if isinstance(upload := good_value(endpoint, name, place), Upload):
            data[name] = upload
    for name in FOR_FORM.get(endpoint, {}):
        if name in data:
            data[name] = good_value(endpoint, name, place)
    return data


def with_junk(base: dict, field: str, value, files: dict) -> dict:
    data = dict(base)
    if value is MISSING:
        data.pop(field, None)
    elif field in files:
        data[field] = Upload(value.encode("utf-8", "surrogatepass"), "junk.jpg")
    else:
        data[field] = value
    return data


def flashed_errors(client) -> list[str]:
    """Return (and clear) the error messages waiting for the next page."""
    with client.session_transaction() as session:
        flashes = session.pop("_flashes", [])
    return [message for category, message in flashes if category == "error"]


#: A field no form has: every form gets junk there too (and a form without fields gets some).
EXTRA = "extra_field"
INLINE_ERROR = re.compile(r'class="(?:error|flash flash-error)"[^>]*>([^<]*)')


def post_once(app, user, url: str, data: dict):
    """Post a form from a fresh browser of ``user``; return (response, refusals, changed)."""
    client = app.test_client()  # no session, flash or login left over from the post before
    if user is not None:
        login(client, user)
    before = state()
    parts = {k: v.part() if isinstance(v, Upload) else v for k, v in data.items()}
    multipart = any(isinstance(v, Upload) for v in data.values())
    response = client.post(
        url, data=parts, content_type="multipart/form-data" if multipart else None
    )
    refusals = flashed_errors(client) + INLINE_ERROR.findall(response.get_data(as_text=True))
    if response.status_code >= 400:
        refusals.append(str(response.status_code))
    return response, refusals, state() != before


def check_answer(label: str, response, refusals: list, changed: bool, failures: list) -> None:
    status = response.status_code
    if status >= 500:
        failures.append(f"{label}: {status}")
    elif "Traceback" in response.get_data(as_text=True):
        failures.append(f"{label}: a traceback in the page")
    elif status not in (200, 302, 303) and status < 400:
        failures.append(f"{label}: unexpected {status}")
    elif refusals and changed:
        failures.append(f"{label}: said no ({refusals[:2]}) but stored something")


def generated_junk(name: str, post) -> None:
    """Post what Hypothesis makes: a few examples, seeded by ``name`` (the same every run)."""

    @seed(zlib.crc32(name.encode()))
    @settings(
        max_examples=GENERATED_PER_FIELD,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(value=JUNK)
    def run(value):
        post(value)

    run()


@pytest.mark.parametrize("rule", POSTS, ids=lambda r: r.endpoint)
def test_junk_in_any_field_is_refused_cleanly(app, make, rule):
    assert rule.endpoint in EXPECTED, (
        f"{rule.endpoint} has no access expectation in tests/test_access_matrix.py"
    )
    place = build_place(make)
    db.session.commit()
    user = user_for(EXPECTED[rule.endpoint], place)
    client = app.test_client()
    if user is not None:
        login(client, user)
    url, form = find_form(app, client, place, rule)
    files = form["files"]
    takes_photos = [name for name, accept in files.items() if "image/" in accept]
    assert not takes_photos or UPLOAD_FORMS.get(rule.endpoint) in takes_photos, (
        f"{rule.endpoint} takes photos: add it to UPLOAD_FORMS, so fake images are tried there"
    )
    base = base_form(rule.endpoint, form, place)
    failures: list[str] = []

    # The form as a person fills it in goes through, so junk meets the real handling, not a
    # refusal of something else.
    response, refusals, _changed = post_once(app, user, url, base)
    assert response.status_code < 400 and not refusals, (
        f"{rule.endpoint} refused the form as filled in ({response.status_code}: {refusals}); "
        f"say what a person fills in there in GOOD or FOR_FORM: {base}"
    )

    def post(field: str, value, label: str) -> None:
        answer = post_once(app, user, url, with_junk(base, field, value, files))
        check_answer(f"{field}={label}", *answer, failures)

    for field in sorted(set(form["fields"]) | form["unticked"] | set(files) | {EXTRA}):
        for kind, value in NASTY.items():
            if field != EXTRA or kind in ("huge", "emoji-control-nul"):
                post(field, value, kind)
        if field != EXTRA:
            generated_junk(
                f"{rule.endpoint} {field}",
                lambda value, field=field: post(field, value, repr(value[:40])),
            )

    assert not failures, f"{rule.endpoint} ({url}):\n" + "\n".join(failures)
    assert_check_ledger_passes(app)


# --- NUL and junk in URLs and query strings -----------------------------------------------------------

#: Query-string names the pages read, each given junk at once.
QUERY_JUNK = "&".join(
    f"{name}=%00{junk}"
    for name, junk in zip(
        ("q", "next", "page", "month", "from", "to", "group", "rule", "recorder", "scope"),
        (
            "'%20OR%201=1--",
            "//evil.example",
            "-1",
            "2024-13",
            "9" * 30,
            "%F0%9F%98%80",
            "0x10",
            "<script>",
            "99999999999999999999",
            "%E5%9C%BE" * 200,
        ),
        strict=True,
    )
)


def string_arguments(rule) -> list[str]:
    """Return the rule's arguments that take any text (tokens), as opposed to ids."""
    return [name for name, conv in rule._converters.items() if isinstance(conv, UnicodeConverter)]


def test_a_nul_in_a_url_part_is_not_found_and_junk_in_a_query_string_is_no_500(app, make):
    place = build_place(make)
    db.session.commit()
    failures = []
    token_routes = 0
    for rule in (r for r in RULES if "GET" in r.methods):
        access = EXPECTED[rule.endpoint]
        users = who_may(access, place) or [None]
        client = app.test_client()
        if users[0] is not None:
            login(client, users[0])
        url = url_for_place(rule, place)
        tokens = string_arguments(rule)
        if tokens:
            token_routes += 1
            # The token as it is, with a NUL inside: no token has one, so there is no such page.
            args = {name: ARGUMENTS[name](place) for name in rule.arguments}
            args.update({name: f"{args[name][:4]}\x00{args[name][4:]}" for name in tokens})
            broken = rule.build(args)[1]
            status = client.get(broken).status_code
            if status != 404:
                failures.append(f"{broken}: {status}, not 404")
        response = client.get(f"{url}{'&' if '?' in url else '?'}{QUERY_JUNK}")
        if response.status_code >= 500:
            failures.append(f"{url} with junk in its query string: {response.status_code}")
    assert token_routes >= 3  # photos, thumbnails, goods photos
    assert not failures, "\n".join(failures)


# --- fake and oversized images into every upload form ------------------------------------------------

#: Every form that takes photos (the junk test above fails on one missing here).
UPLOAD_FORMS = {
    "villager.new_claim": "photos",  # evidence of a claim
    "villager.new_report": "photos",  # a report's photos
    "cadre.household": "photos",  # evidence of an award or a deduction
    "cadre.rate_household": "photos",  # a courtyard rating's photos
    "clerk.new_item": "photo",  # goods
    "clerk.edit_item": "photo",
}
PHOTO_LIMIT = 128 * 1024  # bytes per photo in these tests (PHOTO_MAX_BYTES)


@functools.cache
def noise_jpeg(size=(500, 400)) -> bytes:
    """A JPEG that compresses badly: random pixels."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, random.Random(8).randbytes(size[0] * size[1] * 3)).save(
        buffer, "JPEG", quality=95
    )
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels."""
    data = bytearray(image_bytes("PNG", (1, 1)))
    struct.pack_into(">II", data, 16, width, height)  # IHDR: width, height after "IHDR"
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@functools.cache
def pixel_bomb() -> bytes:
    """A real 8000 × 8000 PNG (64 megapixels) of a few kilobytes: it inflates when decoded."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, "PNG")
    return buffer.getvalue()


NOT_A_PHOTO = "This file is not a photo: only JPEG, PNG or WebP are accepted."
DAMAGED = "This photo is damaged or incomplete; please take or choose it again."
TOO_MANY_PIXELS = "The photo is too large in pixels (at most %(mp)s megapixels)."
TOO_LARGE = "A photo may be at most %(mb)s MB."

#: What is sent, under which name, and what the person is told.
FAKES = {
    "text-named-jpg": (lambda: b"just some words, not a photo\n" * 20, "photo.jpg", NOT_A_PHOTO),
    "html-named-png": (
        lambda: b"<!doctype html><html><script>alert(1)</script></html>",
        "photo.png",
        NOT_A_PHOTO,
    ),
    "svg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
        "photo.svg",
        NOT_A_PHOTO,
    ),
    "truncated-jpeg": (lambda: noise_jpeg()[:30_000], "photo.jpg", DAMAGED),
    "huge-dimensions": (lambda: png_claiming(50_000, 50_000), "photo.png", TOO_MANY_PIXELS),
    "decompression-bomb": (pixel_bomb, "photo.png", TOO_MANY_PIXELS),
    "over-the-size-limit": (noise_jpeg, "photo.jpg", TOO_LARGE),
}


def translated(app, message: str, **values) -> str:
    with app.test_request_context():
        return gettext(message, **values)


def files_in(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


@pytest.fixture
def upload_app(app, tmp_path):
    app.config["PHOTO_FOLDER"] = str(tmp_path / "photos")
    app.config["PHOTO_MAX_BYTES"] = PHOTO_LIMIT
    return app


@pytest.mark.parametrize("endpoint", UPLOAD_FORMS)
def test_fake_and_oversized_images_are_refused_with_a_clear_message(upload_app, make, endpoint):
    app = upload_app
    assert len(noise_jpeg()) > PHOTO_LIMIT
    place = build_place(make)
    db.session.commit()
    user = user_for(EXPECTED[endpoint], place)
    client = app.test_client()
    login(client, user)
    url, form = find_form(app, client, place, RULE_OF[endpoint])
    field = UPLOAD_FORMS[endpoint]
    assert field in form["files"], f"{endpoint} has no file field {field!r}"
    base = base_form(endpoint, form, place)
    folder = Path(app.config["PHOTO_FOLDER"])
    stored = files_in(folder)

    for label, (make_data, name, message) in FAKES.items():
        response, refusals, changed = post_once(
            app, user, url, {**base, field: Upload(make_data(), name)}
        )
        expected = translated(
            app, message, mp=photos.MAX_PIXELS // 10**6, mb=f"{PHOTO_LIMIT / 2**20:g}"
        )
        assert response.status_code < 500, (label, response.status_code)
        assert any(expected in refusal for refusal in refusals), (label, refusals)
        assert not changed, f"{label}: refused, yet something was stored"
        assert files_in(folder) == stored, f"{label}: a file was written"

    # The same form takes a real photo, even one with HTML appended, and serves it only as a
    # re-encoded JPEG that browsers may not sniff.
    polyglot = image_bytes("JPEG", (64, 48)) + b"<html><script>alert(1)</script></html>"
    response, refusals, changed = post_once(
        app, user, url, {**base, field: Upload(polyglot, "photo.jpg")}
    )
    assert response.status_code == 302 and not refusals and changed, refusals
    for photo_url in served_photo_urls(app, endpoint, place):
        served = client.get(photo_url)
        assert served.status_code == 200, photo_url
        assert served.headers["Content-Type"] == "image/jpeg"
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.data.startswith(b"\xff\xd8") and b"<script" not in served.data
    assert_check_ledger_passes(app)


def served_photo_urls(app, endpoint: str, place: Place) -> list[str]:
    """Return the URLs the photo just uploaded through ``endpoint`` is served at."""
    if endpoint.startswith("clerk."):
        token = db.session.scalars(
            sa.select(Item.photo_token)
            .where(Item.shop_id == place.shop.id)
            .order_by(Item.id.desc())
        ).first()
        assert token, "the goods photo was not kept"
        with app.test_request_context():
            return [url_for("clerk.goods_photo", goods_token=token)]
    photo = db.session.scalars(sa.select(Photo).order_by(Photo.id.desc())).first()
    assert photo is not None, "the photo was not kept"
    return [f"/photos/{photo.token}", f"/photos/{photo.token}/thumb"]


@pytest.mark.parametrize("endpoint", UPLOAD_FORMS)
def test_an_upload_over_the_request_limit_gets_the_413_page(upload_app, make, endpoint):
    app = upload_app
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    place = build_place(make)
    db.session.commit()
    user = user_for(EXPECTED[endpoint], place)
    client = app.test_client()
    login(client, user)
    url, _form = find_form(app, client, place, RULE_OF[endpoint])
    before = state()
    # Built by hand: the test client would spool a large body to a file nobody closes.
    body = (
        (
            f'--b\r\nContent-Disposition: form-data; name="{UPLOAD_FORMS[endpoint]}"; '
            'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + b"\xff" * (2 * 1024 * 1024)
        + b"\r\n--b--\r\n"
    )
    response = client.post(url, data=body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 413
    message = translated(
        app,
        "The upload is too large: at most %(mb)s MB can be sent at once. Nothing was saved. "
        "Please go back and send fewer or smaller photos.",
        mb=1,
    )
    assert message in html.unescape(response.get_data(as_text=True))
    assert state() == before
