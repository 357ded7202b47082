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
