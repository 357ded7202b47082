"""Translated labels for the enums shown to users."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from .models import Category, Role, TransferKind, TransferStatus

_ROLE = {
    Role.VILLAGER: _l("Villager"),
    Role.CADRE: _l("Cadre / grid officer"),
    Role.COMMITTEE: _l("Committee member"),
    Role.CLERK: _l("Shop clerk"),
    Role.ADMIN: _l("Town administrator"),
}
_CATEGORY = {
    Category.WASTE_SORTING: _l("Waste sorting"),
    Category.SANITATION: _l("Cleaning and sanitation"),
    Category.COURTYARD: _l("Beautiful courtyard"),
    Category.TREE_PLANTING: _l("Tree planting"),
    Category.REPORTING: _l("Reporting"),
    Category.VOLUNTEERING: _l("Volunteering"),
    Category.OTHER: _l("Other"),
}
_STATUS = {
    TransferStatus.PENDING: _l("Pending approval"),
    TransferStatus.POSTED: _l("Posted"),
    TransferStatus.VOIDED: _l("Rejected"),
}
_KIND = {
    TransferKind.AWARD: _l("Award"),
    TransferKind.DEDUCTION: _l("Deduction"),
    TransferKind.REDEMPTION: _l("Redemption"),
    TransferKind.REVERSAL: _l("Reversal"),
    TransferKind.CLEARING: _l("Yearly clearing"),
    TransferKind.REFUND: _l("Refund"),
}


def role_label(role: Role) -> str:
    return str(_ROLE[role])


def category_label(category: Category | None) -> str:
    return str(_CATEGORY[category]) if category else ""


def status_label(status: TransferStatus) -> str:
    return str(_STATUS[status])


def transfer_kind_label(kind: TransferKind) -> str:
    return str(_KIND[kind])


#: Every action the services write to the audit log (``audit.record``), in the order the
#: audit page's filter lists them. tests/test_audit_pages.py fails on a code missing here.
_AUDIT_ACTION = {
    # earning and approvals
    "award.record": _l("Award recorded"),
    "deduction.record": _l("Deduction recorded"),
    "transfer.approve": _l("Record approved"),
    "transfer.auto_post": _l("Award approved automatically"),
    "transfer.reject": _l("Record rejected"),
    "transfer.reverse": _l("Record corrected (reversed)"),
    "claim.verify": _l("Villager's claim verified"),
    "claim.reject": _l("Villager's claim rejected"),
    "report.verify": _l("Villager's report verified"),
    "report.reject": _l("Villager's report rejected"),
    "inspection.open": _l("Inspection round opened"),
    "inspection.submit": _l("Inspection round submitted"),
    "rating_round.open": _l("Courtyard rating round opened"),
    "rating_round.close": _l("Courtyard rating round closed"),
    "rating.rate": _l("Courtyard rated"),
    # rules, boards and village settings
    "rule.create": _l("Scoring rule created"),
    "rule.revise": _l("Scoring rule changed"),
    "rule.withdraw": _l("Scoring rule withdrawn"),
    "rule.copy_templates": _l("Rule templates copied"),
    "board.publish": _l("Notice board published"),
    "settings.approval": _l("Approval settings changed"),
    "settings.board_names": _l("Notice board naming changed"),
    "settings.negative_balance": _l("Negative balance setting changed"),
    "clearing.set_date": _l("Yearly clearing date set"),
    "clearing.run": _l("Yearly clearing run"),
    # the shops
    "redemption.checkout": _l("Goods redeemed"),
    "redemption.void": _l("Redemption voided"),
    "day.close": _l("Shop day closed"),
    "item.create": _l("Goods added to the catalogue"),
    "item.update": _l("Goods changed"),
    "stock.intake": _l("Stock received"),
    "stock.write_off": _l("Stock written off"),
    "shop.window": _l("Shop opening days changed"),
    "shop.create": _l("Shop created"),
    "shop.activate": _l("Shop reopened"),
    "shop.deactivate": _l("Shop closed down"),
    # places, households and accounts
    "village.create": _l("Village created"),
    "village.rename": _l("Village renamed"),
    "group.create": _l("Villager group created"),
    "group.rename": _l("Villager group renamed"),
    "roster.import": _l("Roster imported"),
    "card.reissue": _l("Points card reissued"),
    "account.create": _l("Staff account created"),
    "account.grant": _l("Role given"),
    "account.revoke_grant": _l("Role taken away"),
    "account.deactivate": _l("Account deactivated"),
    "account.reactivate": _l("Account reactivated"),
    "account.reset_password": _l("Password reset"),
    "villager.create_login": _l("Villager login created"),
    "villager.reset_pin": _l("Villager PIN reset"),
    "api_token.issue": _l("API token issued"),
    "api_token.revoke": _l("API token revoked"),
}

#: The action codes the audit log knows, in display order.
AUDIT_ACTIONS = tuple(_AUDIT_ACTION)


def audit_action_label(action: str) -> str:
    """Return an audit action in words; an unknown code as it is."""
    label = _AUDIT_ACTION.get(action)
    return str(label) if label is not None else action
