"""Typed SQLAlchemy models, one module per area."""

from .api import ApiRequest, ApiToken
from .audit import AuditEntry
from .boards import Board, BoardKind, HouseholdMonth
from .cards import Card
from .clearing import ClearingRun
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
from .shops import (
    DayClosing,
    Funding,
    Identification,
    Item,
    MovementKind,
    Redemption,
    RedemptionLine,
    RedemptionVoid,
    Shop,
    StockMovement,
)
from .submissions import Claim, Report, SubmissionStatus
from .users import LoginSession, Role, RoleGrant, User

__all__ = [
    "ApiRequest",
    "ApiToken",
    "AuditEntry",
    "Board",
    "BoardKind",
    "HouseholdMonth",
    "Account",
    "AccountKind",
    "Approval",
    "BoardNames",
    "Card",
    "ClearingRun",
    "Category",
    "Claim",
    "DayClosing",
    "Entry",
    "Funding",
    "Household",
    "Identification",
    "InspectionRound",
    "Item",
    "LimitPeriod",
    "LoginSession",
    "Mark",
    "Member",
    "MovementKind",
    "Photo",
    "Rating",
    "RatingRound",
    "RatingRoundStatus",
    "Redemption",
    "RedemptionLine",
    "RedemptionVoid",
    "Report",
    "Role",
    "RoleGrant",
    "RoundMark",
    "RoundStatus",
    "RuleWarning",
    "ScoringRule",
    "Shop",
    "StockMovement",
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
