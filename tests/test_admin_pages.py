"""Administration pages: villages, groups, shops, staff accounts, villager logins and the one-time
PIN slip, the village settings page and the clearing notice on the villager's home."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import (
    AuditEntry,
    ClearingRun,
    Role,
    RoleGrant,
    Shop,
    User,
    Village,
    VillagerGroup,
)
from pointsmart.services import accounts, ledger, places
from pointsmart.timeutil import local_today
from tests.conftest import PASSWORD, PIN, login

PIN_RE = re.compile(r'id="slip-pin">(\d{6})<')


@pytest.fixture
def w(make):
    town = make.town("青山镇")
    village = make.village(town, "青山村")
    group = make.group(village, "一组")
    household = make.household(group, "王建国", phone="13900001111")
    shop = make.shop(village)
    far_town = make.town("绿水镇")
    far_village = make.village(far_town, "绿水村")
    far_group = make.group(far_village, "二组")
    world = SimpleNamespace(
        town=town,
        village=village,
        group=group,
        household=household,
        head=household.members[0],
        member=places.add_member(household, "王小明"),
        shop=shop,
        admin=make.staff(Role.ADMIN, town, username="admin1"),
        cadre=make.staff(Role.CADRE, village, username="cadre1"),
        committee=make.staff(Role.COMMITTEE, village, username="committee1"),
        far_town=far_town,
        far_village=far_village,
        far_group=far_group,
        far_household=make.household(far_group, "远方户"),
        far_shop=make.shop(far_village),
        far_admin=make.staff(Role.ADMIN, far_town, username="admin2"),
        far_committee=make.staff(Role.COMMITTEE, far_village, username="committee2"),
    )
    world.villager = make.villager(household, phone="13900001111")
    db.session.commit()
    return world


@pytest.fixture
def as_user(app):
    """Return a new client logged in as a user, reading English pages."""

    def log_in(user):
        client = app.test_client()
        login(client, user)
        client.post("/language", data={"locale": "en", "next": "/"})
        return client

    return log_in


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def actions(name: str) -> list[AuditEntry]:
    return list(
        db.session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == name).order_by(AuditEntry.id)
        )
    )


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def key_of(page: str, form_action: str) -> str:
    form = re.search(rf'action="{re.escape(form_action)}".*?</form>', page, re.S).group(0)
    return re.search(r'name="key" type="hidden" value="([0-9a-f]+)"', form).group(1)


# --- scope -----------------------------------------------------------------------------------


def scoped_urls(w) -> list[tuple[str, str]]:
    return [
        ("GET", f"/admin/villages/{w.village.id}"),
        ("POST", f"/admin/villages/{w.village.id}/rename"),
        ("POST", f"/admin/villages/{w.village.id}/groups"),
        ("POST", f"/admin/towns/{w.town.id}/villages"),
        ("GET", f"/admin/groups/{w.group.id}"),
        ("POST", f"/admin/groups/{w.group.id}/rename"),
        ("GET", f"/admin/households/{w.household.id}"),
        ("POST", f"/admin/members/{w.member.id}/login"),
        ("POST", f"/admin/members/{w.head.id}/pin"),
        ("POST", f"/admin/shops/{w.shop.id}/deactivate"),
        ("POST", f"/admin/shops/{w.shop.id}/activate"),
        ("GET", f"/admin/staff/{w.cadre.id}"),
        ("POST", f"/admin/staff/{w.cadre.id}/roles"),
        ("POST", f"/admin/staff/{w.cadre.id}/roles/{w.cadre.grants[0].id}/remove"),
        ("POST", f"/admin/staff/{w.cadre.id}/deactivate"),
        ("POST", f"/admin/staff/{w.cadre.id}/reactivate"),
        ("POST", f"/admin/staff/{w.cadre.id}/password"),
        ("GET", f"/committee/villages/{w.village.id}/settings"),
        ("POST", f"/committee/villages/{w.village.id}/settings"),
        ("POST", f"/committee/villages/{w.village.id}/clearing"),
        ("POST", f"/committee/villages/{w.village.id}/clearing/run"),
    ]


def test_an_administrator_of_another_town_gets_404_everywhere(w, as_user):
    client = as_user(w.far_admin)
    entries = count(AuditEntry)
    for method, url in scoped_urls(w):
        data = {
            "name": "外来",
            "phone": "13900005555",
            "key": "k" * 32,
            "role": "cadre",
            "place": f"village:{w.village.id}",
            "password": "long enough pw",
            "month": "12",
            "day": "31",
            "auto_approve_max": "5",
        }
        response = client.open(url, method=method, data=data if method == "POST" else None)
        assert response.status_code == 404, (method, url, response.status_code)
    db.session.expire_all()
    assert count(AuditEntry) == entries
    assert w.village.name == "青山村" and w.cadre.is_active and len(w.cadre.grants) == 1
    assert w.village.clearing_month is None and w.village.auto_approve_max is None


def test_lists_show_only_the_administrators_town(w, as_user):
    client = as_user(w.admin)
    villages = text(client.get("/admin/villages/"))
    assert "青山村" in villages and "绿水村" not in villages
    shops = text(client.get("/admin/shops/"))
    assert w.shop.name in shops and w.far_shop.name not in shops
    staff = text(client.get("/admin/staff/"))
    assert "cadre1" in staff and "admin2" not in staff and "committee2" not in staff


def test_a_role_for_a_place_of_another_town_is_refused(w, as_user):
    client = as_user(w.admin)
    response = client.post(
        f"/admin/staff/{w.cadre.id}/roles",
        data={"role": "cadre", "place": f"village:{w.far_village.id}"},
        follow_redirects=True,
    )
    assert "That place is not in a town you administer." in text(response)
    db.session.expire_all()
    assert len(w.cadre.grants) == 1 and not actions("account.grant")


# --- villages and groups -----------------------------------------------------------------------


def test_add_and_rename_villages_and_groups(w, as_user):
    client = as_user(w.admin)
    response = client.post(f"/admin/towns/{w.town.id}/villages", data={"name": "白云村"})
    village = db.session.scalar(sa.select(Village).where(Village.name == "白云村"))
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/villages/{village.id}"
    page = text(client.get(response.headers["Location"]))
    assert "Village added: 白云村." in page

    client.post(f"/admin/villages/{village.id}/groups", data={"name": "三组"})
    client.post(f"/admin/villages/{village.id}/rename", data={"name": "白云新村"})
    group = db.session.scalar(sa.select(VillagerGroup).where(VillagerGroup.name == "三组"))
    client.post(f"/admin/groups/{group.id}/rename", data={"name": "第三组"})
    db.session.expire_all()
    assert village.name == "白云新村" and group.name == "第三组"
    page = text(client.get(f"/admin/villages/{village.id}"))
    assert "第三组" in page and "白云新村" in page
    for action in ("village.create", "group.create", "village.rename", "group.rename"):
        assert [e.actor_id for e in actions(action)] == [w.admin.id], action


@pytest.mark.parametrize(
    ("url", "name", "message"),
    [
        ("villages", "青山村", "青山镇 already has a village named 青山村."),
        ("villages", "  ", "The village name must be 1 to 60 characters."),
        ("groups", "一组", "青山村 already has a group named 一组."),
        ("groups", "", "The group name must be 1 to 60 characters."),
        ("rename", "", "The village name must be 1 to 60 characters."),
    ],
)
def test_bad_names_are_explained_and_change_nothing(w, as_user, url, name, message):
    client = as_user(w.admin)
    target = {
        "villages": f"/admin/towns/{w.town.id}/villages",
        "groups": f"/admin/villages/{w.village.id}/groups",
        "rename": f"/admin/villages/{w.village.id}/rename",
    }[url]
    villages, groups, entries = count(Village), count(VillagerGroup), count(AuditEntry)
    page = text(client.post(target, data={"name": name}, follow_redirects=True))
    assert message in page
    db.session.expire_all()
    assert (count(Village), count(VillagerGroup), count(AuditEntry)) == (villages, groups, entries)
    assert w.village.name == "青山村"


def test_the_households_of_a_group_paginate_and_search(w, as_user, make):
    for n in range(35):
        places.create_household(w.group, str(n + 2), f"户{n + 2:02d}")
    db.session.commit()
    client = as_user(w.admin)
    first = text(client.get(f"/admin/groups/{w.group.id}"))
    assert "page 1 of 2" in first and "No. 2<" in first and "No. 10<" in first
    second = text(client.get(f"/admin/groups/{w.group.id}?page=2"))
    assert "page 2 of 2" in second and "户36" in second and "户02" not in second
    beyond = client.get(f"/admin/groups/{w.group.id}?page=99")
    assert beyond.status_code == 200 and "page 2 of 2" in text(beyond)
    found = text(client.get(f"/admin/groups/{w.group.id}?q=13900001111"))
    assert "王建国" in found and "户02" not in found


# --- shops ---------------------------------------------------------------------------------------


def test_add_close_and_reopen_shops(w, as_user):
    client = as_user(w.admin)
    client.post("/admin/shops/new", data={"name": "镇中心超市", "serves": f"town:{w.town.id}"})
    client.post("/admin/shops/new", data={"name": "青山二店", "serves": f"village:{w.village.id}"})
    town_shop = db.session.scalar(sa.select(Shop).where(Shop.name == "镇中心超市"))
    village_shop = db.session.scalar(sa.select(Shop).where(Shop.name == "青山二店"))
    assert town_shop.village_id is None and town_shop.town_id == w.town.id
    assert village_shop.village_id == w.village.id
    page = text(client.get("/admin/shops/"))
    for shop in (town_shop, village_shop):
        for link in ("items", "day", "settings"):
            assert f"/clerk/shops/{shop.id}/{link}" in page

    page = text(client.post(f"/admin/shops/{w.shop.id}/deactivate", follow_redirects=True))
    assert "is closed" in page
    db.session.expire_all()
    assert not w.shop.is_active
    client.post(f"/admin/shops/{w.shop.id}/activate")
    db.session.expire_all()
    assert w.shop.is_active
    assert len(actions("shop.create")) == 2
    assert len(actions("shop.deactivate")) == len(actions("shop.activate")) == 1


def test_a_shop_for_a_village_of_another_town_is_refused(w, as_user):
    client = as_user(w.admin)
    shops = count(Shop)
    page = text(
        client.post(
            "/admin/shops/new",
            data={"name": "外店", "serves": f"village:{w.far_village.id}"},
            follow_redirects=True,
        )
    )
    assert "That place is not in a town you administer." in page
    assert count(Shop) == shops


# --- staff accounts -----------------------------------------------------------------------------


def new_staff(**changes) -> dict:
    return {
        "username": "zhao.clerk",
        "display_name": "赵店员",
        "password": "good password",
        "role": "clerk",
        "place": "",
    } | changes


def test_create_a_staff_account_and_give_it_roles(w, as_user):
    client = as_user(w.admin)
    form = text(client.get("/admin/staff/new"))
    assert f'value="shop:{w.shop.id}"' in form and f"village:{w.far_village.id}" not in form
    response = client.post("/admin/staff/new", data=new_staff(place=f"shop:{w.shop.id}"))
    user = db.session.scalar(sa.select(User).where(User.username == "zhao.clerk"))
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/staff/{user.id}"
    assert accounts.authenticate_staff("zhao.clerk", "good password") is user

    client.post(
        f"/admin/staff/{user.id}/roles", data={"role": "cadre", "place": f"group:{w.group.id}"}
    )
    page = text(client.get(f"/admin/staff/{user.id}"))
    assert "Shop clerk" in page and "青山村 · 一组" in page
    listed = text(client.get("/admin/staff/?q=zhao"))
    assert "赵店员" in listed and "cadre1" not in listed
    assert actions("account.create") and actions("account.grant")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"username": "cadre1"}, "That username is taken."),
        ({"password": "short"}, "The password must have at least 8 characters."),
        ({"display_name": " "}, "The name must be 1 to 60 characters."),
        ({"username": "a b"}, "Usernames are 3 to 40 letters"),
        ({"role": "clerk", "place": "village:{village}"}, "A clerk serves a shop: choose a shop."),
        (
            {"role": "committee", "place": "group:{group}"},
            "A committee member serves a village: choose a village.",
        ),
        ({"role": "villager", "place": "village:{village}"}, "Choose a staff role."),
        ({"role": "cadre", "place": ""}, "Choose a place."),
        (
            {"role": "cadre", "place": "village:{far}"},
            "That place is not in a town you administer.",
        ),
    ],
)
def test_bad_staff_accounts_are_explained_and_nothing_is_made(w, as_user, changes, message):
    client = as_user(w.admin)
    changes = {
        k: v.format(village=w.village.id, group=w.group.id, far=w.far_village.id)
        for k, v in changes.items()
    }
    data = new_staff(place=f"shop:{w.shop.id}") | changes
    users, grants = count(User), count(RoleGrant)
    response = client.post("/admin/staff/new", data=data)
    assert response.status_code == 200
    assert message in text(response)
    assert (count(User), count(RoleGrant)) == (users, grants)
    assert 'value="good password"' not in text(response)  # a password is never sent back


def test_the_last_role_is_not_removed_silently(w, as_user):
    client = as_user(w.admin)
    grant = w.cadre.grants[0]
    page = text(
        client.post(f"/admin/staff/{w.cadre.id}/roles/{grant.id}/remove", follow_redirects=True)
    )
    assert "This is the account's only role, so it was not removed" in page
    db.session.expire_all()
    assert [g.id for g in w.cadre.grants] == [grant.id]


def test_a_deactivated_account_is_logged_out_at_once_and_cannot_log_in(w, as_user, app):
    cadre_client = as_user(w.cadre)
    assert cadre_client.get("/cadre/").status_code == 200
    admin = as_user(w.admin)
    page = text(admin.post(f"/admin/staff/{w.cadre.id}/deactivate", follow_redirects=True))
    assert "account is deactivated" in page and "deactivated: cannot log in" in page

    stopped = cadre_client.get("/cadre/")
    assert stopped.status_code == 302 and stopped.headers["Location"].startswith("/login")
    fresh = app.test_client()
    response = fresh.post("/login/staff", data={"username": "cadre1", "password": PASSWORD})
    assert response.status_code == 200  # the form again, with its message; no session
    assert fresh.get("/cadre/").status_code == 302
    assert actions("account.deactivate")[0].actor_id == w.admin.id

    admin.post(f"/admin/staff/{w.cadre.id}/reactivate")
    again = app.test_client()
    response = again.post("/login/staff", data={"username": "cadre1", "password": PASSWORD})
    assert response.status_code == 302
    assert again.get("/cadre/").status_code == 200
    assert actions("account.reactivate")


def test_reset_a_staff_password(w, as_user, app):
    cadre_client = as_user(w.cadre)
    admin = as_user(w.admin)
    page = text(
        admin.post(
            f"/admin/staff/{w.cadre.id}/password",
            data={"password": "short"},
            follow_redirects=True,
        )
    )
    assert "The password must have at least 8 characters." in page
    assert accounts.authenticate_staff("cadre1", PASSWORD) is not None
    admin.post(f"/admin/staff/{w.cadre.id}/password", data={"password": "a new password"})
    assert cadre_client.get("/cadre/").status_code == 302
    assert accounts.authenticate_staff("cadre1", "a new password") is not None
    assert accounts.authenticate_staff("cadre1", PASSWORD) is None
    assert actions("account.reset_password")


# --- villager logins and the one-time slip ------------------------------------------------------


def test_create_a_login_shows_the_pin_once(w, as_user):
    client = as_user(w.admin)
    page = text(client.get(f"/admin/households/{w.household.id}"))
    url = f"/admin/members/{w.member.id}/login"
    data = {"phone": "13900002222", "key": key_of(page, url)}
    users = count(User)
    response = client.post(url, data=data)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    slip = text(response)
    pin = PIN_RE.search(slip).group(1)
    assert "王小明" in slip and "13900002222" in slip
    user = accounts.authenticate_villager("13900002222", pin)
    assert user is not None and user.member_id == w.member.id
    assert pin not in (user.pin_hash or "")

    again = client.post(url, data=data)  # the browser's refresh sends the form again
    assert again.status_code == 302
    followed = text(client.get(again.headers["Location"]))
    assert pin not in followed and "not shown again" in followed
    assert count(User) == users + 1  # one account, made once
    assert accounts.authenticate_villager("13900002222", pin) is user
    assert len(actions("villager.create_login")) == 1
    assert client.get(url).status_code == 405  # the slip has no address to come back to


def test_reset_pin_shows_a_new_pin_once_and_ends_the_villagers_sessions(w, as_user):
    villager = as_user(w.villager)
    assert villager.get("/me/").status_code == 200
    client = as_user(w.admin)
    page = text(client.get(f"/admin/households/{w.household.id}"))
    url = f"/admin/members/{w.head.id}/pin"
    data = {"key": key_of(page, url)}
    response = client.post(url, data=data)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    slip = text(response)
    pin = PIN_RE.search(slip).group(1)
    assert "王建国" in slip and "13900001111" in slip and local_today().strftime("%Y") in slip

    assert villager.get("/me/").status_code == 302  # logged out at once
    assert accounts.authenticate_villager("13900001111", pin) == w.villager
    if pin != PIN:
        assert accounts.authenticate_villager("13900001111", PIN) is None

    refresh = client.post(url, data=data)
    assert refresh.status_code == 302
    assert pin not in text(client.get(refresh.headers["Location"]))
    assert accounts.authenticate_villager("13900001111", pin) == w.villager  # not reset twice
    assert len(actions("villager.reset_pin")) == 1


@pytest.mark.parametrize(
    ("phone", "message"),
    [
        ("12345", "Please enter an 11-digit mobile number."),
        ("13900001111", "That phone number already has an account."),
    ],
)
def test_bad_phones_are_explained_and_no_login_is_made(w, as_user, phone, message):
    client = as_user(w.admin)
    page = text(client.get(f"/admin/households/{w.household.id}"))
    url = f"/admin/members/{w.member.id}/login"
    users = count(User)
    response = client.post(url, data={"phone": phone, "key": key_of(page, url)})
    assert response.status_code == 302
    assert message in text(client.get(response.headers["Location"]))
    assert count(User) == users and not actions("villager.create_login")


# --- village settings ---------------------------------------------------------------------------


def settings(**changes) -> dict:
    base = {"auto_approve_max": "", "two_approver_min": "", "board_names": "masked"}
    return base | changes


@pytest.mark.parametrize("who", ["admin", "committee"])
def test_the_admin_and_the_committee_keep_the_village_settings(w, as_user, who):
    client = as_user(getattr(w, who))
    page = text(client.get(f"/committee/villages/{w.village.id}/settings"))
    assert "Settings of 青山村" in page
    # The exchange window page is the shop managers': the town's admin, not the committee.
    assert (f"/clerk/shops/{w.shop.id}/settings" in page) == (who == "admin")
    assert "every day, all day" in page  # the shop's exchange window, in words
    response = client.post(
        f"/committee/villages/{w.village.id}/settings",
        data=settings(auto_approve_max="5", two_approver_min="40", allow_negative_balance="yes"),
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert w.village.allow_negative_balance
    assert (w.village.auto_approve_max, w.village.two_approver_min) == (5, 40)
    assert actions("settings.negative_balance")[0].actor_id == getattr(w, who).id
    assert actions("settings.approval")[0].actor_id == getattr(w, who).id

    response = client.post(
        f"/committee/villages/{w.village.id}/clearing", data={"month": "12", "day": "31"}
    )
    page = text(client.get(response.headers["Location"]))
    db.session.expire_all()
    assert (w.village.clearing_month, w.village.clearing_day) == (12, 31)
    assert "Saved: the next clearing of 青山村 is on" in page
    assert "at least 30 days after the date is set" in page
    assert actions("clearing.set_date")


def test_a_bad_clearing_date_is_explained(w, as_user):
    client = as_user(w.committee)
    response = client.post(
        f"/committee/villages/{w.village.id}/clearing", data={"month": "2", "day": "30"}
    )
    page = text(client.get(response.headers["Location"]))
    assert "There is no such day in every year" in page
    db.session.expire_all()
    assert w.village.clearing_month is None and not actions("clearing.set_date")


def test_cadres_and_other_villages_are_refused_the_settings(w, as_user):
    cadre = as_user(w.cadre)
    for url in (
        f"/committee/villages/{w.village.id}/settings",
        f"/committee/villages/{w.village.id}/clearing",
        f"/committee/villages/{w.village.id}/clearing/run",
    ):
        assert cadre.open(url, method="POST", data={"month": "1", "day": "1"}).status_code == 403
    assert cadre.get(f"/committee/villages/{w.village.id}/settings").status_code == 403
    far = as_user(w.far_committee)
    assert far.get(f"/committee/villages/{w.village.id}/settings").status_code == 404
    db.session.expire_all()
    assert w.village.clearing_month is None


def clearing_on(village, when, announced_days_ago: int) -> None:
    village.clearing_month, village.clearing_day = when.month, when.day
    village.clearing_set_on = local_today() - timedelta(days=announced_days_ago)


def not_29_february(when):
    return when + timedelta(days=1) if (when.month, when.day) == (2, 29) else when


def test_the_due_clearing_runs_from_the_settings_page_once(w, as_user, make):
    make.funded(w.household, 30, recorder=w.cadre, approver=w.committee)
    today = local_today()
    if (today.month, today.day) == (2, 29):
        pytest.skip("no yearly clearing date falls on 29 February")
    clearing_on(w.village, today, announced_days_ago=40)
    db.session.commit()
    client = as_user(w.admin)
    page = text(client.get(f"/committee/villages/{w.village.id}/settings"))
    assert "Run the due clearing now" in page and "No clearing has run yet." in page
    response = client.post(f"/committee/villages/{w.village.id}/clearing/run")
    page = text(client.get(response.headers["Location"]))
    assert "30 points of 1 households" in page
    assert "Run the due clearing now" not in page
    assert ledger.balance_of(w.household).spendable == 0
    assert ledger.balance_of(w.household).honour == 30

    again = client.post(f"/committee/villages/{w.village.id}/clearing/run", follow_redirects=True)
    assert "No clearing is due in 青山村 now" in text(again)
    assert count(ClearingRun) == 1


def test_nothing_runs_when_no_clearing_is_due(w, as_user):
    client = as_user(w.committee)
    page = text(client.get(f"/committee/villages/{w.village.id}/settings"))
    assert "Run the due clearing now" not in page
    response = client.post(
        f"/committee/villages/{w.village.id}/clearing/run", follow_redirects=True
    )
    assert "No clearing is due in 青山村 now" in text(response)
    assert count(ClearingRun) == 0


# --- the clearing notice on the villager's home ---------------------------------------------------


def test_villagers_see_the_clearing_within_30_days_and_not_before(w, as_user, make):
    make.funded(w.household, 25, recorder=w.cadre, approver=w.committee)
    soon = not_29_february(local_today() + timedelta(days=10))
    clearing_on(w.village, soon, announced_days_ago=60)
    db.session.commit()
    client = as_user(w.villager)
    page = text(client.get("/me/"))
    assert 'id="clearing-notice"' in page
    assert f"Unspent points will be cleared on {soon.isoformat()}" in page
    assert "If it were today, 25 spendable points would be cleared." in page

    later = not_29_february(local_today() + timedelta(days=45))
    clearing_on(w.village, later, announced_days_ago=60)
    db.session.commit()
    page = text(client.get("/me/"))
    assert 'id="clearing-notice"' not in page and "will be cleared" not in page


def test_no_notice_without_a_clearing_date(w, as_user):
    page = text(as_user(w.villager).get("/me/"))
    assert 'id="clearing-notice"' not in page
