"""Offer expiry end to end: a real worker and beat, PostgreSQL, Redis, and a local stand-in for FCM.

Claimed bound: with the one-shot expiry, a request is PENDING again within 5 s of its
deadline, on the database's clock (measured by `python -m tests.benchmarks driver_assignment`,
300 offers, one worker -c 2: p50 0.04 s, p99 0.09 s; the check is recorded in the core outbox
with the offer and published at its commit with the deadline as ETA). A check whose publish
was lost is published by the outbox relay (every 15 s), still with its ETA. The 60 s sweep is
the safety net for an offer whose message was lost after publishing or is held by a worker
that died: then the bound is the sweep's period (p99 ~60 s)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import override_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from django_celery_results.models import TaskResult
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from core.models import JobRun, OutboxIntent, User
from core.scheduler import SchedulerService
from logistics.models import EIC_GROUP, AssignmentOffer, Driver, Station, StockRequest
from logistics.selectors import database_now
from notifications.models import Notification, PushDevice
from tests.e2e.conftest import wait_for

TIMEOUT = 3
BOUND_SECONDS = 5.0
PROJECT = "e2e-project"


def fcm_pushes(server: HTTPServer, token: str) -> list[dict[str, Any]]:
    out = []
    for request, _ in server.log:
        message = json.loads(request.get_data())["message"]
        if message["token"] == token:
            out.append(message)
    return out


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@override_settings(DRIVER_ASSIGNMENT_TIMEOUT_SECONDS=TIMEOUT)
def test_an_unaccepted_offer_is_back_in_the_pool_within_the_bound_and_the_eic_user_is_pushed(
    start_worker: Callable[..., Any], start_beat: Callable[..., Any], httpserver: HTTPServer
) -> None:
    # Given FCM answering on a local server, an EIC user and a driver with devices, and two pending requests
    httpserver.expect_request(f"/v1/projects/{PROJECT}/messages:send", method="POST").respond_with_json(
        {"name": f"projects/{PROJECT}/messages/1"}
    )
    eic = User.objects.create_user(username="eic-e2e")
    eic.groups.add(Group.objects.get_or_create(name=EIC_GROUP)[0])
    PushDevice.objects.create(user=eic, token="eic-e2e-device")
    driver_user = User.objects.create_user(username="driver-e2e")
    PushDevice.objects.create(user=driver_user, token="driver-e2e-device")
    driver = Driver.objects.create(user=driver_user, name="Asha")
    station = Station.objects.create(name="Booster North", code="DBS-E2E", kind="DBS")
    offered = StockRequest.objects.create(station=station, quantity=900)
    orphan = StockRequest.objects.create(station=station, quantity=400)
    # The sweep is scheduled as in production (every 60 s): it cannot be what expires the first offer.
    SchedulerService.setup_default_tasks()
    env = {
        "DRIVER_ASSIGNMENT_TIMEOUT_SECONDS": str(TIMEOUT),
        "PUSH_PROVIDER": "fcm",
        "FCM_BASE_URL": httpserver.url_for("/").rstrip("/"),
        "FCM_PROJECT_ID": PROJECT,
        "FCM_ACCESS_TOKEN": "e2e-access-token",
    }
    worker = start_worker(queues="logistics,notifications,notifications_retry,default", **env)
    start_beat(**env)

    # When the EIC user offers the first request and the driver does nothing
    client = APIClient()
    client.force_authenticate(eic)
    response = client.patch(
        f"/api/eic/stock-requests/{offered.pk}/status/",
        {"status": "ASSIGNING", "target_driver": driver.pk, "assignment_mode": "MANUAL"},
        format="json",
    )
    assert response.status_code == 200, response.content
    offer = AssignmentOffer.objects.get(stock_request=offered)
    # (its expiry check was recorded with the offer and published at the commit, for the deadline)
    check = OutboxIntent.objects.get(dedupe_key=f"offer-expiry:{offer.pk}")
    assert check.not_before == offer.expires_at and check.published_at is not None

    # Then the driver's device got the offer
    wait_for(lambda: fcm_pushes(httpserver, "driver-e2e-device"), timeout=20, message="the driver's push")
    [trip] = fcm_pushes(httpserver, "driver-e2e-device")
    assert trip["notification"]["title"] == "New trip offer"

    # And the request is PENDING again within the bound after its deadline, by the one-shot expiry
    wait_for(
        lambda: StockRequest.objects.filter(pk=offered.pk, status="PENDING").exists(),
        timeout=TIMEOUT + BOUND_SECONDS + 10,
        message=f"request {offered.pk} back to PENDING; worker log:\n{worker.output()}",
    )
    offer.refresh_from_db()
    assert offer.outcome == "EXPIRED"
    lateness = (offer.resolved_at - offer.expires_at).total_seconds()
    assert 0 <= lateness <= BOUND_SECONDS, lateness
    # (its result row is written just after the transaction that expired the offer commits)
    one_shot = wait_for(
        lambda: TaskResult.objects.filter(task_name="logistics.expire_assignment", status="SUCCESS").first(),
        timeout=10,
        message="the one-shot expiry's result",
    )
    assert json.loads(one_shot.result) == {"expired_count": 1}
    assert one_shot.task_id == str(check.task_id)

    # And the EIC user's device got "Driver Assignment Expired"
    wait_for(lambda: fcm_pushes(httpserver, "eic-e2e-device"), timeout=20, message="the EIC user's push")
    [expired] = fcm_pushes(httpserver, "eic-e2e-device")
    assert expired["notification"] == {
        "title": "Driver Assignment Expired",
        "body": "Asha did not accept the trip to Booster North. Please reassign.",
    }

    # When an offer's one-shot message is lost (here: never sent) and the operator shortens the sweep's interval
    # (one transaction, as the offer service writes it: a sweep never sees the request without its offer)
    with transaction.atomic():
        started = database_now() - timedelta(seconds=TIMEOUT + 5)
        StockRequest.objects.filter(pk=orphan.pk).update(
            status="ASSIGNING", target_driver=driver, assignment_started_at=started, assignment_mode="MANUAL"
        )
        AssignmentOffer.objects.create(
            stock_request=orphan,
            driver=driver,
            mode="MANUAL",
            offered_at=started,
            expires_at=started + timedelta(seconds=TIMEOUT),
        )
    every_2s, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="driver_assignment_expiry").update(interval=every_2s)
    PeriodicTasks.update_changed()

    # Then beat's sweep puts it back in the pool, and its JobRun says how many it expired
    run = wait_for(
        lambda: JobRun.objects.filter(
            job_key="driver_assignment_expiry", source="beat", status="succeeded", summary__expired_count=1
        ).first(),
        timeout=30,
        message=f"a beat sweep that expired the orphan; worker log:\n{worker.output()}",
    )
    # (Under load beat may send a slot late enough to count the one before it as missed: the
    # summary then also says `catch_up_for_missed_slots`.)
    assert run.summary["expired_count"] == 1
    orphan.refresh_from_db()
    assert (orphan.status, orphan.target_driver_id) == ("PENDING", None)
    wait_for(lambda: len(fcm_pushes(httpserver, "eic-e2e-device")) == 2, timeout=20, message="the second EIC push")
    # And later sweeps find nothing more: each offer expired once, each EIC push sent once
    wait_for(
        lambda: JobRun.objects.filter(
            job_key="driver_assignment_expiry", status="succeeded", summary__expired_count=0
        ).exists(),
        timeout=15,
        message="a later sweep",
    )
    sent = Notification.objects.filter(template_key="driver_assignment_expired", user=eic)
    wait_for(lambda: sent.filter(status="sent").count() == 2, timeout=10, message="both EIC pushes marked sent")
    assert sent.count() == 2
    assert len(fcm_pushes(httpserver, "eic-e2e-device")) == 2
    # And each expiry's notice was recorded in the core outbox by the path that expired it, and published:
    # the one-shot check's one intent for its offer, the sweep's one intent for its chunk (here the orphan alone)
    orphan_offer = AssignmentOffer.objects.get(stock_request=orphan)
    assert sorted(AssignmentOffer.objects.filter(outcome="EXPIRED").values_list("pk", flat=True)) == sorted(
        [offer.pk, orphan_offer.pk]
    )
    [one_shot_notice] = OutboxIntent.objects.filter(task_name="logistics.notify_eic_assignment_expired")
    assert one_shot_notice.dedupe_key == f"offer-expired-notice:{offer.pk}"
    assert one_shot_notice.kwargs == {"stock_request_id": offered.pk, "driver_id": driver.pk, "offer_id": offer.pk}
    [sweep_notice] = OutboxIntent.objects.filter(task_name="logistics.notify_eic_assignments_expired")
    assert sweep_notice.dedupe_key.startswith("offers-expired-notice:")
    assert sweep_notice.kwargs == {"offer_ids": [orphan_offer.pk]}
    for notice in (one_shot_notice, sweep_notice):
        assert notice.published_at is not None
    # And each notice ran once on the worker, pushing its one offer to the one EIC user
    for notice in (one_shot_notice, sweep_notice):
        result = wait_for(
            lambda n=notice: TaskResult.objects.filter(task_id=str(n.task_id), status="SUCCESS").first(),
            timeout=10,
            message=f"the result of {notice.task_name}",
        )
        assert json.loads(result.result) == {"notified": 1, "offers": 1, "missing": 0}
