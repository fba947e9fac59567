"""GET /metrics: Prometheus text computed from the database, behind a token or basic auth."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from core.catalog import JobCatalog
from core.models import JobRun
from core.scheduler import SchedulerService
from core.services import jobruns

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = "scrape-me"
    settings.METRICS_BASIC_AUTH = "prometheus:secret"
    return "scrape-me"


def scrape(client: Client, token: str) -> dict[str, Any]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def runs(key: str, outcomes: list[str]) -> None:
    job = JobCatalog.get(key)
    for i, outcome in enumerate(outcomes):
        task_id = f"{key}-{i}"
        jobruns.jobrun_create_queued(job=job, task_id=task_id, source="api", params={})
        jobruns.jobrun_mark_running(job=job, task_id=task_id, source="api", params={}, worker="w")
        if outcome == "succeeded":
            jobruns.jobrun_mark_succeeded(task_id=task_id, result={"n": i})
        else:
            jobruns.jobrun_mark_failed(task_id=task_id, exc=RuntimeError("boom"))


def test_the_counters_match_the_run_rows_after_a_known_number_of_runs(client: Client, token: str) -> None:
    SchedulerService.setup_default_tasks()
    runs("exchange_rates", ["succeeded", "succeeded", "failed"])
    runs("payment_timeouts", ["succeeded"])

    families = scrape(client, token)

    samples = {
        (s.labels["job"], s.labels["status"]): s.value
        for s in families["jobs_runs"].samples
        if s.name == "jobs_runs_total"
    }
    expected = {(r.job_key, r.status): 0 for r in JobRun.objects.all()}
    for r in JobRun.objects.all():
        expected[(r.job_key, r.status)] += 1
    assert (
        samples
        == expected
        == {
            ("exchange_rates", "succeeded"): 2,
            ("exchange_rates", "failed"): 1,
            ("payment_timeouts", "succeeded"): 1,
        }
    )
    counts = {
        s.labels["job"]: s.value for s in families["jobs_run_duration_seconds"].samples if s.name.endswith("_count")
    }
    assert counts == {"exchange_rates": 3, "payment_timeouts": 1}
    success = {s.labels["job"] for s in families["jobs_last_success_timestamp_seconds"].samples}
    assert success == {"exchange_rates", "payment_timeouts"}
    paused = {s.labels["job"]: s.value for s in families["jobs_paused"].samples}
    assert paused["exchange_rates"] == 0
    queues = {s.labels["queue"] for s in families["celery_queue_length"].samples}
    assert {"payments", "notifications", "notifications_retry"} <= queues
    assert families["outbox_backlog"].samples[0].value == 0
    assert {s.labels["channel"] for s in families["notifications_dead_letters"].samples} >= {"email", "sms"}
    assert families["beat_leader_present"].samples[0].value == 0


def test_basic_auth_works_and_no_credentials_is_401(client: Client, token: str) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    basic = base64.b64encode(b"prometheus:secret").decode()
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 200
    wrong = base64.b64encode(b"prometheus:nope").decode()
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {wrong}").status_code == 401


def test_metrics_are_off_until_credentials_are_configured(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_BASIC_AUTH = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content
