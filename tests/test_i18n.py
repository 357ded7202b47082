"""The translation catalogue: complete, compiled, placeholder-safe, and used by the pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_keywords, parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from pointsmart.extensions import db
from pointsmart.models import Household, Role, Shop, User
from pointsmart.services import ledger

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "pointsmart" / "translations"
# Babel canonicalises zh_CN to zh_Hans_CN, and Flask-Babel looks the catalogue up by that name.
ZH_DIR = TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES"
# The same keywords as scripts/translations.sh passes to pybabel.
KEYWORDS = parse_keywords(
    ["_", "gettext", "ngettext:1,2", "_l", "lazy_gettext", "lazy_ngettext:1,2"]
)
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdifr]")


def extracted_messages() -> dict[str, str]:
    """Extract every msgid from the source now, as pybabel would; return msgid -> where."""
    with open(ROOT / "babel.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS
    ):
        msgid = message if isinstance(message, str) else message[0]
        found.setdefault(msgid, f"{filename}:{lineno}")
    return found


def zh_catalog():
    with open(ZH_DIR / "messages.po", "rb") as fh:
        return read_po(fh)


def strings_of(message) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple) else [message.string]


def ids_of(message) -> list[str]:
    return list(message.id) if isinstance(message.id, tuple) else [message.id]


def test_extraction_finds_python_and_template_strings():
    found = extracted_messages()
    # One from a lazy Python string, one from a template: proves both extractors run.
    assert "Not enough points." in found
    assert "Villager login" in found


def test_every_source_string_has_a_chinese_translation():
    catalog = zh_catalog()
    missing = []
    for msgid, where in sorted(extracted_messages().items()):
        message = catalog.get(msgid)
        if message is None or message.fuzzy or not all(strings_of(message)):
            missing.append(f"{where}: {msgid!r}")
    assert missing == [], "run scripts/translations.sh update and translate:\n" + "\n".join(missing)


def test_catalogue_has_no_fuzzy_or_obsolete_entries():
    catalog = zh_catalog()
    assert [m.id for m in catalog if m.id and m.fuzzy] == []
    assert list(catalog.obsolete) == []


def test_committed_mo_matches_the_po(tmp_path):
    with open(ZH_DIR / "messages.po", "rb") as fh:
        catalog = read_po(fh)
    fresh = tmp_path / "messages.mo"
    with open(fresh, "wb") as fh:
        write_mo(fh, catalog)

    def messages(path: Path) -> dict:
        with open(path, "rb") as fh:
            # Plural entries read back with list ids and strings.
            return {
                tuple(m.id) if isinstance(m.id, list) else m.id: (
                    tuple(m.string) if isinstance(m.string, list) else m.string
                )
                for m in read_mo(fh)
                if m.id
            }

    committed = messages(ZH_DIR / "messages.mo")
    assert committed == messages(fresh), "run scripts/translations.sh update to recompile"
    with open(ZH_DIR / "messages.mo", "rb") as fh:
        assert Translations(fh).gettext("Log in") == "登录"


def test_placeholders_are_preserved():
    catalog = zh_catalog()
    wrong = []
    for message in catalog:
        if not message.id:
            continue
        wanted = set().union(*(PLACEHOLDER.findall(i) for i in ids_of(message)))
        for string in strings_of(message):
            if set(PLACEHOLDER.findall(string)) != wanted:
                wrong.append(f"{message.id!r} -> {string!r}")
    assert wrong == []
    # Babel's own checks: python-format compatibility of msgid and msgstr.
    assert [(m.id, errors) for m, errors in catalog.check()] == []


def test_login_page_is_chinese_by_default_and_english_when_chosen(client):
    page = client.get("/login").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page
    assert "村民登录" in page and "登录" in page and "手机号" in page
    assert "Log in" not in page

    response = client.post("/language", data={"locale": "en", "next": "/login"})
    assert response.status_code == 302 and response.location == "/login"
    page = client.get("/login").get_data(as_text=True)
    assert '<html lang="en">' in page
    assert "Log in" in page and "Mobile number" in page
    assert "登录" not in page

    client.post("/language", data={"locale": "zh_CN", "next": "/login"})
    assert "村民登录" in client.get("/login").get_data(as_text=True)


def test_unknown_language_is_ignored(client):
    client.post("/language", data={"locale": "xx", "next": "/login"})
    assert "村民登录" in client.get("/login").get_data(as_text=True)


@pytest.fixture
def short_of_points(app, make):
    """A route that redeems more than a household has, so the ledger refuses."""
    village = make.village()
    household = make.household(make.group(village))
    make.funded(household, 3)
    clerk = make.staff(Role.CLERK, make.shop(village=village))
    ids = household.id, clerk.id
    db.session.commit()

    @app.post("/test-redeem")
    def test_redeem():
        household = db.session.get(Household, ids[0])
        clerk = db.session.get(User, ids[1])
        shop = db.session.get(Shop, clerk.grants[0].shop_id)
        ledger.redeem(
            household=household,
            shop=shop,
            points=5,
            clerk=clerk,
            key="test-redeem",
            reason="电风扇",
        )
        return "redeemed"

    return "/test-redeem"


def test_domain_error_is_shown_in_the_chosen_language(client, short_of_points):
    response = client.post(short_of_points)
    assert response.status_code == 409
    assert "积分不足：该户现有3分，本次需要5分。" in response.get_data(as_text=True)

    client.post("/language", data={"locale": "en", "next": "/login"})
    response = client.post(short_of_points)
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "Not enough points: the household has 3, this needs 5." in page
    assert "积分" not in page
