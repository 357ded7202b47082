"""Who may open what: every route of the URL map × every role, an outsider and anonymous.

The routes come from ``app.url_map``, so a new route is covered as soon as it exists, and
the matrix fails until EXPECTED says who may open it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import Role, TransferKind
from pointsmart.services import ledger
from tests.conftest import app_config, login

LOGIN_PAGE = "login page"  # anonymous users get the form; logged-in users are sent home
ANY_USER = "any user"  # every logged-in account, whatever its roles
ANYONE = "anyone"  # logged in or not (log out, switch language)
#: A public page: no login; every village's page is public, so 200 for everyone (a board
#: under another village's URL is 404: tests/test_boards_pages.py).
PUBLIC = "public"


class Hidden(frozenset):
    """Roles that may open it; any other logged-in user gets 404, as if it did not exist."""


#: Who may open each endpoint: one of the words above or the roles that may.
#: A route missing here fails the matrix: whoever adds a route declares its audience.
EXPECTED: dict[str, str | frozenset[Role]] = {
    "main.home": ANY_USER,
    "main.rankings": ANY_USER,  # within the user's own places (tests/test_rankings_pages.py)
    "auth.login": LOGIN_PAGE,
    "auth.staff_login": LOGIN_PAGE,
    "auth.logout": ANYONE,
    "auth.language": ANYONE,
    "villager.home": frozenset({Role.VILLAGER}),
    "cadre.home": frozenset({Role.CADRE}),
    "committee.home": frozenset({Role.COMMITTEE}),
    "committee.approve": frozenset({Role.COMMITTEE}),
    "committee.reject": frozenset({Role.COMMITTEE}),
    "clerk.home": frozenset({Role.CLERK}),
    "admin.home": frozenset({Role.ADMIN}),
    "villager.new_claim": frozenset({Role.VILLAGER}),
    "villager.new_report": frozenset({Role.VILLAGER}),
    "villager.submissions": frozenset({Role.VILLAGER}),
    "cadre.verify_queue": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.verify_claim_page": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.verify_claim": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.reject_claim": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.verify_report_page": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.verify_report": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.reject_report": frozenset({Role.CADRE, Role.COMMITTEE}),
    "media.photo": Hidden({Role.VILLAGER, Role.CADRE, Role.COMMITTEE}),
    "media.thumb": Hidden({Role.VILLAGER, Role.CADRE, Role.COMMITTEE}),
    "committee.rating_rounds": frozenset({Role.COMMITTEE}),
    "committee.open_rating_round": frozenset({Role.COMMITTEE}),
    "committee.rating_round": frozenset({Role.COMMITTEE}),
    "committee.close_rating_round": frozenset({Role.COMMITTEE}),
    "cadre.rating_rounds": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.rate_households": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.rate_household": frozenset({Role.CADRE, Role.COMMITTEE}),
    "committee.transfer": frozenset({Role.COMMITTEE}),
    "committee.bulk": frozenset({Role.COMMITTEE}),
    "committee.rules": frozenset({Role.COMMITTEE}),
    "committee.new_rule": frozenset({Role.COMMITTEE}),
    "committee.rule_history": frozenset({Role.COMMITTEE}),
    "committee.edit_rule": frozenset({Role.COMMITTEE}),
    "committee.withdraw_rule": frozenset({Role.COMMITTEE}),
    "committee.copy_rule_templates": frozenset({Role.COMMITTEE}),
    # A village's settings: its committee and its town's administrators (never cadres).
    "committee.approval_settings": frozenset({Role.COMMITTEE, Role.ADMIN}),
    "committee.clearing_date": frozenset({Role.COMMITTEE, Role.ADMIN}),
    "committee.run_clearing": frozenset({Role.COMMITTEE, Role.ADMIN}),
    "admin.rule_templates": frozenset({Role.ADMIN}),
    "admin.new_rule_template": frozenset({Role.ADMIN}),
    "admin.rule_template": frozenset({Role.ADMIN}),
    "admin.edit_rule_template": frozenset({Role.ADMIN}),
    "admin.withdraw_rule_template": frozenset({Role.ADMIN}),
    # The town's villages, groups, households' logins, shops and staff accounts.
    "admin.villages": frozenset({Role.ADMIN}),
    "admin.new_village": frozenset({Role.ADMIN}),
    "admin.village": frozenset({Role.ADMIN}),
    "admin.rename_village": frozenset({Role.ADMIN}),
    "admin.new_group": frozenset({Role.ADMIN}),
    "admin.group": frozenset({Role.ADMIN}),
    "admin.rename_group": frozenset({Role.ADMIN}),
    "admin.household": frozenset({Role.ADMIN}),
    "admin.create_login": frozenset({Role.ADMIN}),
    "admin.reset_pin": frozenset({Role.ADMIN}),
    "admin.shops": frozenset({Role.ADMIN}),
    "admin.new_shop": frozenset({Role.ADMIN}),
    "admin.deactivate_shop": frozenset({Role.ADMIN}),
    "admin.activate_shop": frozenset({Role.ADMIN}),
    "admin.staff": frozenset({Role.ADMIN}),
    "admin.new_staff": frozenset({Role.ADMIN}),
    "admin.staff_account": frozenset({Role.ADMIN}),
    "admin.add_grant": frozenset({Role.ADMIN}),
    "admin.remove_grant": frozenset({Role.ADMIN}),
    "admin.deactivate_staff": frozenset({Role.ADMIN}),
    "admin.reactivate_staff": frozenset({Role.ADMIN}),
    "admin.reset_password": frozenset({Role.ADMIN}),
    # Roster import and export: the town's administrators, for the villages of their town.
    "admin.roster": frozenset({Role.ADMIN}),
    "admin.roster_preview": frozenset({Role.ADMIN}),
    "admin.roster_import": frozenset({Role.ADMIN}),
    "admin.roster_export": frozenset({Role.ADMIN}),
    "cadre.household": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.rounds_list": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.new_round": frozenset({Role.CADRE, Role.COMMITTEE}),
    "cadre.inspection_round": frozenset({Role.CADRE, Role.COMMITTEE}),
    # Points cards: printed and reissued by the village's cadres and committee and the town's
    # administrators (after a roster import); each villager sees their own.
    "cadre.cards": frozenset({Role.CADRE, Role.COMMITTEE, Role.ADMIN}),
    "cadre.card_sheet": frozenset({Role.CADRE, Role.COMMITTEE, Role.ADMIN}),
    "cadre.household_card": frozenset({Role.CADRE, Role.COMMITTEE, Role.ADMIN}),
    "villager.card": frozenset({Role.VILLAGER}),
    # The shop: the counter is the clerks'; the catalogue and the day's report are also the
    # town administrator's; old redemptions are voided by the village's committee.
    "clerk.counter": frozenset({Role.CLERK}),
    "clerk.lookup": frozenset({Role.CLERK}),
    "clerk.confirm_household": frozenset({Role.CLERK}),
    "clerk.cart": frozenset({Role.CLERK}),
    "clerk.checkout": frozenset({Role.CLERK}),
    "clerk.redemption": frozenset({Role.CLERK, Role.COMMITTEE}),
    "clerk.receipt": frozenset({Role.CLERK, Role.COMMITTEE}),
    "clerk.void": frozenset({Role.CLERK, Role.COMMITTEE}),
    "clerk.items": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.new_item": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.item": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.edit_item": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.intake": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.write_off": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.shop_settings": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.day": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.day_xlsx": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.day_csv": frozenset({Role.CLERK, Role.ADMIN}),
    "clerk.close_day": frozenset({Role.CLERK}),
    "clerk.goods_photo": ANYONE,
    # Notice boards: the committee publishes; the village's public pages need no login.
    "committee.boards": frozenset({Role.COMMITTEE}),
    "committee.preview_board": frozenset({Role.COMMITTEE}),
    "committee.publish_board": frozenset({Role.COMMITTEE}),
    "committee.publish_courtyard": frozenset({Role.COMMITTEE}),
    "public.village": PUBLIC,
    "public.board": PUBLIC,
    # The villager's own pages; the display switch is for every browser, logged in or not; a
    # household's paper statement is for its cadres and committee and the clerks serving it.
    "villager.history": frozenset({Role.VILLAGER}),
    "villager.shop": frozenset({Role.VILLAGER}),
    "auth.display": ANYONE,
    "main.statement": Hidden({Role.CADRE, Role.COMMITTEE, Role.CLERK}),
    # Reports: a town's administrators (the town and everything in it) and a village's
    # committee (the village and its groups); the audit log: administrators, read only.
    "admin.reports": frozenset({Role.ADMIN, Role.COMMITTEE}),
    "admin.reports_xlsx": frozenset({Role.ADMIN, Role.COMMITTEE}),
    "admin.reports_csv": frozenset({Role.ADMIN, Role.COMMITTEE}),
    "admin.audit": frozenset({Role.ADMIN}),
    "admin.audit_xlsx": frozenset({Role.ADMIN}),
    "admin.audit_csv": frozenset({Role.ADMIN}),
    "admin.tokens": frozenset({Role.ADMIN}),
    "admin.new_token": frozenset({Role.ADMIN}),
    "admin.new_household_token": frozenset({Role.ADMIN}),
    "admin.revoke_token": frozenset({Role.ADMIN}),
}

#: How to fill each URL argument from the objects of one place (see Place below).
ARGUMENTS = {
    "transfer_id": lambda place: place.pending.id,
    "household_id": lambda place: place.household.id,
    "member_id": lambda place: place.household.members[0].id,
    "group_id": lambda place: place.group.id,
    "village_id": lambda place: place.village.id,
    "shop_id": lambda place: place.shop.id,
    "claim_id": lambda place: submitted(place, "claim").id,
    "report_id": lambda place: submitted(place, "report").id,
    "token": lambda place: village_photo(place).token,
    "rating_round_id": lambda place: open_rating_round(place).id,
    "rule_id": lambda place: a_rule(place, town=False).id,
    "template_id": lambda place: a_rule(place, town=True).id,
    "town_id": lambda place: place.village.town_id,
    "inspection_round_id": lambda place: open_inspection_round(place).id,
    "item_id": lambda place: shop_item(place).id,
    "redemption_id": lambda place: a_redemption(place).id,
    "goods_token": lambda place: shop_item(place).photo_token,
    "board_id": lambda place: a_board(place).id,
    "user_id": lambda place: place.users[Role.CADRE].id,
    "grant_id": lambda place: place.users[Role.CADRE].grants[0].id,
    "token_id": lambda place: an_api_token(place).id,
}


def an_api_token(place):
    """Return an API token of the place's shop (the same one again)."""
    import sqlalchemy as sa

    from pointsmart.models import ApiToken
    from pointsmart.services import api_tokens

    token = db.session.scalar(
        sa.select(ApiToken).where(ApiToken.town_id == place.village.town_id).limit(1)
    )
    if token is None:
        token = api_tokens.issue(place.users[Role.ADMIN], "矩阵", Role.CLERK, place.shop).token
        db.session.commit()
    return token


def a_board(place):
    """Return a published board of the place's village (the same one again)."""
    from pointsmart.services import boards, rankings

    board = next(iter(boards.published(place.village)), None)
    if board is None:
        month = rankings.this_month()
        board = boards.publish_monthly(place.village, month, place.users[Role.COMMITTEE])
        db.session.commit()
    return board


def shop_item(place):
    """Return an item of the place's shop, with stock and a photo (the same one again)."""
    import io

    import sqlalchemy as sa
    from PIL import Image

    from pointsmart.models import Item
    from pointsmart.services import catalogue

    item = db.session.scalar(sa.select(Item).where(Item.shop_id == place.shop.id))
    if item is None:
        clerk = place.users[Role.CLERK]
        item = catalogue.create_item(place.shop, catalogue.ItemData("肥皂", "日用品", 5), clerk)
        catalogue.receive(item, clerk, quantity_=50, key=f"matrix-stock-{place.shop.id}")
        image = io.BytesIO()
        Image.new("RGB", (8, 8), "blue").save(image, "PNG")
        catalogue.set_item_photo(item, image.getvalue(), clerk)
        db.session.commit()
    return item


def a_redemption(place):
    """Return a redemption of the place's household at its shop (the same one again)."""
    from pointsmart.services import redemptions

    redemption = redemptions.find(f"matrix-sale-{place.shop.id}")
    if redemption is None:
        transfer = ledger.record(
            kind=TransferKind.AWARD,
            household=place.household,
            points=50,
            reason="植树",
            recorded_by=place.users[Role.CADRE],
            key=f"matrix-fund-{place.shop.id}",
        )
        ledger.post(transfer, place.users[Role.COMMITTEE])
        redemption, _ = redemptions.checkout(
            shop=place.shop,
            household=place.household,
            cart={shop_item(place).id: 1},
            clerk=place.users[Role.CLERK],
            key=f"matrix-sale-{place.shop.id}",
        )
        db.session.commit()
    return redemption


def a_rule(place, town: bool):
    """Return a rule of the place's village, or a template of its town (the same one again)."""
    import sqlalchemy as sa

    from pointsmart.models import Category, ScoringRule
    from pointsmart.services import rules

    if town:
        owner = ScoringRule.town_id == place.village.town_id
    else:
        owner = ScoringRule.village_id == place.village.id
    rule = db.session.scalar(sa.select(ScoringRule).where(owner).limit(1))
    if rule is None:
        data = rules.RuleData("矩阵细则", Category.OTHER, 5)
        if town:
            rule = rules.create(data, place.users[Role.ADMIN], town=place.village.town)
        else:
            rule = rules.create(data, place.users[Role.COMMITTEE], village=place.village)
        db.session.commit()
    return rule


def submitted(place, kind: str):
    """Return a claim or report of the place's villager (the same one again)."""
    from pointsmart.services import submissions

    villager, key = place.users[Role.VILLAGER], f"matrix-{kind}-{place.village.id}"
    if kind == "claim":
        record = submissions.submit_claim(villager, "打扫巷道", key=key)
    else:
        record = submissions.submit_report(villager, "乱倒垃圾", "河边", key=key)
    db.session.commit()
    return record


def village_photo(place):
    """Return an evidence photo of the place's village (the same one again)."""
    import io

    import sqlalchemy as sa
    from PIL import Image

    from pointsmart.models import Photo
    from pointsmart.services import photos

    photo = db.session.scalar(sa.select(Photo).where(Photo.village_id == place.village.id))
    if photo is None:
        image = io.BytesIO()
        Image.new("RGB", (8, 8), "green").save(image, "PNG")
        photo = photos.store(
            image.getvalue(), uploader=place.users[Role.VILLAGER], village=place.village
        )
        db.session.commit()
    return photo


def open_rating_round(place):
    """Return an open courtyard rating round of the place's village (the same one again)."""
    from pointsmart.services import ratings

    round_ = ratings.open_round(place.village, title="矩阵", opener=place.users[Role.COMMITTEE])
    db.session.commit()
    return round_


def open_inspection_round(place):
    """Return an open inspection round of the place's group (the same one again)."""
    from pointsmart.services import rounds

    round_ = rounds.open_round(place.group, place.users[Role.CADRE], "矩阵巡查")
    db.session.commit()
    return round_


#: Form fields a POST may need to get past validation to the access decision.
FORM = {"reason": "核对", "locale": "en"}


def _rules():
    app = create_app(app_config("sqlite://"))
    # The JSON API authenticates by token, not by login: tests/test_api_access.py is its matrix.
    rules = [
        r
        for r in app.url_map.iter_rules()
        if r.endpoint != "static" and not r.rule.startswith("/api/")
    ]
    return sorted(rules, key=lambda r: (r.rule, r.endpoint))


RULES = _rules()


@dataclass
class Place:
    """One village of one town with a household, a shop, a pending award and a user per role."""

    village: object
    group: object
    household: object
    shop: object
    pending: object
    users: dict[Role, object]


def build_place(make) -> Place:
    village = make.village(make.town())
    group = make.group(village)
    household = make.household(group)
    shop = make.shop(village)
    users = {
        Role.VILLAGER: make.villager(household),
        Role.CADRE: make.staff(Role.CADRE, village),
        Role.COMMITTEE: make.staff(Role.COMMITTEE, village),
        Role.CLERK: make.staff(Role.CLERK, shop),
        Role.ADMIN: make.staff(Role.ADMIN, village.town),
    }
    pending = ledger.record(
        kind=TransferKind.AWARD,
        household=household,
        points=5,
        reason="垃圾分类",
        recorded_by=users[Role.CADRE],
        key=f"matrix-{village.id}",
    )
    return Place(village, group, household, shop, pending, users)


def url_for_place(rule, place: Place) -> str:
    """Return the rule's URL with its arguments taken from the objects of ``place``."""
    missing = rule.arguments - ARGUMENTS.keys()
    assert not missing, (
        f"{rule.rule} takes {sorted(missing)}: add a builder to ARGUMENTS in {__file__}"
    )
    _domain, path = rule.build({name: ARGUMENTS[name](place) for name in rule.arguments})
    return path


def expected_outcome(access, method: str, rule, role: Role | None, where: str) -> str:
    """Return what a request should get: ok, done, login, home, forbidden, not found or 405.

    ``role`` is the identity's role (None for anonymous); ``where`` says whether the user
    belongs to the place the URL's objects come from ("home") or to another town ("away").
    """
    if method not in rule.methods:
        return "405"
    if access == PUBLIC:
        return "public"
    if access == ANYONE:
        return "done"  # logging out answers everyone with the login page
    if role is None:
        return "ok" if access == LOGIN_PAGE else "login"
    if access == LOGIN_PAGE:
        return "home"
    if access != ANY_USER and role not in access:
        return "not found" if isinstance(access, Hidden) else "forbidden"
    if rule.arguments and where == "away":
        return "not found"  # another village's objects: not even their existence is told
    return "ok"


def matches(outcome: str, response) -> bool:
    status, location = response.status_code, response.headers.get("Location", "")
    return {
        # A page answers 200; an action, or "/" that only sends a user on, redirects.
        "ok": status == 200 or (status == 302 and not location.startswith("/login")),
        "done": status in (200, 302),
        "public": status == 200,
        "login": status == 302 and location.startswith("/login"),
        "home": status == 302 and location == "/",
        "forbidden": status == 403,
        "not found": status == 404,
        "405": status == 405,
    }[outcome]


def identities(access, home: Place, away: Place):
    """Yield (label, user, role, where): anonymous, each role at home, outsiders from away."""
    yield "anonymous", None, None, "home"
    for role, user in home.users.items():
        yield f"{role.value}", user, role, "home"
    outsiders = access if isinstance(access, frozenset) else {Role.COMMITTEE}
    for role in sorted(outsiders):
        yield f"{role.value} of another town", away.users[role], role, "away"


def test_every_route_has_an_expectation_and_no_entry_is_stale():
    endpoints = {rule.endpoint for rule in RULES}
    assert not endpoints - EXPECTED.keys(), (
        f"routes without an access expectation: {sorted(endpoints - EXPECTED.keys())}; "
        "declare who may open them in EXPECTED in tests/test_access_matrix.py"
    )
    assert not EXPECTED.keys() - endpoints, f"stale entries: {sorted(EXPECTED.keys() - endpoints)}"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.endpoint}:{r.rule}")
def test_access_matrix(app, make, rule):
    assert rule.endpoint in EXPECTED, (
        f"{rule.rule} ({rule.endpoint}) has no access expectation; "
        "declare who may open it in EXPECTED in tests/test_access_matrix.py"
    )
    access = EXPECTED[rule.endpoint]
    home, away = build_place(make), build_place(make)
    db.session.commit()

    # A GET is tried on every route (405 where it is not allowed); a POST only on action
    # routes, as the login forms' POSTs have tests of their own.
    methods = ["GET"] if "GET" in rule.methods else ["GET", "POST"]
    failures = []
    for label, user, role, where in identities(access, home, away):
        client = app.test_client()
        if user is not None:
            login(client, user)
        urls = [(url_for_place(rule, home), where)]
        if rule.arguments and where == "home" and role is not None:
            urls.append((url_for_place(rule, away), "away"))  # the right role, another village
        for url, objects_from in urls:
            for method in methods:
                outcome = expected_outcome(access, method, rule, role, objects_from)
                response = client.open(url, method=method, data=FORM if method == "POST" else None)
                if not matches(outcome, response):
                    failures.append(
                        f"{label:<28} {method:<4} {url:<40} expected {outcome}, got "
                        f"{response.status_code} {response.headers.get('Location', '')}"
                    )
    assert not failures, f"{rule.rule} ({rule.endpoint}):\n" + "\n".join(failures)
