"""The API's document for integrators: OpenAPI 3.1 at /api/v1/openapi.json, rendered at /api/v1/docs."""

from __future__ import annotations

from flask import Blueprint, render_template, url_for

bp = Blueprint("api_docs", __name__, url_prefix="/api/v1")

#: The error responses every operation may give, all in the one envelope.
ERRORS = {
    "400": "Malformed request, paging or Idempotency-Key",
    "401": "No valid API token",
    "403": "The token's role or place does not allow it",
    "404": "No such object, or not the token's to see",
    "409": "Refused by a rule: not enough points, out of stock, already resolved…",
    "422": "Invalid input, or an Idempotency-Key reused for another request",
}


def finish_spec(api) -> None:
    """Give every operation the error responses, a bearer security requirement and the envelope."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path in api.spec._paths.values():
        for operation in path.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation.setdefault("security", [{"bearerAuth": []}])
            for status, description in ERRORS.items():
                operation["responses"].setdefault(status, {"description": description, **error})
            operation["responses"].setdefault(
                "default", {"description": "Any other error", **error}
            )
    # A checkout names its household one way only: the scanned card or a household_id.
    api.spec.components.schemas["CheckoutRequest"]["oneOf"] = [
        {"required": ["card"]},
        {"required": ["household_id"]},
    ]


@bp.get("/docs")
def docs():
    """Render the API document for integrators (vendored Redoc, no CDN)."""
    return render_template("api/docs.html", spec_url=url_for("api-docs.openapi_json"))
