"""Typed SQLAlchemy models, one module per area."""

from .ledger import (
    Account,
    AccountKind,
    Category,
    Entry,
    Transfer,
    TransferKind,
    TransferStatus,
    Unit,
)
from .places import BoardNames, Household, Member, Town, Village, VillagerGroup
from .shops import Shop
from .users import LoginSession, Role, RoleGrant, User

__all__ = [
    "Account",
    "AccountKind",
    "BoardNames",
    "Category",
    "Entry",
    "Household",
    "LoginSession",
    "Member",
    "Role",
    "RoleGrant",
    "Shop",
    "Town",
    "Transfer",
    "TransferKind",
    "TransferStatus",
    "Unit",
    "User",
    "Village",
    "VillagerGroup",
]
