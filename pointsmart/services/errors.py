"""Domain errors: a stable machine-readable code and a message in the user's language."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l


class DomainError(Exception):
    """A request the rules refuse. The caller rolls back, so nothing it asked for is kept.

    Input checks raise before anything is written; a guard inside a write (stock, points, a
    unit voided twice) raises after earlier writes of the same transaction.
    """

    code = "invalid"
    status = 422
    default_message = _l("This request cannot be carried out.")

    def __init__(self, message=None):
        self.message = message if message is not None else self.default_message
        super().__init__(str(self.message))


class InvalidInput(DomainError):
    code = "invalid_input"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    default_message = _l("You are not allowed to do this here.")


class NotFound(DomainError):
    code = "not_found"
    status = 404
    default_message = _l("Not found.")


class InsufficientPoints(DomainError):
    code = "insufficient_points"
    status = 409
    default_message = _l("Not enough points.")


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    default_message = _l(
        "This request was already submitted with different content; start again from a fresh page."
    )


class AlreadyResolved(DomainError):
    code = "already_resolved"
    status = 409
    default_message = _l("This record has already been approved, rejected or reversed.")


class SelfApproval(DomainError):
    code = "self_approval"
    status = 403
    default_message = _l("You recorded this yourself; another committee member must approve it.")


class NotReversible(DomainError):
    code = "not_reversible"
    status = 409
    default_message = _l("This record cannot be reversed.")


class OutOfStock(DomainError):
    code = "out_of_stock"
    status = 409
    default_message = _l("Not enough of this item in stock.")


class OutsideExchangeWindow(DomainError):
    code = "outside_exchange_window"
    status = 409
    default_message = _l("The shop is not open for exchanges now.")


class CardRevoked(DomainError):
    code = "card_revoked"
    default_message = _l(
        "This card has been replaced and no longer works. Ask for the household's new card, "
        "or look the household up by name."
    )


class CardNotFound(DomainError):
    code = "card_not_found"
    status = 404
    default_message = _l("No card has this code. Check the code, or look the household up by name.")
