"""The job platform end to end: real `celery worker` and `celery beat` processes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from rest_framework.test import APIClient

from core.models import JobRun, User
from core.scheduler import SchedulerService
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e


def statuses_seen(task_id: str, until: set[str], timeout: float) -> list[str]:
    seen: list[str] = []

    def poll() -> bool:
        status = JobRun.objects.filter(task_id=task_id).values_list("status", flat=True).first()
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        return status in until

    wait_for(poll, timeout=timeout, interval=0.05, message=f"job run {task_id} to reach {until}")
    return seen


def test_a_job_triggered_from_the_api_goes_queued_running_succeeded(start_worker: Any) -> None:
    staff = User.objects.create_user("ops", password="pw", is_staff=True)
    api = APIClient()
    api.force_authenticate(staff)

    response = api.post("/api/v1/admin/jobs/sleep/trigger/", {"params": {"seconds": 2}}, format="json")

    assert response.status_code == 202
    task_id = response.json()["task_id"]
    # No worker yet: the run waits, queued, with its message on the broker.
    assert api.get(f"/api/v1/admin/tasks/{task_id}/").json()["job_run"]["status"] == "queued"

    start_worker()
    seen = statuses_seen(task_id, {"succeeded", "failed"}, timeout=30)
    assert seen[-2:] == ["running", "succeeded"]  # the 2-second sleep is long enough to see it run
    run = JobRun.objects.get(task_id=task_id)
    assert run.summary == {"slept_seconds": 2} and run.source == "api"
    assert run.duration_ms is not None and run.duration_ms >= 2000
    body = api.get(f"/api/v1/admin/tasks/{task_id}/").json()
    assert body["state"] == "SUCCESS" and body["result"] == {"slept_seconds": 2}


def test_the_same_long_job_triggered_twice_at_once_runs_once_and_is_skipped_once(start_worker: Any) -> None:
    start_worker(concurrency=2)

    first = SchedulerService.trigger_manual_update("sleep", {"seconds": 4}, source="shell")
    second = SchedulerService.trigger_manual_update("sleep", {"seconds": 4}, source="shell")

    for run in (first, second):
        statuses_seen(run.task_id, {"succeeded", "skipped", "failed"}, timeout=40)
    outcomes = sorted(JobRun.objects.filter(job_key="sleep").values_list("status", flat=True))
    assert outcomes == ["skipped", "succeeded"]
    skipped = JobRun.objects.get(job_key="sleep", status="skipped")
    ran = JobRun.objects.get(job_key="sleep", status="succeeded")
    assert skipped.summary["running_task_id"] == ran.task_id


def test_beat_fires_the_heartbeat_follows_an_admin_edit_and_health_reports_all_up(
    start_worker: Any, start_beat: Any
) -> None:
    SchedulerService.setup_default_tasks()
    # Due at once, instead of 30 seconds after beat starts.
    PeriodicTask.objects.filter(name="beat_heartbeat").update(last_run_at=timezone.now() - timedelta(hours=1))
    start_worker()
    beat = start_beat()

    wait_for(
        lambda: JobRun.objects.filter(job_key="beat_heartbeat", source="beat", status="succeeded").exists(),
        timeout=45,
        message=f"a beat-sourced heartbeat run; beat log:\n{beat.output()[-3000:]}",
    )
    health = Client().get("/health/")
    assert health.status_code == 200, health.json()
    assert health.json()["down"] == []

    # An operator changes the interval to 2 seconds in the admin; beat follows without a restart.
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    task = PeriodicTask.objects.get(name="beat_heartbeat")
    two = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    response = client.post(
        f"/admin/django_celery_beat/periodictask/{task.pk}/change/",
        {
            "name": task.name,
            "regtask": task.task,
            "task": "",
            "interval": two.pk,
            "enabled": "on",
            "args": "[]",
            "kwargs": "{}",
            "headers": "{}",
            "expire_seconds": 30,
            "priority": "",
            "description": task.description,
            "queue": "",
            "exchange": "",
            "routing_key": "",
            "start_time_0": "",
            "start_time_1": "",
            "expires_0": "",
            "expires_1": "",
        },
    )
    assert response.status_code == 302, response.content[:2000]

    edited_at = timezone.now()
    wait_for(
        lambda: JobRun.objects.filter(job_key="beat_heartbeat", source="beat", queued_at__gt=edited_at).count() >= 3,
        timeout=20,
        message=f"three heartbeats in 20 s after the edit; beat log:\n{beat.output()[-3000:]}",
    )


def test_a_bare_worker_consumes_every_queue_and_runs_a_payments_job(start_worker: Any) -> None:
    # `celery -A config worker` with no -Q, as the seed guides start it.
    worker = start_worker(queues="")
    run = SchedulerService.trigger_manual_update("payment_timeouts", source="shell")

    wait_for(
        lambda: JobRun.objects.get(pk=run.pk).status == "succeeded",
        timeout=30,
        message=f"the payments job on a bare worker; log:\n{worker.output()[-2000:]}",
    )
    for queue in settings.JOB_QUEUES:
        assert f".> {queue} " in worker.output(), f"{queue} not consumed"
