"""Pricing endpoints: the seed's two curl commands, the status endpoint, the price, the history, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import JobRun, User
from payments.apis.pricing import PriceAnonRateThrottle
from payments.models import Discount, PriceSnapshot
from payments.services.pricing import discounts_recompute
from tests.support.broker import BrokerProbe
from tests.support.factories.pricing import BatchFactory, ProductFactory, default_policy

pytestmark = pytest.mark.django_db

TRIGGER = "/api/v1/admin/discounts/trigger-recompute"
STATUS = "/api/v1/admin/discounts/task-status/"


@pytest.fixture(autouse=True)
def policy() -> Any:
    return default_policy()


# The seed's calls ------------------------------------------------------------------------------


def test_the_seeds_async_trigger_answers_202_and_queues_the_recompute_on_the_payments_queue(
    staff_client: APIClient, staff_user: User, broker: BrokerProbe, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"{TRIGGER}?days_threshold=30&async_task=true")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued"
    assert body["status_url"].endswith(f"{STATUS}{body['task_id']}")
    run = JobRun.objects.get(task_id=body["task_id"])
    assert (run.job_key, run.source, run.params, run.triggered_by_id) == (
        "discount_recompute",
        "api",
        {"days_threshold": 30},
        staff_user.pk,
    )
    [sent] = broker.tasks("payments", "payments.recompute_all_discounts")
    assert (sent.id, sent.kwargs) == (body["task_id"], {"days_threshold": 30})

    status = staff_client.get(f"{STATUS}{body['task_id']}")
    assert status.status_code == 200
    assert (status.json()["state"], status.json()["job_run"]["status"]) == ("PENDING", "queued")


def test_the_seeds_sync_trigger_runs_inline_and_answers_200_with_the_summary(staff_client: APIClient) -> None:
    BatchFactory(days=20)
    BatchFactory(days=2)

    response = staff_client.post(f"{TRIGGER}?async_task=false")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "succeeded"
    summary = body["summary"]
    assert (summary["days_threshold"], summary["batches_considered"], summary["discounts_created"]) == (30, 2, 2)
    assert JobRun.objects.get(task_id=body["task_id"]).source == "api"
    assert Discount.objects.filter(status="active").count() == 2

    status = staff_client.get(body["status_url"])
    assert (status.status_code, status.json()["state"]) == (200, "SUCCESS")
    assert status.json()["result"]["discounts_created"] == 2


def test_both_shortcuts_answer_with_and_without_a_trailing_slash(staff_client: APIClient) -> None:
    run = staff_client.post(f"{TRIGGER}/?async_task=false&days_threshold=7").json()

    assert run["summary"]["days_threshold"] == 7
    assert staff_client.get(f"{STATUS}{run['task_id']}/").status_code == 200


def test_the_status_of_a_task_we_never_issued_is_a_404_in_json(staff_client: APIClient) -> None:
    response = staff_client.get(f"{STATUS}no-such-task")

    assert response.status_code == 404
    assert "no-such-task" in response.json()["detail"]


@pytest.mark.parametrize("value", ["0", "366", "-3", "abc", "2.5", ""])
def test_a_bad_threshold_is_a_400_naming_the_field_and_nothing_is_queued(
    staff_client: APIClient, broker: BrokerProbe, django_capture_on_commit_callbacks: Any, value: str
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"{TRIGGER}?days_threshold={value}&async_task=true")

    assert response.status_code == 400
    assert "days_threshold" in response.json()["errors"]
    assert not JobRun.objects.exists()
    assert broker.tasks("payments") == []


@pytest.mark.parametrize(("query", "field"), [("async_task=maybe", "async_task"), ("days=7", "days")])
def test_a_non_boolean_async_task_or_an_unknown_parameter_is_a_400(
    staff_client: APIClient, query: str, field: str
) -> None:
    response = staff_client.post(f"{TRIGGER}?{query}")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not JobRun.objects.exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", TRIGGER),
        ("get", f"{STATUS}abc"),
        ("get", "/api/v1/admin/products/1/price-history/"),
    ],
)
def test_the_admin_endpoints_are_staff_only(
    anon_client: APIClient, customer_client: APIClient, method: str, url: str
) -> None:
    assert getattr(anon_client, method)(url).status_code == 401
    assert getattr(customer_client, method)(url).status_code == 403
    assert not JobRun.objects.exists()


# The effective price ------------------------------------------------------------------------------


def test_anyone_may_read_a_products_effective_price(anon_client: APIClient) -> None:
    product = ProductFactory(price=Decimal("12.00"))
    batch = BatchFactory(product=product, days=7)
    discounts_recompute()

    response = anon_client.get(f"/api/v1/products/{product.pk}/price/")

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("price", "base_price", "currency", "discount_percentage", "source", "batch_id")} == {
        "price": "6.50",
        "base_price": "10.00",
        "currency": "EUR",
        "discount_percentage": "35.00",
        "source": "discount",
        "batch_id": batch.pk,
    }


def test_prices_are_shown_in_the_currencys_minor_units(anon_client: APIClient) -> None:
    yen, dinar = ProductFactory(currency="JPY", price=Decimal("1500")), ProductFactory(currency="KWD")
    BatchFactory(product=yen, days=3, base_price=Decimal("1001"), cost=Decimal("100"))
    BatchFactory(product=dinar, days=7, base_price=Decimal("1.235"), cost=Decimal("0.100"))
    discounts_recompute()

    assert anon_client.get(f"/api/v1/products/{yen.pk}/price/").json()["price"] == "501"
    assert anon_client.get(f"/api/v1/products/{dinar.pk}/price/").json()["price"] == "0.803"


def test_an_unknown_product_is_a_404_in_json(anon_client: APIClient) -> None:
    response = anon_client.get("/api/v1/products/987654/price/")

    assert response.status_code == 404
    assert response.json()["detail"] == "No product with id 987654."


def test_anonymous_price_reads_are_throttled(anon_client: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PriceAnonRateThrottle, "default_rate", "2/min")
    product = ProductFactory()
    url = f"/api/v1/products/{product.pk}/price/"

    codes = [anon_client.get(url).status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    assert "detail" in anon_client.get(url).json()


# Price history --------------------------------------------------------------------------------------


def _snapshot(product: Any, batch: Any, slot: datetime, price: str) -> PriceSnapshot:
    return PriceSnapshot.objects.create(
        product=product,
        batch=batch,
        slot=slot,
        price=Decimal(price),
        base_price=Decimal("10.00"),
        percentage=Decimal(0),
        currency="EUR",
    )


def test_staff_read_a_products_price_history_between_two_dates(staff_client: APIClient) -> None:
    product = ProductFactory()
    batch = BatchFactory(product=product)
    for hour, price in ((0, "10.00"), (6, "9.00"), (12, "8.00")):
        _snapshot(product, batch, datetime(2030, 5, 1, hour, tzinfo=UTC), price)
    _snapshot(product, batch, datetime(2030, 5, 3, tzinfo=UTC), "7.00")

    response = staff_client.get(
        f"/api/v1/admin/products/{product.pk}/price-history/", {"from": "2030-05-01T06:00:00Z", "to": "2030-05-02"}
    )

    assert response.status_code == 200, response.json()
    points = response.json()["points"]
    assert [(p["slot"], p["price"], p["lot_code"]) for p in points] == [
        ("2030-05-01T06:00:00Z", "9.00", batch.lot_code),
        ("2030-05-01T12:00:00Z", "8.00", batch.lot_code),
    ]


def test_the_history_defaults_to_the_last_30_days(staff_client: APIClient) -> None:
    product = ProductFactory()
    batch = BatchFactory(product=product)
    _snapshot(product, batch, timezone.now() - timedelta(days=2), "9.00")
    _snapshot(product, batch, timezone.now() - timedelta(days=40), "9.50")

    points = staff_client.get(f"/api/v1/admin/products/{product.pk}/price-history/").json()["points"]

    assert [p["price"] for p in points] == ["9.00"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2030-05-02", "to": "2030-05-01"}, "from"),
        ({"from": "2020-01-01", "to": "2030-01-01"}, "to"),
    ],
)
def test_bad_history_dates_are_a_400_naming_the_field(
    staff_client: APIClient, query: dict[str, str], field: str
) -> None:
    product = ProductFactory()

    response = staff_client.get(f"/api/v1/admin/products/{product.pk}/price-history/", query)

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_the_history_of_an_unknown_product_is_a_404(staff_client: APIClient) -> None:
    assert staff_client.get("/api/v1/admin/products/987654/price-history/").status_code == 404


def test_the_openapi_schema_documents_the_pricing_endpoints(staff_client: APIClient) -> None:
    response = staff_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/v1/products/{id}/price/",
        "/api/v1/admin/products/{id}/price-history/",
        "/api/v1/admin/discounts/trigger-recompute",
        "/api/v1/admin/discounts/task-status/{task_id}",
    } <= set(paths)
