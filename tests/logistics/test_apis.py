"""The logistics HTTP API, persona by persona: EIC user, target driver, other driver, customer, anonymous."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.models import User
from logistics import services
from logistics.models import AssignmentOffer, Driver, Station, StockRequest
from notifications.models import PushDevice
from tests.support.broker import sent_tasks
from tests.support.factories.logistics import StationFactory, StockRequestFactory, age, assigning_request
from tests.support.outbox import intents

Status = StockRequest.Status
Outcome = AssignmentOffer.Outcome

PENDING_OFFERS = reverse("logistics:driver-pending-offers")
ACCEPT = reverse("logistics:driver-trip-accept")
REJECT = reverse("logistics:driver-trip-reject")
EXPIRE = "logistics.expire_assignment"
NOTIFY = "logistics.notify_eic_assignment_expired"  # the one-shot check's notice, one per offer
NOTIFY_CHUNK = "logistics.notify_eic_assignments_expired"  # the sweep's notice, one per chunk


def status_url(pk: int) -> str:
    return reverse("logistics:eic-stock-request-status", args=[pk])


def offer(client: APIClient, request_id: int, driver_id: int, mode: str = "MANUAL") -> Any:
    return client.patch(
        status_url(request_id),
        {"status": "ASSIGNING", "target_driver": driver_id, "assignment_mode": mode},
        format="json",
    )


def error(response: Any, status: int) -> dict[str, Any]:
    """The body of an API error: every one is `{"detail": "...", "errors": {...}}`."""
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str), body
    return body


def pushes(template: str) -> list[Any]:
    from notifications.models import Notification

    return list(Notification.objects.filter(template_key=template, channel="push").order_by("pk"))


def test_the_paths_are_the_ones_the_mobile_apps_call() -> None:
    assert PENDING_OFFERS == "/api/driver/pending-offers"
    assert ACCEPT == "/api/driver-trips/accept/"
    assert REJECT == "/api/driver-trips/reject/"
    assert status_url(7) == "/api/eic/stock-requests/7/status/"


@pytest.mark.django_db
class TestTheFullFlow:
    def test_offer_list_accept(
        self,
        eic_client: APIClient,
        driver_client: APIClient,
        other_driver_client: APIClient,
        driver: Driver,
        pending_request: StockRequest,
        django_capture_on_commit_callbacks: Any,
    ) -> None:
        # Given a pending request, when the EIC user offers it to the driver
        with django_capture_on_commit_callbacks(execute=True):
            response = offer(eic_client, pending_request.pk, driver.pk)
        # Then it is ASSIGNING to that driver, the driver gets a push and the expiry is booked for the deadline
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["status"], body["target_driver"], body["assignment_mode"]) == ("ASSIGNING", driver.pk, "MANUAL")
        the_offer = AssignmentOffer.objects.get(stock_request=pending_request)
        assert the_offer.expires_at - the_offer.offered_at == timedelta(seconds=300)
        [push] = pushes("driver_trip_offer")
        assert (push.user_id, push.to_address, push.status) == (driver.user_id, "driver-device-token", "pending")
        assert push.context == {
            "station_name": "Booster North",
            "quantity": 1200,
            "seconds_to_accept": 300,
            "stock_request_id": pending_request.pk,
            "data": {"type": "driver_trip_offer", "stock_request_id": pending_request.pk, "offer_id": the_offer.pk},
        }
        # (one intent in the offer's transaction, published at its commit with the deadline as ETA)
        [intent] = intents(EXPIRE)
        kwargs = {"stock_request_id": pending_request.pk, "offer_id": the_offer.pk}
        assert (intent.kwargs, intent.not_before) == (kwargs, the_offer.expires_at)
        assert intent.published_at is not None
        [expiry] = sent_tasks("logistics", EXPIRE)
        assert (expiry.args, expiry.kwargs) == ([], kwargs)
        assert datetime.fromisoformat(expiry.eta) == the_offer.expires_at

        # When the driver lists their offers 100 s later, they see it with 200 s left; the other driver sees none
        age(pending_request, 100)
        mine = driver_client.get(PENDING_OFFERS)
        theirs = other_driver_client.get(PENDING_OFFERS)
        assert mine.status_code == 200
        [listed] = mine.json()
        assert listed["stock_request_id"] == pending_request.pk
        assert listed["offer_id"] == the_offer.pk
        assert listed["seconds_left"] == 200
        assert listed["quantity"] == 1200 and listed["station"]["code"] == "DBS-N"
        assert theirs.json() == []

        # When the driver accepts before the deadline
        accepted = driver_client.post(ACCEPT, {"stock_request_id": pending_request.pk}, format="json")
        # Then the trip is theirs, and the offer is gone from their list
        assert accepted.status_code == 200, accepted.content
        assert (accepted.json()["status"], accepted.json()["driver"]) == ("ASSIGNED", driver.pk)
        the_offer.refresh_from_db()
        assert the_offer.outcome == Outcome.ACCEPTED
        assert driver_client.get(PENDING_OFFERS).json() == []

    def test_offer_reject(
        self,
        eic_client: APIClient,
        driver_client: APIClient,
        driver: Driver,
        eic_user: User,
        pending_request: StockRequest,
    ) -> None:
        second_eic = User.objects.create_user(username="eic2")
        second_eic.groups.add(eic_user.groups.get())
        PushDevice.objects.create(user=second_eic, token="eic2-device-token", platform="ios")
        assert offer(eic_client, pending_request.pk, driver.pk).status_code == 200
        # When the driver declines
        response = driver_client.post(REJECT, {"stock_request_id": pending_request.pk}, format="json")
        # Then the request is back in the pool at once and every EIC user's device is to be pushed, once each
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "PENDING" and response.json()["target_driver"] is None
        assert AssignmentOffer.objects.get().outcome == Outcome.REJECTED
        told = pushes("driver_offer_rejected")
        assert sorted((p.user_id, p.to_address, p.status) for p in told) == sorted(
            [(eic_user.pk, "eic-device-token", "pending"), (second_eic.pk, "eic2-device-token", "pending")]
        )
        assert told[0].context == {"driver_name": "Asha", "station_name": "Booster North"}
        # And a second reject changes nothing
        again = driver_client.post(REJECT, {"stock_request_id": pending_request.pk}, format="json")
        assert "no longer open" in error(again, 409)["detail"]
        assert len(pushes("driver_offer_rejected")) == 2

    def test_offer_then_let_it_expire(
        self,
        eic_client: APIClient,
        driver_client: APIClient,
        driver: Driver,
        eic_user: User,
        pending_request: StockRequest,
        django_capture_on_commit_callbacks: Any,
    ) -> None:
        from logistics.tasks import notify_eic_assignments_expired

        assert offer(eic_client, pending_request.pk, driver.pk).status_code == 200
        # When the sweep runs past the deadline
        age(pending_request, 301)
        with django_capture_on_commit_callbacks(execute=True):
            assert services.stock_requests_expire_assignments()["expired_count"] == 1
            listed = driver_client.get(PENDING_OFFERS).json()
            late = driver_client.post(ACCEPT, {"stock_request_id": pending_request.pk}, format="json")
        # Then the offer is gone from the list, a late accept is refused, and the EIC users are to be told
        assert listed == []
        assert error(late, 409) == {"detail": "offer expired", "errors": {}}
        the_offer = AssignmentOffer.objects.get(stock_request=pending_request)
        # (the sweep's one notice for its chunk, carrying the offer)
        [notice] = sent_tasks("logistics", NOTIFY_CHUNK)
        assert notice.kwargs == {"offer_ids": [the_offer.pk]}
        assert sent_tasks("logistics", NOTIFY) == []
        # When that notice runs (twice, as a redelivery would), the EIC user is pushed once
        runs = [notify_eic_assignments_expired.apply(kwargs=notice.kwargs).result for _ in "ab"]
        assert runs == [{"notified": 1, "offers": 1, "missing": 0}, {"notified": 0, "offers": 1, "missing": 0}]
        [push] = pushes("driver_assignment_expired")
        assert (push.user_id, push.to_address, push.status) == (eic_user.pk, "eic-device-token", "pending")
        assert push.context == {"driver_name": "Asha", "station_name": "Booster North"}
        # And the request can be offered again
        assert offer(eic_client, pending_request.pk, driver.pk).status_code == 200


@pytest.mark.django_db
class TestWhoMayDoWhat:
    def test_anonymous_callers_get_401_everywhere(self, anon_client: APIClient, pending_request: StockRequest) -> None:
        for response in (
            anon_client.get(PENDING_OFFERS),
            anon_client.post(ACCEPT, {"stock_request_id": 1}, format="json"),
            anon_client.post(REJECT, {"stock_request_id": 1}, format="json"),
            offer(anon_client, pending_request.pk, 1),
        ):
            assert error(response, 401)["errors"] == {}

    def test_a_customer_is_neither_eic_nor_a_driver(
        self, customer_client: APIClient, driver: Driver, pending_request: StockRequest
    ) -> None:
        for response in (
            offer(customer_client, pending_request.pk, driver.pk),
            customer_client.get(PENDING_OFFERS),
            customer_client.post(ACCEPT, {"stock_request_id": pending_request.pk}, format="json"),
        ):
            assert error(response, 403)["errors"] == {}
        pending_request.refresh_from_db()
        assert pending_request.status == Status.PENDING

    def test_a_driver_cannot_offer_trips(
        self, driver_client: APIClient, driver: Driver, pending_request: StockRequest
    ) -> None:
        error(offer(driver_client, pending_request.pk, driver.pk), 403)

    def test_another_driver_gets_404_for_an_offer_that_is_not_theirs(
        self,
        eic_client: APIClient,
        other_driver_client: APIClient,
        driver: Driver,
        pending_request: StockRequest,
    ) -> None:
        assert offer(eic_client, pending_request.pk, driver.pk).status_code == 200
        for url in (ACCEPT, REJECT):
            response = other_driver_client.post(url, {"stock_request_id": pending_request.pk}, format="json")
            missing = other_driver_client.post(url, {"stock_request_id": 99999}, format="json")
            # The same answer as for a request that does not exist
            assert error(response, 404) == {"detail": f"No stock request with id {pending_request.pk}.", "errors": {}}
            assert error(missing, 404) == {"detail": "No stock request with id 99999.", "errors": {}}
        pending_request.refresh_from_db()
        assert (pending_request.status, pending_request.target_driver_id) == (Status.ASSIGNING, driver.pk)

    def test_token_and_session_authentication_both_work(self, driver: Driver, pending_request: StockRequest) -> None:
        token = Token.objects.create(user=driver.user)
        with_token = APIClient()
        with_token.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        assert with_token.get(PENDING_OFFERS).status_code == 200
        driver.user.set_password("pw-driver-1")
        driver.user.save()
        with_session = APIClient()
        assert with_session.login(username="driver", password="pw-driver-1")
        assert with_session.get(PENDING_OFFERS).status_code == 200


@pytest.mark.django_db
class TestBadInput:
    @pytest.mark.parametrize("body", [{}, {"stock_request_id": "abc"}, {"stock_request_id": None}, {"id": 1}])
    def test_a_driver_body_without_a_valid_stock_request_id_is_a_400(
        self, driver_client: APIClient, body: dict[str, Any]
    ) -> None:
        for url in (ACCEPT, REJECT):
            response = driver_client.post(url, body, format="json")
            answer = error(response, 400)
            assert answer["detail"].startswith("Invalid input: stock_request_id")
            assert list(answer["errors"]) == ["stock_request_id"]

    def test_offering_to_an_inactive_driver_is_a_409_with_the_reason(
        self, eic_client: APIClient, driver: Driver, pending_request: StockRequest
    ) -> None:
        Driver.objects.filter(pk=driver.pk).update(active=False)
        response = offer(eic_client, pending_request.pk, driver.pk)
        assert "inactive" in error(response, 409)["detail"]
        pending_request.refresh_from_db()
        assert pending_request.status == Status.PENDING and not AssignmentOffer.objects.exists()

    def test_offering_a_mother_stations_request_is_a_409_with_the_reason(
        self, eic_client: APIClient, driver: Driver
    ) -> None:
        # Given a request for a mother station, written around the admin's check
        request = StockRequestFactory(station=StationFactory(code="MS-9", kind=Station.Kind.MS))
        response = offer(eic_client, request.pk, driver.pk)
        assert "not a daughter booster station" in error(response, 409)["detail"]
        request.refresh_from_db()
        assert request.status == Status.PENDING and not AssignmentOffer.objects.exists()

    def test_offering_a_request_that_is_not_pending_is_a_409_with_the_reason(
        self, eic_client: APIClient, driver: Driver, other_driver: Driver, pending_request: StockRequest
    ) -> None:
        assert offer(eic_client, pending_request.pk, driver.pk).status_code == 200
        response = offer(eic_client, pending_request.pk, other_driver.pk)
        assert "is ASSIGNING, not PENDING" in error(response, 409)["detail"]
        assert AssignmentOffer.objects.get().driver_id == driver.pk

    def test_the_eic_endpoint_validates_its_body(
        self, eic_client: APIClient, driver: Driver, pending_request: StockRequest
    ) -> None:
        url = status_url(pending_request.pk)
        without_driver = error(eic_client.patch(url, {"status": "ASSIGNING"}, format="json"), 400)
        assert without_driver["errors"] == {"target_driver": ["Required when status is ASSIGNING."]}
        assert list(error(eic_client.patch(url, {"status": "DELIVERED"}, format="json"), 400)["errors"]) == ["status"]
        not_a_number = eic_client.patch(url, {"status": "ASSIGNING", "target_driver": "x"}, format="json")
        assert list(error(not_a_number, 400)["errors"]) == ["target_driver"]
        # An unknown driver is the service's Invalid: the same shape as the serializer's
        unknown = error(eic_client.patch(url, {"status": "ASSIGNING", "target_driver": 424242}, format="json"), 400)
        assert unknown["errors"] == {"target_driver": ["No driver with id 424242."]}
        assert unknown["detail"] == "Invalid input: target_driver: No driver with id 424242."
        bad_mode = offer(eic_client, pending_request.pk, driver.pk, mode="SOMETIMES")
        assert list(error(bad_mode, 400)["errors"]) == ["assignment_mode"]
        assert error(offer(eic_client, 999999, driver.pk), 404) == {
            "detail": "No stock request with id 999999.",
            "errors": {},
        }
        pending_request.refresh_from_db()
        assert pending_request.status == Status.PENDING

    def test_cancelling_an_offered_request_closes_the_offer_and_a_second_cancel_is_a_409(
        self, eic_client: APIClient, driver: Driver, driver_client: APIClient, pending_request: StockRequest
    ) -> None:
        assert offer(eic_client, pending_request.pk, driver.pk).status_code == 200
        url = status_url(pending_request.pk)
        response = eic_client.patch(url, {"status": "CANCELLED"}, format="json")
        assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
        assert AssignmentOffer.objects.get().outcome == Outcome.CANCELLED
        assert (
            "can no longer be cancelled"
            in error(eic_client.patch(url, {"status": "CANCELLED"}, format="json"), 409)["detail"]
        )
        accepted = driver_client.post(ACCEPT, {"stock_request_id": pending_request.pk}, format="json")
        assert "no longer open" in error(accepted, 409)["detail"]
        # And when the offer's check comes at the deadline, it finds the offer closed: no expiry, no EIC notice
        age(pending_request, 301)
        the_offer = AssignmentOffer.objects.get()
        assert services.assignment_offer_expire(stock_request_id=pending_request.pk, offer_id=the_offer.pk) == {
            "expired_count": 0,
            "already_closed": 1,
        }
        assert services.stock_requests_expire_assignments() == {"expired_count": 0}
        assert intents(NOTIFY) == intents(NOTIFY_CHUNK) == []


@pytest.mark.django_db
@override_settings(TIME_ZONE="Asia/Kolkata")
def test_in_an_indian_deployment_times_read_in_ist_and_the_seconds_left_do_not_change(
    driver_client: APIClient, driver: Driver
) -> None:
    request = assigning_request(driver=driver, started_seconds_ago=60)
    [listed] = driver_client.get(PENDING_OFFERS).json()
    deadline = request.offers.get().expires_at
    assert listed["expires_at"] == deadline.astimezone(ZoneInfo("Asia/Kolkata")).isoformat()
    assert listed["expires_at"].endswith("+05:30")
    assert listed["seconds_left"] == 240


@pytest.mark.django_db
def test_the_endpoints_are_in_the_openapi_schema(staff_client: APIClient) -> None:
    schema = staff_client.get("/api/v1/schema/?format=json").json()
    for path in (
        "/api/driver/pending-offers",
        "/api/driver-trips/accept/",
        "/api/driver-trips/reject/",
        "/api/eic/stock-requests/{id}/status/",
    ):
        assert path in schema["paths"], sorted(schema["paths"])
