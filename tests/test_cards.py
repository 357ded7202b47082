"""Points cards: issue, reissue and resolve; card sheets in scope; a household's card page with
its reissue form; the villager's own card."""

from __future__ import annotations

import html
import math
import re
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import Card, Role
from pointsmart.services import cards, places
from pointsmart.services.errors import CardNotFound, CardRevoked, Forbidden, InvalidInput
from pointsmart.timeutil import local_today


@pytest.fixture
def w(make):
    village = make.village(name="青山村")
    group, other_group = make.group(village, "一组"), make.group(village, "二组")
    far = make.village(name="柳溪村")  # another town
    far_group = make.group(far, "远组")
    home = places.create_household(group, "1", "张一")
    world = SimpleNamespace(
        village=village,
        group=group,
        other_group=other_group,
        far=far,
        far_group=far_group,
        home=home,
        neighbour=places.create_household(group, "2", "张二"),
        other=places.create_household(other_group, "1", "李一"),
        far_household=places.create_household(far_group, "1", "王一"),
        cadre=make.staff(Role.CADRE, village),
        group_cadre=make.staff(Role.CADRE, group),
        committee=make.staff(Role.COMMITTEE, village),
        admin=make.staff(Role.ADMIN, village.town),
        far_cadre=make.staff(Role.CADRE, far),
        clerk=make.staff(Role.CLERK, make.shop(village)),
        villager=make.villager(home),
    )
    db.session.commit()
    return world


@pytest.fixture
def as_user(client, login_as):
    """Log in as a user, with English pages so messages can be compared."""

    def log_in(user):
        login_as(user)
        client.post("/language", data={"locale": "en", "next": "/"})
        return client

    return log_in


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def code_of(household) -> str:
    return cards.current_card(household).display_code


def page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?!s)", pdf))


# --- issue, reissue, resolve ------------------------------------------------------------------


def test_every_household_gets_an_unguessable_card(w):
    card = cards.current_card(w.home)
    assert re.fullmatch(r"[A-Z2-7]{26}", card.token)
    assert re.fullmatch(rf"[{cards.CODE_ALPHABET}]{{8}}", card.code)
    assert str(w.home.id) not in card.token
    assert card.display_code == f"{card.code[:4]}-{card.code[4:]}"
    assert cards.resolve(card.token) is card
    assert cards.resolve(card.code) is card


def test_reissue_stops_the_old_token_and_code_at_once(w):
    old = cards.current_card(w.home)
    old_token, old_code = old.token, old.code
    new = cards.reissue(w.home, w.cadre, "卡片丢失")
    db.session.commit()
    assert (new.token, new.code) != (old_token, old_code)
    for typed in (old_token, old_code, old.display_code):
        with pytest.raises(CardRevoked):
            cards.resolve(typed)
    assert cards.resolve(new.token) == new
    assert cards.resolve(new.code) == new
    old = db.session.get(Card, old.id)
    assert old.revoked_by == w.cadre and old.revoke_reason == "卡片丢失"
    assert cards.current_card(w.home) == new


@pytest.mark.parametrize("who", ["villager", "clerk", "far_cadre", "group_cadre_elsewhere"])
def test_reissue_by_someone_without_the_household_in_scope_is_refused(w, make, who):
    actor = (
        make.staff(Role.CADRE, w.other_group) if who == "group_cadre_elsewhere" else getattr(w, who)
    )
    before = cards.current_card(w.home).id
    with pytest.raises(Forbidden):
        cards.reissue(w.home, actor, "丢失")
    db.session.rollback()
    assert cards.current_card(w.home).id == before


def test_reissue_needs_a_reason(w):
    with pytest.raises(InvalidInput):
        cards.reissue(w.home, w.cadre, "   ")


def fullwidth(value: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)


@pytest.mark.parametrize(
    "typed",
    [
        lambda code: code.lower(),
        lambda code: f"{code[:4]}-{code[4:]}",
        lambda code: f" {code[:2]} {code[2:5]} {code[5:]} ",
        lambda code: fullwidth(code),
        lambda code: fullwidth(f"{code[:4]}-{code[4:]}".lower()),
    ],
    ids=["lower case", "dash", "spaces", "full width", "full width lower with dash"],
)
def test_a_typed_code_is_read_as_people_type_it(w, typed):
    card = cards.current_card(w.home)
    assert cards.resolve(typed(card.code)) == card


def test_a_scanned_token_in_lower_case_is_read(w):
    card = cards.current_card(w.home)
    assert cards.resolve(card.token.lower()) == card


@pytest.mark.parametrize("typed", ["hello", "12", "7KQ2M9X", "0OIL0OIL", "张三", "A" * 30])
def test_malformed_codes_say_what_a_code_looks_like(app, w, typed):
    with pytest.raises(InvalidInput) as error:
        cards.resolve(typed)
    with app.test_request_context(), force_locale("en"):
        assert "8 letters and digits" in str(error.value.message)


def test_an_empty_code_asks_for_one(app, w):
    with pytest.raises(InvalidInput) as error:
        cards.resolve("  - ")
    with app.test_request_context(), force_locale("en"):
        assert "Scan the card" in str(error.value.message)


def test_an_unknown_code_is_not_found(app, w):
    taken = {card.code for card in db.session.scalars(sa.select(Card))}
    unknown = next(c * 8 for c in cards.CODE_ALPHABET if c * 8 not in taken)
    with pytest.raises(CardNotFound) as error:
        cards.resolve(unknown)
    with app.test_request_context(), force_locale("en"):
        assert "No card has this code" in str(error.value.message)
    with pytest.raises(CardNotFound):
        cards.resolve("A" * 26)  # a well-formed token nobody holds


# --- the choice of what to print --------------------------------------------------------------


def test_the_cards_page_offers_the_users_groups_and_villages(w, as_user):
    page = text(as_user(w.cadre).get("/cadre/cards"))
    assert f"/cadre/cards/sheet?village_id={w.village.id}" in page
    assert f"/cadre/cards/sheet?group_id={w.group.id}" in page
    assert f"/cadre/cards/sheet?group_id={w.other_group.id}&format=pdf" in page
    assert f"group_id={w.far_group.id}" not in page
    assert 'name="since"' in page


def test_a_group_cadre_is_offered_their_group_only(w, as_user):
    page = text(as_user(w.group_cadre).get("/cadre/cards"))
    assert f"group_id={w.group.id}" in page
    assert f"group_id={w.other_group.id}" not in page
    assert "village_id=" not in page


def test_the_cadre_home_links_to_card_printing(w, as_user):
    assert "/cadre/cards" in text(as_user(w.cadre).get("/cadre/"))


# --- the card sheet ---------------------------------------------------------------------------


def test_the_sheet_of_a_group_shows_its_cards_only(w, as_user):
    response = as_user(w.cadre).get(f"/cadre/cards/sheet?group_id={w.group.id}")
    page = text(response)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    for household in (w.home, w.neighbour):
        assert code_of(household) in page
    assert code_of(w.other) not in page
    assert code_of(w.far_household) not in page
    assert page.count('class="points-card"') == 2
    assert page.count("<svg") == 2
    assert "<?xml" not in page
    assert 'class="sheet-page"' in page
    assert "js/print.js" in page and "css/cards.css" in page
    assert "onclick" not in page and "<script>" not in page


def test_a_group_cadre_does_not_get_another_groups_cards(w, as_user):
    client = as_user(w.group_cadre)
    assert client.get(f"/cadre/cards/sheet?group_id={w.other_group.id}").status_code == 404
    assert client.get(f"/cadre/cards/sheet?household_id={w.other.id}").status_code == 404
    assert client.get(f"/cadre/cards/sheet?village_id={w.village.id}").status_code == 404
    page = text(client.get(f"/cadre/cards/sheet?since={local_today().isoformat()}"))
    assert code_of(w.home) in page and code_of(w.neighbour) in page
    assert code_of(w.other) not in page
    assert f"Cards issued on or after {local_today().isoformat()}" in page


@pytest.mark.parametrize("arg", ["group_id", "village_id", "household_id"])
def test_a_cadre_of_another_village_gets_404(w, as_user, arg):
    target = {"group_id": w.group, "village_id": w.village, "household_id": w.home}[arg]
    client = as_user(w.far_cadre)
    for fmt in ("", "&format=pdf"):
        response = client.get(f"/cadre/cards/sheet?{arg}={target.id}{fmt}")
        assert response.status_code == 404
        assert code_of(w.home) not in text(response)


def test_unknown_or_malformed_ids_are_404(w, as_user):
    client = as_user(w.cadre)
    assert client.get("/cadre/cards/sheet?group_id=999999").status_code == 404
    assert client.get("/cadre/cards/sheet?village_id=abc").status_code == 404
    assert client.get("/cadre/cards/sheet?household_id=-1").status_code == 404


def test_the_town_admin_prints_any_village_of_the_town(w, as_user):
    page = text(as_user(w.admin).get(f"/cadre/cards/sheet?village_id={w.village.id}"))
    assert code_of(w.home) in page and code_of(w.other) in page


@pytest.mark.parametrize(
    "since, says",
    [
        ("yesterday", "is not a date"),
        ("2026-13-40", "is not a date"),
        ((local_today() + timedelta(days=1)).isoformat(), "is in the future"),
    ],
)
def test_a_bad_or_future_date_says_so(w, as_user, since, says):
    client = as_user(w.cadre)
    response = client.get(f"/cadre/cards/sheet?since={since}")
    assert response.status_code == 302 and response.headers["Location"] == "/cadre/cards"
    page = text(client.get("/cadre/cards"))
    assert says in page
    assert "Traceback" not in page


def test_nothing_to_print_says_so(w, as_user):
    w.other.is_active = False
    db.session.commit()
    client = as_user(w.cadre)
    for fmt in ("", "&format=pdf"):
        response = client.get(f"/cadre/cards/sheet?group_id={w.other_group.id}{fmt}")
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert "There are no cards to print" in text(response)


def test_no_choice_goes_back_to_the_choice(w, as_user):
    response = as_user(w.cadre).get("/cadre/cards/sheet")
    assert response.status_code == 302 and response.headers["Location"] == "/cadre/cards"


def test_the_pdf_is_an_attachment_with_a_chinese_safe_name(w, make, as_user):
    for n in range(3, 14):
        places.create_household(w.group, str(n), f"户{n}")
    db.session.commit()
    response = as_user(w.cadre).get(f"/cadre/cards/sheet?group_id={w.group.id}&format=pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Cache-Control"] == "no-store"
    pdf = response.data
    assert pdf.startswith(b"%PDF")
    assert page_count(pdf) == math.ceil(13 / 10)
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert disposition.isascii()  # a header must be; the Chinese name goes in filename*
    assert f'filename="points-cards-group-{w.group.id}.pdf"' in disposition
    name = unquote(disposition.split("filename*=UTF-8''")[1])
    assert name.endswith(".pdf") and "青山村一组" in name and "/" not in name


def test_a_since_pdf_has_a_page_per_ten_cards(w, as_user):
    response = as_user(w.admin).get(f"/cadre/cards/sheet?since={local_today()}&format=pdf")
    assert response.mimetype == "application/pdf"
    assert page_count(response.data) == 1
    assert f"points-cards-new-{local_today()}.pdf" in response.headers["Content-Disposition"]


# --- a household's card page and reissue ------------------------------------------------------


def test_the_household_card_page_shows_the_card_and_how_to_print_it(w, as_user):
    response = as_user(w.committee).get(f"/cadre/households/{w.home.id}/card")
    page = text(response)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert code_of(w.home) in page
    assert "<svg" in page
    assert f"/cadre/cards/sheet?household_id={w.home.id}" in page
    assert "when the household was added" in page
    assert "No card of this household has been replaced." in page


def test_the_household_page_links_to_its_card(w, as_user):
    page = text(as_user(w.cadre).get(f"/cadre/households/{w.home.id}"))
    assert f"/cadre/households/{w.home.id}/card" in page


def test_a_cadre_reissues_a_lost_card(w, as_user):
    client = as_user(w.cadre)
    old = cards.current_card(w.home)
    old_id, old_code = old.id, old.display_code
    response = client.post(
        f"/cadre/households/{w.home.id}/card", data={"reason": "赶集时丢失", "card_id": old_id}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/cadre/households/{w.home.id}/card"
    new = cards.current_card(w.home)
    assert new.id != old_id and new.issued_by == w.cadre
    with pytest.raises(CardRevoked):
        cards.resolve(old_code)
    page = text(client.get(response.headers["Location"]))
    assert f"A new card {new.display_code} was issued for 张一" in page
    current = re.search(r'id="current-code">([^<]+)<', page).group(1)
    assert current == new.display_code
    replaced = page.split('id="replaced"')[1]
    assert old_code in replaced and "赶集时丢失" in replaced
    assert w.cadre.display_name in replaced


def test_a_double_tapped_reissue_replaces_the_card_once(w, as_user):
    client = as_user(w.cadre)
    form = {"reason": "损坏", "card_id": cards.current_card(w.home).id}
    client.post(f"/cadre/households/{w.home.id}/card", data=form)
    first = cards.current_card(w.home).id
    response = client.post(f"/cadre/households/{w.home.id}/card", data=form, follow_redirects=True)
    assert cards.current_card(w.home).id == first
    assert "replaced a moment ago" in text(response)
    revoked = db.session.scalar(
        sa.select(sa.func.count(Card.id)).where(
            Card.household_id == w.home.id, Card.revoked_at.is_not(None)
        )
    )
    assert revoked == 1


def test_a_reissue_racing_a_colleagues_says_so_without_an_error(w, as_user, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    def collide(*args, **kwargs):
        # What the unique index on the card in force answers the second of two reissues.
        raise IntegrityError("INSERT INTO household_cards", {}, Exception("unique"))

    monkeypatch.setattr(cards, "reissue", collide)
    before = cards.current_card(w.home).id
    response = as_user(w.cadre).post(
        f"/cadre/households/{w.home.id}/card",
        data={"reason": "丢失", "card_id": before},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "replaced a moment ago" in text(response)
    assert cards.current_card(w.home).id == before


def test_a_reissue_without_a_reason_changes_nothing(w, as_user):
    before = cards.current_card(w.home).id
    response = as_user(w.cadre).post(
        f"/cadre/households/{w.home.id}/card", data={"reason": "", "card_id": before}
    )
    assert response.status_code == 200
    assert "Nothing was changed" in text(response)
    assert cards.current_card(w.home).id == before


def test_the_reissue_form_carries_a_csrf_token_that_is_checked(app, w, client, login_as):
    app.config["WTF_CSRF_ENABLED"] = True
    login_as(w.cadre)
    url = f"/cadre/households/{w.home.id}/card"
    page = client.get(url).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    before = cards.current_card(w.home).id
    data = {"reason": "丢失", "card_id": before}
    assert client.post(url, data=data).status_code == 400  # no token: refused
    assert cards.current_card(w.home).id == before
    assert client.post(url, data={**data, "csrf_token": token}).status_code == 302
    assert cards.current_card(w.home).id != before


@pytest.mark.parametrize("who", ["villager", "clerk"])
def test_a_villager_or_clerk_cannot_reissue(w, client, login_as, who):
    login_as(getattr(w, who))
    before = cards.current_card(w.home).id
    url = f"/cadre/households/{w.home.id}/card"
    assert client.post(url, data={"reason": "丢失", "card_id": before}).status_code == 403
    assert client.get(url).status_code == 403
    assert cards.current_card(w.home).id == before


def test_a_household_outside_the_scope_is_404(w, as_user):
    before = cards.current_card(w.home).id
    for user in (w.far_cadre, w.group_cadre):
        household = w.home if user is w.far_cadre else w.other
        url = f"/cadre/households/{household.id}/card"
        client = as_user(user)
        assert client.get(url).status_code == 404
        form = {"reason": "丢失", "card_id": cards.current_card(household).id}
        assert client.post(url, data=form).status_code == 404
    assert cards.current_card(w.home).id == before


def test_an_inactive_household_has_no_reissue_form(w, as_user):
    w.home.is_active = False
    db.session.commit()
    client = as_user(w.cadre)
    page = text(client.get(f"/cadre/households/{w.home.id}/card"))
    assert "This household is no longer active." in page
    assert "Reissue the card" not in page
    before = cards.current_card(w.home).id
    response = client.post(
        f"/cadre/households/{w.home.id}/card", data={"reason": "丢失", "card_id": before}
    )
    assert "no longer active" in text(response)
    assert cards.current_card(w.home).id == before


# --- the villager's own card ------------------------------------------------------------------


def test_the_villager_sees_their_own_card(w, as_user):
    response = as_user(w.villager).get("/me/card")
    page = text(response)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert code_of(w.home) in page
    assert "张一" in page and "一组" in page
    assert 'class="mc-qr"><svg' in page
    for household in (w.neighbour, w.other, w.far_household):
        assert code_of(household) not in page


def test_the_villager_home_links_to_the_card(w, as_user):
    assert "/me/card" in text(as_user(w.villager).get("/me/"))


def test_the_villager_never_opens_another_households_card(w, as_user):
    client = as_user(w.villager)
    assert client.get(f"/cadre/households/{w.neighbour.id}/card").status_code == 403
    assert client.get(f"/cadre/cards/sheet?household_id={w.neighbour.id}").status_code == 403
    assert client.get(f"/cadre/cards/sheet?household_id={w.home.id}").status_code == 403


def test_after_a_reissue_the_villager_sees_the_new_card(w, as_user):
    old = code_of(w.home)
    new = cards.reissue(w.home, w.cadre, "丢失")
    db.session.commit()
    page = text(as_user(w.villager).get("/me/card"))
    assert new.display_code in page and old not in page


def test_staff_cannot_open_the_villager_card_page(w, as_user):
    assert as_user(w.cadre).get("/me/card").status_code == 403
