from __future__ import annotations

import uuid
from typing import Any

import pytest
from django_celery_results.models import TaskResult
from rest_framework.test import APIClient

from core.models import JobRun

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/admin/jobs/"
ENDPOINTS = [
    ("get", JOBS),
    ("get", f"{JOBS}sleep/"),
    ("post", f"{JOBS}sleep/trigger/"),
    ("get", "/api/v1/admin/tasks/abc/"),
    ("post", "/api/v1/admin/tasks/abc/revoke/"),
    ("get", "/api/v1/schema/"),
    ("get", "/api/v1/docs/"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_anonymous_callers_get_401_on_every_staff_endpoint(anon_client: APIClient, method: str, url: str) -> None:
    response = getattr(anon_client, method)(url, {}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_non_staff_users_get_403_on_every_staff_endpoint(customer_client: APIClient, method: str, url: str) -> None:
    response = getattr(customer_client, method)(url, {}, format="json")
    assert response.status_code == 403
    assert not JobRun.objects.exists()


def test_staff_list_every_catalog_job_with_its_schedule(staff_client: APIClient) -> None:
    response = staff_client.get(JOBS)

    assert response.status_code == 200
    jobs = {job["key"]: job for job in response.json()}
    assert jobs["beat_heartbeat"]["default_schedule"] == "every 30 seconds"
    assert jobs["beat_heartbeat"]["queue"] == "default"
    assert jobs["sleep"]["params"][0]["name"] == "seconds"


def test_an_unknown_job_key_is_404(staff_client: APIClient) -> None:
    assert staff_client.get(f"{JOBS}nope/").status_code == 404
    response = staff_client.post(f"{JOBS}nope/trigger/", {"params": {}}, format="json")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    assert not JobRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"params": {"seconds": -1}}, "seconds"),
        ({"params": {"seconds": "soon"}}, "seconds"),
        ({"params": {"unknown": 1}}, "unknown"),
        ({"params": "not-an-object"}, "params"),
        ({"async": "maybe"}, "async"),
    ],
)
def test_invalid_input_is_400_naming_the_field_and_nothing_is_enqueued(
    staff_client: APIClient, body: dict[str, Any], field: str
) -> None:
    response = staff_client.post(f"{JOBS}sleep/trigger/", body, format="json")

    assert response.status_code == 400
    data = response.json()
    assert field in data.get("errors", data)
    assert not JobRun.objects.exists()


def test_a_sync_trigger_returns_200_with_the_summary(staff_client: APIClient, staff_user: Any) -> None:
    response = staff_client.post(f"{JOBS}sleep/trigger/", {"params": {"seconds": 0}, "async": False}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["summary"] == {"slept_seconds": 0}
    run = JobRun.objects.get(pk=body["job_run_id"])
    assert (run.source, run.triggered_by_id) == ("api", staff_user.pk)


def test_an_async_trigger_returns_202_with_links_and_the_message_is_on_the_jobs_queue(
    staff_client: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    import redis
    from django.conf import settings

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("default")

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"{JOBS}sleep/trigger/", {"params": {"seconds": 1}}, format="json")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["status_url"].endswith(f"/api/v1/admin/tasks/{body['task_id']}/")
    assert broker.llen("default") == 1
    status = staff_client.get(body["status_url"]).json()
    assert status["state"] == "PENDING"
    assert status["job_run"]["status"] == "queued"
    broker.delete("default")


def test_a_task_id_nobody_issued_is_404_not_pending(staff_client: APIClient) -> None:
    response = staff_client.get(f"/api/v1/admin/tasks/{uuid.uuid4()}/")
    assert response.status_code == 404
    assert staff_client.post(f"/api/v1/admin/tasks/{uuid.uuid4()}/revoke/").status_code == 404


def test_a_task_known_only_to_the_results_table_is_reported(staff_client: APIClient) -> None:
    TaskResult.objects.create(task_id="t-1", task_name="notifications.deliver", status="SUCCESS", result='{"ok": true}')

    body = staff_client.get("/api/v1/admin/tasks/t-1/").json()

    assert body["state"] == "SUCCESS"
    assert body["result"] == {"ok": True}
    assert body["job_run"] is None


def test_revoking_a_queued_job_closes_its_run(staff_client: APIClient) -> None:
    import redis
    from django.conf import settings

    task_id = staff_client.post(f"{JOBS}sleep/trigger/", {"params": {"seconds": 1}}, format="json").json()["task_id"]

    response = staff_client.post(f"/api/v1/admin/tasks/{task_id}/revoke/", {}, format="json")

    assert response.status_code == 202
    assert response.json()["state"] == "REVOKED"
    assert JobRun.objects.get(task_id=task_id).status == "revoked"
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default")


def test_the_openapi_schema_documents_the_job_endpoints(staff_client: APIClient) -> None:
    response = staff_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"] if response["Content-Type"].startswith("application/json") else None
    if paths is None:
        import yaml

        paths = yaml.safe_load(response.content)["paths"]
    assert "/api/v1/admin/jobs/{key}/trigger/" in paths
    assert staff_client.get("/api/v1/docs/").status_code == 200


def test_revoking_a_running_job_without_terminate_lets_it_finish(staff_client: APIClient) -> None:
    run = JobRun.objects.create(
        job_key="sleep", task_name="core.sleep", task_id="t-run", source="api", status="running"
    )

    body = staff_client.post("/api/v1/admin/tasks/t-run/revoke/", {"terminate": False}, format="json").json()

    assert body["job_run"]["status"] == "running"
    run.refresh_from_db()
    assert run.status == "running"
