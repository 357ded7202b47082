"""Typed SQLAlchemy models, one module per area."""

from .earning import (
    Approval,
    InspectionRound,
    LimitPeriod,
    Mark,
    RoundMark,
    RoundStatus,
    RuleWarning,
    ScoringRule,
)
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
from .media import Photo
from .places import BoardNames, Household, Member, Town, Village, VillagerGroup
from .ratings import Rating, RatingRound, RatingRoundStatus
from .shops import Shop
from .submissions import Claim, Report, SubmissionStatus
from .users import LoginSession, Role, RoleGrant, User

__all__ = [
    "Account",
    "AccountKind",
    "Approval",
    "BoardNames",
    "Category",
    "Claim",
    "Entry",
    "Household",
    "InspectionRound",
    "LimitPeriod",
    "LoginSession",
    "Mark",
    "Member",
    "Photo",
    "Rating",
    "RatingRound",
    "RatingRoundStatus",
    "Report",
    "Role",
    "RoleGrant",
    "RoundMark",
    "RoundStatus",
    "RuleWarning",
    "ScoringRule",
    "Shop",
    "SubmissionStatus",
    "Town",
    "Transfer",
    "TransferKind",
    "TransferStatus",
    "Unit",
    "User",
    "Village",
    "VillagerGroup",
]
