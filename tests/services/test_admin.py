"""Town administration: scope, audit entries, refusals that change nothing, accounts and logins."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import (
    AuditEntry,
    BoardNames,
    LoginSession,
    Role,
    RoleGrant,
    Shop,
    User,
    Village,
    VillagerGroup,
)
from pointsmart.services import accounts, api_tokens, boards, places, rules
from pointsmart.services import admin as service
from pointsmart.services.errors import Forbidden, InvalidInput
from tests.conftest import PASSWORD, PIN


@pytest.fixture
def w(make):
    town = make.town("青山镇")
    village = make.village(town, "青山村")
    group = make.group(village, "一组")
    household = make.household(group, "王建国", phone="13900001111")
    member = places.add_member(household, "王小明")
    shop = make.shop(village)
    far_town = make.town("绿水镇")
    far_village = make.village(far_town, "绿水村")
    world = SimpleNamespace(
        town=town,
        village=village,
        group=group,
        household=household,
        head=household.members[0],
        member=member,
        shop=shop,
        admin=make.staff(Role.ADMIN, town, username="admin1"),
        cadre=make.staff(Role.CADRE, village, username="cadre1"),
        committee=make.staff(Role.COMMITTEE, village, username="committee1"),
        far_town=far_town,
        far_village=far_village,
        far_group=make.group(far_village, "二组"),
        far_shop=make.shop(far_village),
        far_admin=make.staff(Role.ADMIN, far_town, username="admin2"),
    )
    world.villager = make.villager(household, phone="13900001111")
    db.session.commit()
    return world


def audit_entries(action: str | None = None) -> list[AuditEntry]:
    query = sa.select(AuditEntry).order_by(AuditEntry.id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return list(db.session.scalars(query))


def english(error) -> str:
    """Return a refusal's message as an English reader sees it."""
    with force_locale("en"):
        return str(error.message)


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


# --- every action leaves its audit entry ---------------------------------------------------

ACTIONS = {
    "village.create": lambda w: service.create_village(w.admin, w.town, "新村"),
    "village.rename": lambda w: service.rename_village(w.admin, w.village, "青山新村"),
    "group.create": lambda w: service.create_group(w.admin, w.village, "三组"),
    "group.rename": lambda w: service.rename_group(w.admin, w.group, "第一组"),
    "shop.create": lambda w: service.create_shop(w.admin, w.town, "镇超市", None),
    "shop.deactivate": lambda w: service.set_shop_active(w.admin, w.shop, False),
    "shop.activate": lambda w: service.set_shop_active(
        w.admin, service.set_shop_active(w.admin, w.shop, False), True
    ),
    "account.create": lambda w: service.create_staff(
        w.admin, "clerk9", "李店员", PASSWORD, Role.CLERK, w.shop
    ),
    "account.grant": lambda w: service.add_grant(w.admin, w.cadre, Role.CADRE, w.group),
    "account.revoke_grant": lambda w: service.remove_grant(
        w.admin, service.add_grant(w.admin, w.cadre, Role.CADRE, w.group)
    ),
    "account.deactivate": lambda w: service.deactivate(w.admin, w.cadre),
    "account.reactivate": lambda w: service.reactivate(
        w.admin, service.deactivate(w.admin, w.cadre)
    ),
    "account.reset_password": lambda w: service.reset_password(w.admin, w.cadre, "new password 1"),
    "villager.create_login": lambda w: service.create_villager_login(
        w.admin, w.member, "13900002222"
    ),
    "villager.reset_pin": lambda w: service.reset_pin(w.admin, w.head),
    "settings.negative_balance": lambda w: service.set_negative_balance(w.admin, w.village, True),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_each_action_writes_its_audit_entry(w, action):
    before = len(audit_entries())
    ACTIONS[action](w)
    db.session.commit()
    entries = audit_entries(action)
    assert entries, f"no audit entry for {action}"
    entry = entries[-1]
    assert entry.actor_id == w.admin.id and entry.actor_name == w.admin.display_name
    assert entry.town_id == w.town.id
    assert entry.summary
    assert len(audit_entries()) > before


def test_no_pin_or_password_is_written_to_the_audit_log(w):
    created = service.create_villager_login(w.admin, w.member, "13900002222")
    reset = service.reset_pin(w.admin, w.head)
    service.reset_password(w.admin, w.cadre, "a secret passphrase")
    db.session.commit()
    dumped = json.dumps(
        [(e.summary, e.before, e.after) for e in audit_entries()], ensure_ascii=False
    )
    assert created.pin not in dumped and reset.pin not in dumped
    assert "a secret passphrase" not in dumped
    assert "13900002222" not in dumped  # phones appear masked: 139****2222
    assert "139****2222" in dumped


# --- scope: another town's administrator is refused everywhere -------------------------------

FOREIGN = {
    "create a village": lambda w, a: service.create_village(a, w.town, "外村"),
    "rename a village": lambda w, a: service.rename_village(a, w.village, "外村"),
    "create a group": lambda w, a: service.create_group(a, w.village, "外组"),
    "rename a group": lambda w, a: service.rename_group(a, w.group, "外组"),
    "create a shop": lambda w, a: service.create_shop(a, w.town, "外超市"),
    "create a shop in a village of another town": lambda w, a: service.create_shop(
        a, w.far_town, "外超市", w.village
    ),
    "close a shop": lambda w, a: service.set_shop_active(a, w.shop, False),
    "create staff over a place of another town": lambda w, a: service.create_staff(
        a, "spy1", "间谍", PASSWORD, Role.CADRE, w.village
    ),
    "give a role": lambda w, a: service.add_grant(a, w.cadre, Role.CADRE, w.group),
    "remove a role": lambda w, a: service.remove_grant(a, w.cadre.grants[0]),
    "deactivate": lambda w, a: service.deactivate(a, w.cadre),
    "reactivate": lambda w, a: service.reactivate(a, w.cadre),
    "reset a password": lambda w, a: service.reset_password(a, w.cadre, "x" * 12),
    "create a villager login": lambda w, a: service.create_villager_login(
        a, w.member, "13900002222"
    ),
    "reset a PIN": lambda w, a: service.reset_pin(a, w.head),
    "village settings": lambda w, a: service.set_negative_balance(a, w.village, True),
}


@pytest.mark.parametrize("what", sorted(FOREIGN))
def test_an_administrator_of_another_town_is_refused_and_nothing_changes(w, what):
    entries, users, grants = len(audit_entries()), count(User), count(RoleGrant)
    pin_hash = w.villager.pin_hash
    with pytest.raises(Forbidden):
        FOREIGN[what](w, w.far_admin)
    db.session.rollback()
    assert len(audit_entries()) == entries
    assert (count(User), count(RoleGrant)) == (users, grants)
    assert w.village.name == "青山村" and w.group.name == "一组" and w.shop.is_active
    assert w.cadre.is_active and w.villager.pin_hash == pin_hash
    assert not w.village.allow_negative_balance


@pytest.mark.parametrize("role", [Role.CADRE, Role.COMMITTEE, Role.CLERK])
def test_other_staff_cannot_administer(w, make, role):
    actor = {Role.CADRE: w.cadre, Role.COMMITTEE: w.committee}.get(role) or make.staff(
        Role.CLERK, w.shop
    )
    with pytest.raises(Forbidden):
        service.create_group(actor, w.village, "三组")
    with pytest.raises(Forbidden):
        service.reset_pin(actor, w.head)
    with pytest.raises(Forbidden):
        service.create_staff(actor, "someone", "某人", PASSWORD, Role.CADRE, w.village)


# --- villages, groups and shops ---------------------------------------------------------------


def test_a_new_village_has_its_ledger_accounts(w):
    village = service.create_village(w.admin, w.town, "  新  村 ")
    db.session.commit()
    assert village.name == "新 村" and village.town_id == w.town.id
    from pointsmart.models import Account

    kinds = db.session.scalars(sa.select(Account.kind).where(Account.village_id == village.id))
    assert len(list(kinds)) >= 3  # source, sink, honour counterpart


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: service.create_village(w.admin, w.town, "青山村"), "already has a village"),
        (lambda w: service.create_village(w.admin, w.town, "   "), "must be 1 to 60"),
        (lambda w: service.create_village(w.admin, w.town, "村" * 61), "must be 1 to 60"),
        (
            lambda w: service.rename_village(
                w.admin, service.create_village(w.admin, w.town, "新村"), "青山村"
            ),
            "already has a village",
        ),
        (lambda w: service.rename_village(w.admin, w.village, ""), "must be 1 to 60"),
        (lambda w: service.create_group(w.admin, w.village, "一组"), "already has a group"),
        (lambda w: service.create_group(w.admin, w.village, ""), "must be 1 to 60"),
        (
            lambda w: service.rename_group(
                w.admin, service.create_group(w.admin, w.village, "二组"), "一组"
            ),
            "already has a group",
        ),
        (lambda w: service.create_shop(w.admin, w.town, ""), "must be 1 to 60"),
        (lambda w: service.create_shop(w.admin, w.town, w.shop.name), "already has a shop"),
    ],
)
def test_bad_names_are_explained_and_change_nothing(w, app, change, message):
    villages, groups, shops = count(Village), count(VillagerGroup), count(Shop)
    with pytest.raises(InvalidInput) as refused:
        change(w)
    assert message in english(refused.value)
    db.session.rollback()
    assert (count(Village), count(VillagerGroup), count(Shop)) == (villages, groups, shops)
    assert w.village.name == "青山村" and w.group.name == "一组"


def test_renaming_keeps_everything_attached(w):
    service.rename_village(w.admin, w.village, "青山新村")
    service.rename_group(w.admin, w.group, "第一组")
    db.session.commit()
    assert w.household.group.village.name == "青山新村"
    assert w.household.group.name == "第一组"
    entry = audit_entries("village.rename")[-1]
    assert entry.before == {"name": "青山村"} and entry.after == {"name": "青山新村"}


def test_a_town_wide_shop_and_a_village_shop(w):
    town_shop = service.create_shop(w.admin, w.town, "镇中心超市")
    village_shop = service.create_shop(w.admin, w.town, "青山二店", w.village)
    db.session.commit()
    assert town_shop.village_id is None and town_shop.serves(w.household)
    assert village_shop.village_id == w.village.id and not village_shop.serves(
        make_far_household(w)
    )


def make_far_household(w):
    return places.create_household(w.far_group, "99", "远方户")


def test_closing_a_shop_twice_writes_one_entry(w):
    service.set_shop_active(w.admin, w.shop, False)
    service.set_shop_active(w.admin, w.shop, False)
    db.session.commit()
    assert not w.shop.is_active
    assert len(audit_entries("shop.deactivate")) == 1


# --- staff accounts ---------------------------------------------------------------------------


def test_create_staff_gives_one_role_and_can_log_in(w):
    user = service.create_staff(w.admin, "li.clerk", "李店员", PASSWORD, Role.CLERK, w.shop)
    db.session.commit()
    assert [(g.role, g.shop_id) for g in user.grants] == [(Role.CLERK, w.shop.id)]
    assert accounts.authenticate_staff("li.clerk", PASSWORD) is user
    entry = audit_entries("account.create")[-1]
    assert entry.village_id == w.village.id and "li.clerk" in entry.summary


@pytest.mark.parametrize(
    ("username", "name", "password", "role", "place", "error", "message"),
    [
        ("cadre1", "重名", PASSWORD, Role.CADRE, "village", InvalidInput, "username is taken"),
        ("x", "短名", PASSWORD, Role.CADRE, "village", InvalidInput, "3 to 40"),
        ("newbie", "新人", "short", Role.CADRE, "village", InvalidInput, "at least 8"),
        ("newbie", "  ", PASSWORD, Role.CADRE, "village", InvalidInput, "must be 1 to 60"),
        ("newbie", "新人", PASSWORD, Role.CLERK, "village", InvalidInput, "serves a shop"),
        ("newbie", "新人", PASSWORD, Role.COMMITTEE, "group", InvalidInput, "serves a village"),
        ("newbie", "新人", PASSWORD, Role.ADMIN, "village", InvalidInput, "serves a town"),
        ("newbie", "新人", PASSWORD, Role.CADRE, "shop", InvalidInput, "village or one of its"),
        ("newbie", "新人", PASSWORD, Role.VILLAGER, "household", InvalidInput, "staff role"),
        ("newbie", "新人", PASSWORD, Role.CADRE, None, InvalidInput, "Choose a place"),
        ("newbie", "新人", PASSWORD, Role.CADRE, "far_village", Forbidden, "not in a town"),
        ("newbie", "新人", PASSWORD, Role.CLERK, "far_shop", Forbidden, "not in a town"),
    ],
)
def test_bad_staff_accounts_are_explained_and_nothing_is_made(
    w, app, username, name, password, role, place, error, message
):
    users, grants = count(User), count(RoleGrant)
    target = getattr(w, place) if place else None
    with pytest.raises(error) as refused:
        service.create_staff(w.admin, username, name, password, role, target)
    assert message in english(refused.value)
    db.session.rollback()
    assert (count(User), count(RoleGrant)) == (users, grants)
    assert not audit_entries("account.create")


def test_roles_are_added_and_removed_but_never_the_last_one(w, app):
    added = service.add_grant(w.admin, w.cadre, Role.COMMITTEE, w.village)
    db.session.commit()
    assert {g.role for g in w.cadre.grants} == {Role.CADRE, Role.COMMITTEE}
    with pytest.raises(InvalidInput):
        service.add_grant(w.admin, w.cadre, Role.COMMITTEE, w.village)  # already held
    db.session.rollback()
    service.remove_grant(w.admin, added)
    db.session.commit()
    assert [g.role for g in w.cadre.grants] == [Role.CADRE]
    with pytest.raises(InvalidInput) as refused:
        service.remove_grant(w.admin, w.cadre.grants[0])
    assert "only role" in english(refused.value)
    db.session.rollback()
    assert [g.role for g in w.cadre.grants] == [Role.CADRE]
    assert len(audit_entries("account.revoke_grant")) == 1


def test_a_role_over_another_towns_place_is_refused(w):
    with pytest.raises(Forbidden):
        service.add_grant(w.admin, w.cadre, Role.CADRE, w.far_village)
    db.session.rollback()
    assert len(w.cadre.grants) == 1


def test_an_administrator_cannot_remove_their_own_admin_role_or_deactivate_themselves(w):
    second = service.add_grant(w.admin, w.admin, Role.COMMITTEE, w.village)
    db.session.commit()
    with pytest.raises(InvalidInput):
        service.remove_grant(w.admin, w.admin.grants[0])
    with pytest.raises(InvalidInput):
        service.deactivate(w.admin, w.admin)
    db.session.rollback()
    assert w.admin.is_active and second in w.admin.grants and len(w.admin.grants) == 2


def test_deactivation_ends_sessions_and_logins_and_keeps_history(w):
    token = accounts.start_session(w.cadre, timedelta(hours=1)).id
    db.session.commit()
    assert accounts.load_session(token) is w.cadre
    service.deactivate(w.admin, w.cadre)
    db.session.commit()
    db.session.expire_all()
    assert accounts.load_session(token) is None
    session = db.session.get(LoginSession, token)
    assert session.ended_at is not None
    assert accounts.authenticate_staff("cadre1", PASSWORD) is None
    cadre = db.session.get(User, w.cadre.id)
    assert not cadre.is_active and [g.role for g in cadre.grants] == [Role.CADRE]

    service.reactivate(w.admin, cadre)
    db.session.commit()
    assert accounts.authenticate_staff("cadre1", PASSWORD) is cadre
    assert accounts.load_session(token) is None  # old sessions stay ended


def test_deactivation_revokes_the_persons_api_tokens(w):
    issued = api_tokens.issue(w.admin, "巡查小程序", Role.CADRE, w.village, owner=w.cadre)
    db.session.commit()
    assert api_tokens.authenticate(issued.secret) is not None
    service.deactivate(w.admin, w.cadre)
    db.session.commit()
    assert api_tokens.authenticate(issued.secret) is None


def test_an_account_serving_two_towns_is_not_changed_by_one_towns_admin(w):
    service.add_grant(w.far_admin, w.far_admin, Role.CADRE, w.far_village)
    both = service.create_staff(w.admin, "both1", "两镇干部", PASSWORD, Role.CADRE, w.village)
    accounts.grant(both, Role.CADRE, w.far_village)
    db.session.commit()
    assert service.sees_account(w.admin, both) and not service.manages_account(w.admin, both)
    with pytest.raises(Forbidden):
        service.deactivate(w.admin, both)
    with pytest.raises(Forbidden):
        service.reset_password(w.admin, both, "another password")
    db.session.rollback()
    assert both.is_active


def test_reset_password_replaces_it_and_ends_sessions(w, app):
    token = accounts.start_session(w.cadre, timedelta(hours=1)).id
    db.session.commit()
    with pytest.raises(InvalidInput) as refused:
        service.reset_password(w.admin, w.cadre, "short")
    assert "at least 8" in english(refused.value)
    db.session.rollback()
    assert accounts.authenticate_staff("cadre1", PASSWORD) is w.cadre
    service.reset_password(w.admin, w.cadre, "brand new secret")
    db.session.commit()
    assert accounts.authenticate_staff("cadre1", PASSWORD) is None
    assert accounts.authenticate_staff("cadre1", "brand new secret") is w.cadre
    assert accounts.load_session(token) is None


def test_the_staff_list_covers_the_town_only(w):
    listed = set(db.session.scalars(service.staff_query(w.admin)))
    assert {w.admin, w.cadre, w.committee} <= listed
    assert w.far_admin not in listed and w.villager not in listed
    assert set(db.session.scalars(service.staff_query(w.admin, "cadre1"))) == {w.cadre}


# --- villager logins --------------------------------------------------------------------------


def test_a_member_gets_a_login_with_a_generated_pin(w):
    slip = service.create_villager_login(w.admin, w.member, "139 0000 2222")
    db.session.commit()
    assert len(slip.pin) == 6 and slip.pin.isdigit()
    assert w.member.phone == "13900002222" and slip.user.member is w.member
    assert slip.user.pin_hash and slip.pin not in slip.user.pin_hash
    assert accounts.authenticate_villager("13900002222", slip.pin) is slip.user
    assert [(g.role, g.household_id) for g in slip.user.grants] == [(Role.VILLAGER, w.household.id)]


@pytest.mark.parametrize(
    ("who", "phone", "message"),
    [
        ("member", "12345", "11-digit"),
        ("member", "", "11-digit"),
        ("member", "13900001111", "already has an account"),  # the head's login
        ("head", "13900003333", "already has a login"),
    ],
)
def test_bad_villager_logins_are_explained_and_nothing_is_made(w, app, who, phone, message):
    users = count(User)
    with pytest.raises(InvalidInput) as refused:
        service.create_villager_login(w.admin, getattr(w, who), phone)
    assert message in english(refused.value)
    db.session.rollback()
    assert count(User) == users
    assert w.member.phone is None


def test_reset_pin_makes_a_new_pin_and_ends_sessions(w):
    token = accounts.start_session(w.villager, timedelta(hours=1)).id
    db.session.commit()
    slip = service.reset_pin(w.admin, w.head)
    db.session.commit()
    assert slip.user is w.villager
    assert accounts.load_session(token) is None
    assert accounts.authenticate_villager("13900001111", slip.pin) is w.villager
    if slip.pin != PIN:
        assert accounts.authenticate_villager("13900001111", PIN) is None
    with pytest.raises(InvalidInput):
        service.reset_pin(w.admin, w.member)  # no login yet


@pytest.mark.parametrize(
    "pin", ["000000", "123456", "654321", "890123", "135791", "024680", "121212", "999990"]
)
def test_obvious_pins_are_never_generated(pin):
    assert service._weak(pin)


def test_generated_pins_are_random_and_not_obvious():
    pins = {service.new_pin() for _ in range(200)}
    assert len(pins) > 190
    assert all(len(p) == 6 and p.isdigit() and not service._weak(p) for p in pins)


# --- village settings -------------------------------------------------------------------------


def test_the_committee_and_the_admin_keep_the_settings_and_cadres_do_not(w):
    service.set_negative_balance(w.committee, w.village, True)
    db.session.commit()
    assert w.village.allow_negative_balance
    service.set_negative_balance(w.admin, w.village, False)
    rules.set_approval_settings(w.village, w.admin, auto_approve_max=5, two_approver_min=50)
    boards.set_board_names(w.village, w.admin, BoardNames.GROUP_ONLY)
    db.session.commit()
    assert not w.village.allow_negative_balance
    assert (w.village.auto_approve_max, w.village.two_approver_min) == (5, 50)
    assert w.village.board_names is BoardNames.GROUP_ONLY
    for change in (
        lambda: service.set_negative_balance(w.cadre, w.village, True),
        lambda: rules.set_approval_settings(
            w.village, w.cadre, auto_approve_max=1, two_approver_min=2
        ),
        lambda: boards.set_board_names(w.village, w.cadre, BoardNames.FULL),
        lambda: rules.set_approval_settings(
            w.village, w.far_admin, auto_approve_max=1, two_approver_min=2
        ),
    ):
        with pytest.raises(Forbidden):
            change()
        db.session.rollback()
    assert not w.village.allow_negative_balance
    assert len(audit_entries("settings.negative_balance")) == 2
