"""The API's schemas: what each call reads and answers, and the OpenAPI document's components.

Serialisation is explicit: each schema names its fields; timestamps are ISO 8601 with the
Asia/Shanghai offset; points and quantities are integers.
"""

from __future__ import annotations

import re

from marshmallow import Schema, fields, validate

from ..timeutil import to_local


class LocalDateTime(fields.DateTime):
    """An aware timestamp shown in the villages' time zone, e.g. 2026-11-30T09:15:00+08:00."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else to_local(value).isoformat(timespec="seconds")


#: The largest id a database integer column holds (the URL converter stops there too).
MAX_ID = 2**31 - 1

#: C0 control characters but tab and line breaks, and DEL: never text a person wrote (and
#: PostgreSQL cannot store NUL at all).
CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"


class Text(fields.String):
    """A string a person wrote: any characters but control characters."""

    default_error_messages = {"control": "Control characters are not allowed."}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault("pattern", f"^[^{CONTROL}]*$")
        super().__init__(*args, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if re.search(f"[{CONTROL}]", text):
            raise self.make_error("control")
        return text


class ErrorBody(Schema):
    code = fields.String(required=True, metadata={"description": "Stable machine-readable code"})
    message = fields.String(required=True, metadata={"description": "In the caller's language"})
    details = fields.Raw(metadata={"description": "Field messages of invalid input"})


class Error(Schema):
    error = fields.Nested(ErrorBody, required=True)


class Paged(Schema):
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    """Return the paging envelope schema for a list of ``item``."""
    return type(name, (Paged,), {"items": fields.List(fields.Nested(item), required=True)})


class PageQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(1, 100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(1, 100))


# --- households ------------------------------------------------------------------------------------


class Member(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    is_head = fields.Boolean(required=True)


class Household(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    house_number = fields.String(required=True)
    group = fields.String(required=True)
    village_id = fields.Integer(required=True)
    village = fields.String(required=True)
    is_active = fields.Boolean(required=True)
    members = fields.List(fields.Nested(Member), required=True)
    spendable = fields.Integer(required=True, metadata={"description": "兑换积分"})
    honour = fields.Integer(required=True, metadata={"description": "荣誉积分"})


class HistoryEntry(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(
        required=True,
        metadata={"enum": ["award", "deduction", "redemption", "reversal", "clearing", "refund"]},
    )
    status = fields.String(required=True, metadata={"enum": ["pending", "posted", "voided"]})
    points = fields.Integer(required=True, attribute="signed_points")
    reason = fields.String(required=True)
    category = fields.String(allow_none=True)
    recorded_by = fields.String(allow_none=True, attribute="recorded_by.display_name")
    approved_by = fields.String(allow_none=True, attribute="approved_by.display_name")
    reverses_id = fields.Integer(allow_none=True)
    refunds_id = fields.Integer(allow_none=True)
    created_at = LocalDateTime(required=True)
    posted_at = LocalDateTime(allow_none=True)


HistoryPage = page_schema(HistoryEntry, "HistoryPage")


# --- the shop --------------------------------------------------------------------------------------


class Item(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    category = fields.String(required=True)
    points = fields.Integer(required=True)
    stock = fields.Integer(required=True)
    is_active = fields.Boolean(required=True)


ItemPage = page_schema(Item, "ItemPage")


class CartLine(Schema):
    item_id = fields.Integer(required=True, validate=validate.Range(1, MAX_ID))
    quantity = fields.Integer(required=True, validate=validate.Range(1, 999))


class CheckoutRequest(Schema):
    card = Text(
        validate=validate.Length(1, 80),
        metadata={"description": "The scanned QR token or the typed card code"},
    )
    household_id = fields.Integer(
        validate=validate.Range(1, MAX_ID),
        metadata={"description": "Instead of a card: a household found by name (lookup)"},
    )
    items = fields.List(fields.Nested(CartLine), required=True, validate=validate.Length(1, 50))
    member_id = fields.Integer(validate=validate.Range(1, MAX_ID))
    expected_total = fields.Integer(validate=validate.Range(1, 10**9))


class RedemptionLine(Schema):
    id = fields.Integer(required=True)
    item_id = fields.Integer(required=True)
    item_name = fields.String(required=True)
    unit_points = fields.Integer(required=True)
    quantity = fields.Integer(required=True)
    voided_quantity = fields.Integer(required=True)


class Redemption(Schema):
    id = fields.Integer(required=True)
    shop_id = fields.Integer(required=True)
    household_id = fields.Integer(required=True)
    total_points = fields.Integer(required=True)
    voided_points = fields.Integer(required=True)
    balance_after = fields.Integer(required=True)
    identified_by = fields.String(required=True)
    created_at = LocalDateTime(required=True)
    lines = fields.List(fields.Nested(RedemptionLine), required=True)


class VoidLine(Schema):
    line_id = fields.Integer(required=True, validate=validate.Range(1, MAX_ID))
    quantity = fields.Integer(required=True, validate=validate.Range(1, 999))


class VoidRequest(Schema):
    reason = Text(required=True, validate=validate.Length(1, 200))
    lines = fields.List(
        fields.Nested(VoidLine),
        validate=validate.Length(1, 50),
        metadata={"description": "Units to take back; leave out to void everything left"},
    )


class Void(Schema):
    id = fields.Integer(required=True)
    redemption_id = fields.Integer(required=True)
    points = fields.Integer(required=True)
    reason = fields.String(required=True)
    created_at = LocalDateTime(required=True)


# --- awards and approvals --------------------------------------------------------------------------


class AwardRequest(Schema):
    rule_id = fields.Integer(required=True, validate=validate.Range(1, MAX_ID))
    member_id = fields.Integer(validate=validate.Range(1, MAX_ID))
    note = Text(validate=validate.Length(0, 500))


class Transfer(Schema):
    id = fields.Integer(required=True)
    household_id = fields.Integer(allow_none=True)
    household = fields.String(allow_none=True, attribute="household.name")
    kind = fields.String(required=True)
    status = fields.String(required=True)
    points = fields.Integer(required=True, attribute="signed_points")
    reason = fields.String(required=True)
    recorded_by = fields.String(allow_none=True, attribute="recorded_by.display_name")
    created_at = LocalDateTime(required=True)


TransferPage = page_schema(Transfer, "TransferPage")


class Warning(Schema):
    id = fields.Integer(required=True)
    household_id = fields.Integer(required=True)
    rule = fields.String(required=True, attribute="rule.name")
    created_at = LocalDateTime(required=True)


class AwardResult(Schema):
    outcome = fields.String(required=True, metadata={"enum": ["recorded", "warning"]})
    transfer = fields.Nested(Transfer, allow_none=True)
    warning = fields.Nested(Warning, allow_none=True)


class RejectRequest(Schema):
    reason = Text(required=True, validate=validate.Length(1, 200))


# --- claims and reports ----------------------------------------------------------------------------


class ClaimRequest(Schema):
    description = Text(required=True, validate=validate.Length(1, 500))
    rule_id = fields.Integer(validate=validate.Range(1, MAX_ID))


class Claim(Schema):
    id = fields.Integer(required=True)
    household_id = fields.Integer(required=True)
    description = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["submitted", "verified", "rejected"]})
    reject_reason = fields.String(allow_none=True)
    transfer_id = fields.Integer(allow_none=True)
    created_at = LocalDateTime(required=True)


ClaimPage = page_schema(Claim, "ClaimPage")


class ReportRequest(Schema):
    what = Text(required=True, validate=validate.Length(1, 500))
    where = Text(required=True, validate=validate.Length(1, 100))
    anonymous = fields.Boolean(load_default=False)


class Report(Schema):
    id = fields.Integer(required=True)
    village_id = fields.Integer(required=True)
    what = fields.String(required=True)
    location = fields.String(required=True)
    anonymous = fields.Boolean(required=True)
    status = fields.String(required=True, metadata={"enum": ["submitted", "verified", "rejected"]})
    reject_reason = fields.String(allow_none=True)
    created_at = LocalDateTime(required=True)


ReportPage = page_schema(Report, "ReportPage")


# --- rankings, boards and totals -------------------------------------------------------------------


class PeriodQuery(Schema):
    period = fields.String(validate=validate.OneOf(["month", "quarter", "year", "custom"]))
    month = fields.String(validate=validate.Length(1, 10))
    year = fields.String(validate=validate.Length(1, 10))
    quarter = fields.String(validate=validate.Length(1, 2))
    # "from" is a Python keyword: the query parameter keeps its name through data_key.
    start = fields.String(data_key="from", validate=validate.Length(1, 10))
    to = fields.String(validate=validate.Length(1, 10))


class RankingQuery(PeriodQuery, PageQuery):
    scope = fields.String(required=True, validate=validate.OneOf(["group", "village", "town"]))
    id = fields.Integer(required=True, validate=validate.Range(1, MAX_ID))


class PeriodOut(Schema):
    kind = fields.String(required=True)
    start = fields.String(required=True, metadata={"description": "First month, YYYY-MM"})
    end = fields.String(required=True, metadata={"description": "Last month, YYYY-MM"})
    label = fields.String(required=True)


class RankingRow(Schema):
    rank = fields.Integer(required=True)
    household_id = fields.Integer(required=True)
    name = fields.String(required=True)
    house_number = fields.String(required=True)
    group = fields.String(required=True)
    village = fields.String(required=True)
    points = fields.Integer(required=True)
    awarded = fields.Integer(required=True)
    deducted = fields.Integer(required=True)


class RankingPage(Paged):
    items = fields.List(fields.Nested(RankingRow), required=True)
    period = fields.Nested(PeriodOut, required=True)
    scope = fields.String(required=True)
    scope_id = fields.Integer(required=True)
    tie_rule = fields.String(required=True)


class Board(Schema):
    id = fields.Integer(required=True)
    village_id = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={"enum": ["monthly", "courtyard"]})
    period = fields.String(required=True)
    version = fields.Integer(required=True)
    corrects_id = fields.Integer(allow_none=True)
    correction_note = fields.String(allow_none=True)
    published_at = LocalDateTime(required=True)
    content = fields.Dict(required=True, metadata={"description": "The frozen snapshot"})


BoardPage = page_schema(Board, "BoardPage")


class MonthTotals(Schema):
    month = fields.String(required=True, metadata={"description": "YYYY-MM"})
    issued = fields.Integer(required=True)
    deducted = fields.Integer(required=True)
    redeemed = fields.Integer(required=True)


class TotalsQuery(PeriodQuery, PageQuery):
    pass


class Totals(Paged):
    village_id = fields.Integer(required=True)
    period = fields.Nested(PeriodOut, required=True)
    items = fields.List(fields.Nested(MonthTotals), required=True)
