"""The authorization matrix: every endpoint, every persona, the status it answers.

One table, here and in docs/security.md (the test checks they are the same). Every URL the
resolver serves must have a row: a new endpoint without one fails
`test_every_endpoint_the_resolver_serves_has_a_row`.

Each persona runs the rows in order against a fresh world (tests/security/conftest.py): one
in-progress escrow transaction between the buyer and the seller (milestone 1 submitted,
milestone 2 pending), the seller's pending verification, a pending stock request and one
offered to the driver, a product in stock. Rows that change state come after the rows that
read it, so each cell is what that persona gets in that world. The rules the cells follow
(docs/security.md): anonymous 401; signed in without the role 403; another party's object 404
(never reveal it exists); a transition the state forbids 409.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.security.conftest import PERSONAS, World

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@dataclass(frozen=True)
class Row:
    method: str
    route: str  # the resolver's pattern, e.g. api/v1/escrow/transactions/<int:pk>/
    path: str  # the concrete URL, with {world ids}
    statuses: tuple[int, ...]  # in PERSONAS order: anonymous customer buyer seller driver eic staff
    body: Any = None
    content_type: str = "application/json"


MULTIPART = "multipart/form-data"

# fmt: off
MATRIX: list[Row] = [
    # ---- platform
    # An API token never opens the admin: it has its own session login (302 to it).
    Row("GET", "admin/", "/admin/", (302, 302, 302, 302, 302, 302, 302)),
    Row("GET", "health/", "/health/", (503, 503, 503, 503, 503, 503, 503)),
    Row("GET", "metrics", "/metrics", (401, 401, 401, 401, 401, 401, 401)),
    Row("GET", "api/v1/schema/", "/api/v1/schema/", (401, 403, 403, 403, 403, 403, 200)),
    Row("GET", "api/v1/docs/", "/api/v1/docs/", (401, 403, 403, 403, 403, 403, 200)),
    Row("GET", "^api/(?P<unmatched>.*)$", "/api/no-such-endpoint/", (404, 404, 404, 404, 404, 404, 404)),
    # ---- jobs and tasks (staff)
    Row("GET", "api/v1/admin/jobs/", "/api/v1/admin/jobs/", (401, 403, 403, 403, 403, 403, 200)),
    Row("GET", "api/v1/admin/jobs/<str:key>/", "/api/v1/admin/jobs/payment_timeouts/",
        (401, 403, 403, 403, 403, 403, 200)),
    Row("POST", "api/v1/admin/jobs/<str:key>/trigger/", "/api/v1/admin/jobs/no_such_job/trigger/",
        (401, 403, 403, 403, 403, 403, 404), {}),
    Row("POST", "api/v1/admin/jobs/<str:key>/resume/", "/api/v1/admin/jobs/payment_timeouts/resume/",
        (401, 403, 403, 403, 403, 403, 409)),
    Row("POST", "api/v1/admin/jobs/runs/<str:run_id>/retry/", "/api/v1/admin/jobs/runs/no-such-run/retry/",
        (401, 403, 403, 403, 403, 403, 404)),
    Row("GET", "api/v1/admin/tasks/<str:task_id>/", "/api/v1/admin/tasks/no-such-task/",
        (401, 403, 403, 403, 403, 403, 404)),
    Row("POST", "api/v1/admin/tasks/<str:task_id>/revoke/", "/api/v1/admin/tasks/no-such-task/revoke/",
        (401, 403, 403, 403, 403, 403, 404), {}),
    Row("POST", "api/v1/admin/notifications/<int:notification_id>/retry/", "/api/v1/admin/notifications/999999/retry/",
        (401, 403, 403, 403, 403, 403, 404)),
    # ---- pricing
    Row("GET", "api/v1/products/<int:pk>/price/", "/api/v1/products/{product}/price/",
        (200, 200, 200, 200, 200, 200, 200)),
    Row("GET", "api/v1/admin/products/<int:pk>/price-history/", "/api/v1/admin/products/{product}/price-history/",
        (401, 403, 403, 403, 403, 403, 200)),
    Row("POST", "api/v1/admin/discounts/trigger-recompute", "/api/v1/admin/discounts/trigger-recompute?bogus=1",
        (401, 403, 403, 403, 403, 403, 400)),
    Row("POST", "api/v1/admin/discounts/trigger-recompute/", "/api/v1/admin/discounts/trigger-recompute/?bogus=1",
        (401, 403, 403, 403, 403, 403, 400)),
    Row("GET", "api/v1/admin/discounts/task-status/<str:task_id>", "/api/v1/admin/discounts/task-status/no-such-task",
        (401, 403, 403, 403, 403, 403, 404)),
    Row("GET", "api/v1/admin/discounts/task-status/<str:task_id>/",
        "/api/v1/admin/discounts/task-status/no-such-task/", (401, 403, 403, 403, 403, 403, 404)),
    # ---- cart (any signed-in user, their own cart)
    Row("GET", "api/v1/cart/", "/api/v1/cart/", (401, 200, 200, 200, 200, 200, 200)),
    Row("POST", "api/v1/cart/", "/api/v1/cart/", (401, 201, 201, 201, 201, 201, 201),
        {"product_id": "{product}", "quantity": 1}),
    Row("POST", "api/v1/cart/items/", "/api/v1/cart/items/", (401, 201, 201, 201, 201, 201, 201),
        {"product_id": "{product}", "quantity": 1}),
    Row("PATCH", "api/v1/cart/items/<int:product_id>/", "/api/v1/cart/items/{product}/",
        (401, 200, 200, 200, 200, 200, 200), {"quantity": 3}),
    Row("DELETE", "api/v1/cart/items/<int:product_id>/", "/api/v1/cart/items/{product}/",
        (401, 200, 200, 200, 200, 200, 200)),
    # ---- subscription gateway webhook (the signature is the authentication)
    Row("POST", "api/v1/webhooks/razorpay/", "/api/v1/webhooks/razorpay/", (400, 400, 400, 400, 400, 400, 400), {}),
    # ---- escrow: parties see their own transactions; others get 404
    Row("GET", "api/v1/escrow/transactions/", "/api/v1/escrow/transactions/", (401, 200, 200, 200, 200, 200, 200)),
    Row("GET", "api/v1/escrow/transactions/<int:pk>/", "/api/v1/escrow/transactions/{escrow}/",
        (401, 404, 200, 200, 404, 404, 200)),
    Row("GET", "api/v1/escrow/verification/", "/api/v1/escrow/verification/", (401, 404, 404, 200, 404, 404, 404)),
    Row("GET", "api/v1/escrow/verifications/", "/api/v1/escrow/verifications/", (401, 403, 403, 403, 403, 403, 200)),
    Row("POST", "api/v1/escrow/verifications/<int:pk>/review/", "/api/v1/escrow/verifications/{verification}/review/",
        (401, 403, 403, 403, 403, 403, 400), {}),
    Row("POST", "api/v1/escrow/verification/", "/api/v1/escrow/verification/", (401, 400, 400, 400, 400, 400, 400),
        {}),
    Row("POST", "api/v1/escrow/transactions/", "/api/v1/escrow/transactions/", (401, 400, 400, 400, 400, 400, 400),
        {}),
    Row("POST", "api/v1/escrow/transactions/<int:pk>/fund/", "/api/v1/escrow/transactions/{escrow}/fund/",
        (401, 404, 409, 403, 404, 404, 403), {"idempotency_key": "matrix-fund-1"}),
    Row("POST", "api/v1/escrow/transactions/<int:pk>/cancel/", "/api/v1/escrow/transactions/{escrow}/cancel/",
        (401, 404, 409, 409, 404, 404, 403)),
    Row("POST", "api/v1/escrow/transactions/<int:pk>/release/", "/api/v1/escrow/transactions/{escrow}/release/",
        (401, 404, 409, 403, 404, 404, 403), {}),
    Row("POST", "api/v1/escrow/milestones/<int:pk>/submit/", "/api/v1/escrow/milestones/{milestone_pending}/submit/",
        (401, 404, 403, 200, 404, 404, 403), {"evidence": "{pdf}"}, MULTIPART),
    Row("POST", "api/v1/escrow/milestones/<int:pk>/reject/", "/api/v1/escrow/milestones/{milestone_submitted}/reject/",
        (401, 400, 400, 400, 400, 400, 400), {}),
    Row("POST", "api/v1/escrow/milestones/<int:pk>/approve/",
        "/api/v1/escrow/milestones/{milestone_submitted}/approve/", (401, 404, 200, 403, 404, 404, 403)),
    Row("POST", "api/v1/escrow/transactions/<int:pk>/dispute/", "/api/v1/escrow/transactions/{escrow}/dispute/",
        (401, 404, 200, 200, 404, 404, 403), {"reason": "Not as described"}),
    # ---- logistics: drivers act on their own offers; EIC users offer and cancel
    Row("GET", "api/driver/pending-offers", "/api/driver/pending-offers", (401, 403, 403, 403, 200, 403, 403)),
    Row("POST", "api/driver-trips/reject/", "/api/driver-trips/reject/", (401, 403, 403, 403, 404, 403, 403),
        {"stock_request_id": "{stock_request}"}),
    Row("POST", "api/driver-trips/accept/", "/api/driver-trips/accept/", (401, 403, 403, 403, 200, 403, 403),
        {"stock_request_id": "{offered_request}"}),
    Row("PATCH", "api/eic/stock-requests/<int:pk>/status/", "/api/eic/stock-requests/{stock_request}/status/",
        (401, 403, 403, 403, 403, 200, 403), {"status": "CANCELLED"}),
]
# fmt: on

SKIPPED_NAMESPACES = {"admin"}  # Django's admin site: one row (GET /admin/) stands for its own login wall


def _walk(patterns: list[URLPattern | URLResolver], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if pattern.namespace in SKIPPED_NAMESPACES:
                found.append((route, None))
                continue
            found += _walk(pattern.url_patterns, route)
        else:
            found.append((route, pattern.callback))
    return found


def resolver_endpoints() -> set[tuple[str, str]]:
    """(METHOD, route) for every URL the project serves; DRF views by the methods they implement."""
    endpoints: set[tuple[str, str]] = set()
    for route, callback in _walk(get_resolver().url_patterns):
        view = getattr(callback, "cls", None)
        if view is None:
            endpoints.add(("GET", route))
            continue
        for method in view.http_method_names:
            if method not in ("options", "head", "trace") and hasattr(view, method):
                endpoints.add((method.upper(), route))
    return endpoints


def endpoint_rows() -> list[tuple[str, str]]:
    """(METHOD, concrete path template) of every row, for tests that sweep every endpoint."""
    return [(row.method, row.path) for row in MATRIX]


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if value == "{pdf}":
        from tests.support.factories.escrow import upload

        return [upload()]
    if isinstance(value, str) and re.fullmatch(r"\{\w+\}", value):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def observed_statuses(persona: str, world: World) -> list[int]:
    client = Client()
    seen = []
    for row in MATRIX:
        path = row.path.format(**world.ids)
        if row.content_type == MULTIPART:
            response = client.post(path, _fill(row.body, world.ids), **world.environ(persona))
        else:
            body = "" if row.body is None else json.dumps(_fill(row.body, world.ids))
            response = client.generic(row.method, path, body, row.content_type, **world.environ(persona))
        seen.append(response.status_code)
    return seen


def markdown_table() -> str:
    header = "| endpoint | " + " | ".join(PERSONAS) + " |"
    rule = "| --- | " + " | ".join("---" for _ in PERSONAS) + " |"
    lines = [header, rule]
    for row in MATRIX:
        lines.append(f"| `{row.method} /{row.route.lstrip('^')}` | " + " | ".join(map(str, row.statuses)) + " |")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def metrics_token(settings: Any) -> None:
    settings.METRICS_TOKEN = "metrics-token-for-the-matrix"


def test_every_endpoint_the_resolver_serves_has_a_row() -> None:
    rows = {(row.method, row.route) for row in MATRIX}
    assert len(rows) == len(MATRIX), "two rows for one endpoint"
    missing = sorted(resolver_endpoints() - rows)
    assert missing == [], f"endpoints without a row in the authorization matrix: {missing}"
    stale = sorted(rows - resolver_endpoints())
    assert stale == [], f"rows for endpoints that no longer exist: {stale}"


def test_every_operation_of_the_schema_has_a_row() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    rows = {(row.method, re.sub(r"<\w+:(\w+)>", r"{\1}", "/" + row.route)) for row in MATRIX}
    operations = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    # drf-spectacular names an int path parameter `pk` as `id`
    rows |= {(m, p.replace("{pk}", "{id}")) for m, p in rows}
    assert operations - rows == set()


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_persona_gets_the_status_the_matrix_says_on_every_endpoint(
    persona: str, world: World, raised_throttles: None, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path
    column = PERSONAS.index(persona)
    expected = [row.statuses[column] for row in MATRIX]
    observed = observed_statuses(persona, world)
    differences = [
        f"{row.method} {row.path}: expected {want}, got {got}"
        for row, want, got in zip(MATRIX, expected, observed, strict=True)
        if want != got
    ]
    assert differences == [], f"{persona}: " + "; ".join(differences)


def test_docs_security_md_holds_the_same_table() -> None:
    assert markdown_table() in DOCS.read_text(), "regenerate the table: python -m tests.security.test_authorization"


if __name__ == "__main__":
    print(markdown_table())
