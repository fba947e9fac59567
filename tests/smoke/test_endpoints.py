"""Every HTTP endpoint, with every persona, on `make run`'s SQLite configuration.

The operations come from the URL resolver (each route and each method its view handles), so
a new endpoint is a new test at once; one without a recipe below fails, naming itself. Each
recipe sends a realistic, valid request against the demo world (tests/smoke/conftest.py),
says which personas must succeed, and every other answer must be a JSON error, never a 5xx.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from payments.gateways import webhook_signature
from tests.smoke.conftest import PERSONAS, World
from tests.support.factories.escrow import PDF_BYTES

SIGNED_IN = frozenset(PERSONAS) - {"anonymous"}
EVERYONE = frozenset(PERSONAS)
STAFF = frozenset({"staff"})
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Call:
    """One request, and who must get a 2xx for it."""

    path: str
    data: Any = None
    format: str = "json"
    headers: dict[str, str] = field(default_factory=dict)
    ok: frozenset[str] = frozenset()
    settings: dict[str, Any] = field(default_factory=dict)
    # Only where the contract answers 5xx on purpose (health: a dependency is down).
    allow_503: bool = False
    # Errors that are not JSON by protocol (Prometheus reads /metrics as text).
    json_errors: bool = True
    status: int | None = None


Recipe = Callable[[World], Call]


def _operations() -> Iterator[tuple[str, str, Any]]:
    """(route, METHOD, callback) for every URL outside the Django admin."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue  # the admin site: tests/smoke/test_admin.py
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    for route, pattern in walk(get_resolver().url_patterns, ""):
        view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        if view is None:  # a plain Django function view: it answers GET
            yield route, "GET", pattern.callback
            continue
        for method in METHODS:
            if hasattr(view, method):
                yield route, method.upper(), pattern.callback


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _webhook(w: World) -> Call:
    body = {
        "entity": "event",
        "event": "payment.captured",
        "payload": {"payment": {"entity": {"id": "pay_smoke_unknown", "status": "captured", "amount": 799}}},
    }
    raw = json.dumps(body)
    secret = "smoke-webhook-secret"
    return Call(
        "/api/v1/webhooks/razorpay/",
        data=raw,
        format="raw",
        headers={"X-Razorpay-Signature": webhook_signature(secret, raw.encode())},
        ok=EVERYONE,
        settings={"RAZORPAY_WEBHOOK_SECRET": secret},
    )


def _evidence(w: World) -> Call:
    files = [SimpleUploadedFile("wireframes.pdf", PDF_BYTES, content_type="application/pdf")]
    return Call(
        f"/api/v1/escrow/milestones/{w.pending_milestone_id}/submit/",
        data={"evidence": files},
        format="multipart",
        ok=frozenset({"seller"}),
    )


_ESCROW = {
    "title": "Smoke: label design",
    "amount": "100.00",
    "currency": "EUR",
    "milestones": [{"title": "Draft", "amount": "40.00"}, {"title": "Final", "amount": "60.00"}],
}

# Keyed by route (as the resolver spells it) and method.
RECIPES: dict[tuple[str, str], Recipe] = {
    ("health/", "GET"): lambda w: Call("/health/", allow_503=True),
    ("metrics", "GET"): lambda w: Call(
        "/metrics",
        headers={"Authorization": _basic("prometheus:smoke-test-only")},
        ok=EVERYONE,
        json_errors=False,
    ),
    # Jobs and tasks (staff).
    ("api/v1/admin/jobs/", "GET"): lambda w: Call("/api/v1/admin/jobs/", ok=STAFF),
    ("api/v1/admin/jobs/runs/<str:run_id>/retry/", "POST"): lambda w: Call(
        f"/api/v1/admin/jobs/runs/{w.failed_run_id}/retry/", ok=STAFF
    ),
    ("api/v1/admin/jobs/<str:key>/", "GET"): lambda w: Call("/api/v1/admin/jobs/payment_timeouts/", ok=STAFF),
    ("api/v1/admin/jobs/<str:key>/trigger/", "POST"): lambda w: Call(
        "/api/v1/admin/jobs/payment_timeouts/trigger/",
        data={"params": {"older_than_days": 3}, "async": False},
        ok=STAFF,
    ),
    ("api/v1/admin/jobs/<str:key>/resume/", "POST"): lambda w: Call(
        f"/api/v1/admin/jobs/{w.paused_job}/resume/", ok=STAFF
    ),
    ("api/v1/admin/tasks/<str:task_id>/", "GET"): lambda w: Call(f"/api/v1/admin/tasks/{w.task_id}/", ok=STAFF),
    ("api/v1/admin/tasks/<str:task_id>/revoke/", "POST"): lambda w: Call(
        f"/api/v1/admin/tasks/{w.task_id}/revoke/", data={"terminate": False}, ok=STAFF
    ),
    ("api/v1/admin/notifications/<int:notification_id>/retry/", "POST"): lambda w: Call(
        f"/api/v1/admin/notifications/{w.failed_notification_id}/retry/", ok=STAFF
    ),
    # Carts (any signed-in user has one; the demo customer's holds the tea).
    ("api/v1/cart/", "GET"): lambda w: Call("/api/v1/cart/", ok=SIGNED_IN),
    ("api/v1/cart/", "POST"): lambda w: Call(
        "/api/v1/cart/", data={"product_id": w.cart_product_id, "quantity": 1}, ok=SIGNED_IN
    ),
    ("api/v1/cart/items/", "POST"): lambda w: Call(
        "/api/v1/cart/items/", data={"product_id": w.cart_product_id, "quantity": 2}, ok=SIGNED_IN
    ),
    ("api/v1/cart/items/<int:product_id>/", "PATCH"): lambda w: Call(
        f"/api/v1/cart/items/{w.cart_product_id}/", data={"quantity": 3}, ok=frozenset({"customer"})
    ),
    ("api/v1/cart/items/<int:product_id>/", "DELETE"): lambda w: Call(
        f"/api/v1/cart/items/{w.cart_product_id}/", ok=frozenset({"customer"})
    ),
    ("api/v1/webhooks/razorpay/", "POST"): _webhook,
    # Escrow: the demo buyer and seller are the parties.
    ("api/v1/escrow/transactions/", "GET"): lambda w: Call("/api/v1/escrow/transactions/", ok=SIGNED_IN),
    ("api/v1/escrow/transactions/", "POST"): lambda w: Call(
        "/api/v1/escrow/transactions/", data={**_ESCROW, "seller": w.seller_id}, ok=SIGNED_IN - {"seller"}
    ),
    ("api/v1/escrow/transactions/<int:pk>/", "GET"): lambda w: Call(
        f"/api/v1/escrow/transactions/{w.escrow_created_id}/", ok=frozenset({"buyer", "seller", "staff"})
    ),
    ("api/v1/escrow/transactions/<int:pk>/fund/", "POST"): lambda w: Call(
        f"/api/v1/escrow/transactions/{w.escrow_created_id}/fund/",
        data={},
        headers={"Idempotency-Key": "smoke-fund-1"},
        ok=frozenset({"buyer"}),
    ),
    ("api/v1/escrow/transactions/<int:pk>/cancel/", "POST"): lambda w: Call(
        f"/api/v1/escrow/transactions/{w.escrow_created_id}/cancel/", ok=frozenset({"buyer", "seller"})
    ),
    ("api/v1/escrow/transactions/<int:pk>/dispute/", "POST"): lambda w: Call(
        f"/api/v1/escrow/transactions/{w.escrow_in_progress_id}/dispute/",
        data={"reason": "The beta build does not start."},
        ok=frozenset({"buyer", "seller"}),
    ),
    ("api/v1/escrow/transactions/<int:pk>/release/", "POST"): lambda w: Call(
        f"/api/v1/escrow/transactions/{w.escrow_approved_id}/release/",
        data={"milestone": w.approved_milestone_id},
        ok=frozenset({"buyer"}),
    ),
    ("api/v1/escrow/milestones/<int:pk>/submit/", "POST"): _evidence,
    ("api/v1/escrow/milestones/<int:pk>/approve/", "POST"): lambda w: Call(
        f"/api/v1/escrow/milestones/{w.submitted_milestone_id}/approve/", ok=frozenset({"buyer"})
    ),
    ("api/v1/escrow/milestones/<int:pk>/reject/", "POST"): lambda w: Call(
        f"/api/v1/escrow/milestones/{w.submitted_milestone_id}/reject/",
        data={"reason": "Ten descriptions are missing."},
        ok=frozenset({"buyer"}),
    ),
    ("api/v1/escrow/verification/", "GET"): lambda w: Call("/api/v1/escrow/verification/", ok=frozenset({"seller"})),
    ("api/v1/escrow/verification/", "POST"): lambda w: Call(
        "/api/v1/escrow/verification/",
        data={"documents": [{"kind": "business_registration", "reference": "SMOKE-REG-2"}]},
        ok=SIGNED_IN - {"seller"},
    ),
    ("api/v1/escrow/verifications/", "GET"): lambda w: Call("/api/v1/escrow/verifications/?status=PENDING", ok=STAFF),
    ("api/v1/escrow/verifications/<int:pk>/review/", "POST"): lambda w: Call(
        f"/api/v1/escrow/verifications/{w.pending_verification_id}/review/", data={"status": "VERIFIED"}, ok=STAFF
    ),
    # Pricing.
    ("api/v1/products/<int:pk>/price/", "GET"): lambda w: Call(
        f"/api/v1/products/{w.priced_product_id}/price/", ok=EVERYONE
    ),
    ("api/v1/admin/products/<int:pk>/price-history/", "GET"): lambda w: Call(
        f"/api/v1/admin/products/{w.priced_product_id}/price-history/", ok=STAFF
    ),
    ("api/v1/admin/discounts/trigger-recompute", "POST"): lambda w: Call(
        "/api/v1/admin/discounts/trigger-recompute?days_threshold=30&async_task=false", ok=STAFF
    ),
    ("api/v1/admin/discounts/trigger-recompute/", "POST"): lambda w: Call(
        "/api/v1/admin/discounts/trigger-recompute/?days_threshold=7&async_task=true", ok=STAFF
    ),
    ("api/v1/admin/discounts/task-status/<str:task_id>", "GET"): lambda w: Call(
        f"/api/v1/admin/discounts/task-status/{w.task_id}", ok=STAFF
    ),
    ("api/v1/admin/discounts/task-status/<str:task_id>/", "GET"): lambda w: Call(
        f"/api/v1/admin/discounts/task-status/{w.task_id}/", ok=STAFF
    ),
    # OpenAPI.
    ("api/v1/schema/", "GET"): lambda w: Call("/api/v1/schema/?format=json", ok=STAFF),
    ("api/v1/docs/", "GET"): lambda w: Call("/api/v1/docs/", ok=STAFF),
    # Logistics: driver_demo1 holds an open offer; the EIC offers the other request to driver_demo2.
    ("api/driver/pending-offers", "GET"): lambda w: Call("/api/driver/pending-offers", ok=frozenset({"driver"})),
    ("api/driver-trips/accept/", "POST"): lambda w: Call(
        "/api/driver-trips/accept/", data={"stock_request_id": w.offered_request_id}, ok=frozenset({"driver"})
    ),
    ("api/driver-trips/reject/", "POST"): lambda w: Call(
        "/api/driver-trips/reject/", data={"stock_request_id": w.offered_request_id}, ok=frozenset({"driver"})
    ),
    ("api/eic/stock-requests/<int:pk>/status/", "PATCH"): lambda w: Call(
        f"/api/eic/stock-requests/{w.pending_request_id}/status/",
        data={"status": "ASSIGNING", "target_driver": w.other_driver_id},
        ok=frozenset({"eic"}),
    ),
    # Any other /api/ URL.
    ("^api/(?P<unmatched>.*)$", "GET"): lambda w: Call("/api/v1/no-such-endpoint/", status=404),
}

OPERATIONS = sorted({(route, method) for route, method, _ in _operations()})


def test_every_recipe_names_an_endpoint_that_exists() -> None:
    stale = sorted(set(RECIPES) - set(OPERATIONS))
    assert not stale, f"recipes for endpoints that no longer exist: {stale}"


def test_every_operation_of_the_openapi_schema_is_one_the_suite_sends() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    # Parameter names aside (the schema calls a `pk` `id`).
    documented = {
        (re.sub(r"{\w+}", "{}", path), method.upper()) for path, item in schema["paths"].items() for method in item
    }
    sent = {("/" + re.sub(r"<(?:\w+:)?\w+>", "{}", route), method) for route, method in OPERATIONS}
    assert documented <= sent, f"documented but not sent: {sorted(documented - sent)}"


def _client(world: World, persona: str) -> APIClient:
    client = APIClient()
    user = world.users[persona]
    if user is not None:
        client.force_authenticate(user)
    return client


def _send(client: APIClient, method: str, call: Call) -> Any:
    send = getattr(client, method.lower())
    if call.format == "raw":
        return send(call.path, data=call.data, content_type="application/json", headers=call.headers)
    if call.data is None:
        return send(call.path, headers=call.headers)
    return send(call.path, data=call.data, format=call.format, headers=call.headers)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("route", "method"), OPERATIONS, ids=[f"{m} {r}" for r, m in OPERATIONS])
def test_the_endpoint_answers_every_persona_without_a_server_error(
    world: World, route: str, method: str, persona: str
) -> None:
    recipe = RECIPES.get((route, method))
    assert recipe is not None, (
        f"{method} {route} has no recipe in tests/smoke/test_endpoints.py RECIPES: add one (a valid request "
        "and the personas that must succeed) so the smoke suite exercises it on SQLite"
    )
    call = recipe(world)

    with override_settings(**call.settings):
        response = _send(_client(world, persona), method, call)

    status = response.status_code
    body = response.content.decode(errors="replace")[:800]
    where = f"{method} {call.path} as {persona}: {status} {body}"
    if call.allow_503 and status == 503:
        # No worker or beat runs beside the suite: /health/ says so, and finds the database and broker up.
        report = response.json()
        assert report["checks"]["database"]["ok"] and report["checks"]["broker"]["ok"], where
        assert set(report["down"]) <= {"workers", "beat", "jobs"}, where
    else:
        assert status < 500, where
    if call.status is not None:
        assert status == call.status, where
    if persona in call.ok:
        assert 200 <= status < 300, where
    elif persona == "anonymous" and call.status is None and not call.allow_503:
        assert status == 401, where  # the contract: anonymous is 401 (shared/DESIGN.md, "Errors and bad input")
    if status >= 400 and call.json_errors:
        assert response["Content-Type"].startswith("application/json"), where
        if status != 503 or not call.allow_503:  # /health/'s 503 is its report
            assert isinstance(response.json().get("detail"), str), where
