from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.models import User
from logistics.demo import load_demo_data
from logistics.models import Driver, Station, StockRequest
from tests.support.factories.logistics import StationFactory, assigning_request


@pytest.mark.django_db
def test_the_admin_lists_and_shows_every_logistics_model_with_a_requests_offer_history(
    staff_user: User, driver: Driver, django_assert_max_num_queries: Any
) -> None:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    request = assigning_request(driver=driver)
    for model in ("station", "driver", "stockrequest", "assignmentoffer"):
        with django_assert_max_num_queries(15):
            assert client.get(f"/admin/logistics/{model}/").status_code == 200
        assert client.get(f"/admin/logistics/{model}/?q=Driver").status_code == 200
    page = client.get(f"/admin/logistics/stockrequest/{request.pk}/change/")
    assert page.status_code == 200
    assert b"Open" in page.content and driver.name.encode() in page.content


@pytest.mark.django_db
def test_the_demo_data_loads_twice_without_duplicates() -> None:
    first = load_demo_data()
    counts = (Station.objects.count(), Driver.objects.count(), StockRequest.objects.count(), User.objects.count())
    second = load_demo_data()
    assert first == second
    assert counts == (
        Station.objects.count(),
        Driver.objects.count(),
        StockRequest.objects.count(),
        User.objects.count(),
    )
    assert User.objects.get(username="eic_demo").groups.filter(name="eic").exists()
    assert counts[:3] == (3, 2, 2)


@pytest.mark.django_db
def test_the_admin_accepts_a_stock_request_only_for_a_daughter_booster_station(staff_user: User) -> None:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    mother = StationFactory(code="MS-1", kind=Station.Kind.MS)
    booster = StationFactory(code="DBS-1", kind=Station.Kind.DBS)
    url = "/admin/logistics/stockrequest/add/"
    form = {
        "quantity": 500,
        "created_at_0": "2026-03-02",
        "created_at_1": "09:00:00",
        "offers-TOTAL_FORMS": 0,
        "offers-INITIAL_FORMS": 0,
    }

    refused = client.post(url, {**form, "station": mother.pk})
    assert refused.status_code == 200
    assert "station" in refused.context["adminform"].form.errors
    assert not StockRequest.objects.exists()

    added = client.post(url, {**form, "station": booster.pk})
    assert added.status_code == 302
    assert StockRequest.objects.get().station == booster
