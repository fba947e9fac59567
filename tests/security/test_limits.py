"""Request body limits on every URL, and the throttles of the anonymous and webhook endpoints (in Redis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.throttling import SimpleRateThrottle

from core.redis import get_redis
from tests.security.conftest import World
from tests.security.test_authorization import endpoint_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_limits(settings: Any) -> None:
    settings.REQUEST_BODY_MAX_BYTES = 4096
    settings.REQUEST_UPLOAD_MAX_BYTES = 64 * 1024


def assert_error_body(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body: dict[str, Any] = json.loads(response.content)
    assert isinstance(body["detail"], str) and body["detail"] and body["errors"] == {}
    return body


def test_the_default_limits_are_set_and_django_buffers_no_more_than_the_body_limit(settings: Any) -> None:
    assert settings.REQUEST_BODY_MAX_BYTES == 1024 * 1024
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == settings.REQUEST_BODY_MAX_BYTES
    # room for the five evidence files a milestone submission may carry
    assert settings.REQUEST_UPLOAD_MAX_BYTES >= 5 * settings.ESCROW_EVIDENCE_MAX_BYTES
    assert "core.limits.RequestBodyLimitMiddleware" in settings.MIDDLEWARE


@pytest.mark.parametrize("persona", ["anonymous", "staff"])
def test_every_url_refuses_a_body_over_the_limit_with_413_json_before_reading_it(
    persona: str, world: World, small_limits: None
) -> None:
    # Given every endpoint of the authorization matrix (every URL the resolver serves)
    client = Client()
    oversized = json.dumps({"padding": "x" * 5000})
    for method, template in endpoint_rows():
        path = template.format(**world.ids, task_id="no-such-task", run_id="no-such-run", key="payment_timeouts")
        # When a JSON body of 5 KB is sent where 4 KB is the limit
        response = client.generic(
            "POST" if method == "GET" else method, path, oversized, "application/json", **world.environ(persona)
        )
        # Then the answer is 413 with the error body, whoever asks
        body = assert_error_body(response, 413)
        assert "over the limit of 4096 bytes" in body["detail"], (method, path)


def test_a_body_within_the_limit_is_served_as_usual(world: World, small_limits: None) -> None:
    response = Client().post(
        "/api/v1/cart/items/",
        {"product_id": world.ids["product"], "quantity": 1},
        "application/json",
        **world.environ("customer"),
    )
    assert response.status_code == 201


def test_uploads_have_their_own_larger_limit(world: World, small_limits: None, settings: Any, tmp_path: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.support.factories.escrow import PDF_BYTES

    settings.MEDIA_ROOT = tmp_path
    client = Client()
    url = f"/api/v1/escrow/milestones/{world.ids['milestone_pending']}/submit/"
    # A 20 KB evidence file is over the JSON limit but within the upload limit: it reaches the view
    small = SimpleUploadedFile("plan.pdf", PDF_BYTES + b"0" * 20_000, content_type="application/pdf")
    assert client.post(url, {"evidence": [small]}, **world.environ("seller")).status_code == 200
    # A 70 KB one is over the upload limit: 413, unread
    big = SimpleUploadedFile("plan.pdf", PDF_BYTES + b"0" * 70_000, content_type="application/pdf")
    assert_error_body(client.post(url, {"evidence": [big]}, **world.environ("seller")), 413)


def test_a_garbled_content_length_is_refused_with_400_json() -> None:
    response = Client().post("/api/v1/cart/", "{}", "application/json", CONTENT_LENGTH="ten")
    assert_error_body(response, 400)


def test_too_many_form_fields_is_a_400_json_not_a_crash(world: World, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = "&".join(f"f{i}=1" for i in range(20))
    response = Client().post(
        "/api/v1/cart/items/", fields, "application/x-www-form-urlencoded", **world.environ("customer")
    )
    assert_error_body(response, 400)


# THROTTLES
# ------------------------------------------------------------------------------
@pytest.fixture
def low_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"pricing_anon": "3/min", "pricing_user": "5/min", "webhook": "4/min"}
    )


def test_the_anonymous_price_endpoint_is_throttled_per_ip_in_redis(world: World, low_rates: None) -> None:
    client = Client()
    url = f"/api/v1/products/{world.ids['product']}/price/"
    # Given three anonymous requests from one address (the limit)
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]
    # When a fourth comes, even claiming another address in X-Forwarded-For (no proxy is trusted)
    throttled = client.get(url, HTTP_X_FORWARDED_FOR="203.0.113.9")
    # Then it gets 429 with the error body and when to retry, and the count is in Redis
    assert_error_body(throttled, 429)
    assert int(throttled["Retry-After"]) > 0
    assert any("throttle_pricing_anon" in str(key) for key in get_redis().keys("*throttle_*"))
    # and a signed-in caller has its own, larger allowance
    assert client.get(url, **world.environ("customer")).status_code == 200


def test_the_webhook_is_throttled_per_ip(low_rates: None, settings: Any) -> None:
    settings.RAZORPAY_WEBHOOK_SECRET = "webhook-secret-for-the-limits-test"
    client = Client()
    answers = [
        client.post("/api/v1/webhooks/razorpay/", "{}", "application/json", HTTP_X_RAZORPAY_SIGNATURE="bad").status_code
        for _ in range(5)
    ]
    assert answers == [400, 400, 400, 400, 429]


def test_a_malformed_rate_fails_at_start() -> None:
    import subprocess
    import sys

    from tests.security.test_gates import ROOT

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={
            **__import__("os").environ,
            "API_THROTTLE_WEBHOOK_RATE": "lots",
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "API_THROTTLE_WEBHOOK_RATE must look like 60/min" in result.stderr
