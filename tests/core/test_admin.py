from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from core.models import JobRun, User
from core.scheduler import SchedulerService

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(db: Any) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_an_interval_edited_in_the_admin_survives_setup(admin_client_: Client) -> None:
    SchedulerService.setup_default_tasks()
    task = PeriodicTask.objects.get(name="beat_heartbeat")
    ten = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    form = admin_client_.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(
        name=task.name,
        regtask="core.beat_heartbeat",
        task="",
        interval=ten.pk,
        enabled="on",
        args="[]",
        kwargs="{}",
        headers="{}",
        expire_seconds=30,
        description=task.description,
    )
    data.pop("crontab", None)
    data.pop("clocked", None)
    data.pop("solar", None)

    response = admin_client_.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    SchedulerService.setup_default_tasks()
    assert PeriodicTask.objects.get(name="beat_heartbeat").interval.every == 10


def test_run_now_on_periodic_tasks_goes_through_the_scheduler_service(
    admin_client_: Client, django_capture_on_commit_callbacks: Any
) -> None:
    SchedulerService.setup_default_tasks()
    task = PeriodicTask.objects.get(name="beat_heartbeat")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            "/admin/django_celery_beat/periodictask/",
            {"action": "run_now", "_selected_action": [task.pk]},
            follow=True,
        )

    assert "Started 1 job" in response.content.decode()
    run = JobRun.objects.get()
    assert (run.job_key, run.source, run.status) == ("beat_heartbeat", "admin", "queued")


def test_the_job_catalog_page_lists_jobs_and_runs_one(
    admin_client_: Client, django_capture_on_commit_callbacks: Any
) -> None:
    page = admin_client_.get("/admin/core/jobcatalogentry/")
    assert page.status_code == 200
    assert "beat_heartbeat" in page.content.decode() and "Run now" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        admin_client_.post("/admin/core/jobcatalogentry/sleep/run/")

    assert JobRun.objects.get().source == "admin"


def test_job_runs_and_task_results_are_filterable_by_job_status_and_source(admin_client_: Client) -> None:
    from django_celery_results.models import TaskResult

    cli = SchedulerService.trigger_manual_update("sleep", {"seconds": 0}, sync=True, source="cli")
    shell = SchedulerService.trigger_manual_update("sleep", {"seconds": 0}, sync=True, source="shell")
    beat = SchedulerService.trigger_manual_update("beat_heartbeat", sync=True, source="shell")
    for run, status in ((cli, "SUCCESS"), (shell, "FAILURE"), (beat, "SUCCESS")):
        TaskResult.objects.create(task_id=run.task_id, task_name=run.task_name, status=status)

    runs = admin_client_.get("/admin/core/jobrun/?job_key__exact=sleep&status__exact=succeeded&source__exact=cli")
    assert runs.status_code == 200 and runs.context["cl"].result_count == 1

    def task_ids(query: str) -> set[str]:
        page = admin_client_.get(f"/admin/django_celery_results/taskresult/?{query}")
        assert page.status_code == 200
        return {r.task_id for r in page.context["cl"].result_list}

    assert task_ids("job=sleep") == {cli.task_id, shell.task_id}
    assert task_ids("job=sleep&source=cli") == {cli.task_id}
    assert task_ids("status__exact=SUCCESS") == {cli.task_id, beat.task_id}
    assert task_ids("job=no_such_job") == set()


def test_staff_without_the_run_permission_see_jobs_but_cannot_run_them(client: Client) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(viewer)

    page = client.get("/admin/core/jobcatalogentry/")
    assert page.status_code == 200 and 'value="Run now"' not in page.content.decode()
    assert client.post("/admin/core/jobcatalogentry/sleep/run/").status_code == 403
    assert not JobRun.objects.exists()


def test_non_staff_users_cannot_reach_the_admin(client: Client) -> None:
    user = User.objects.create_user("plain", password="pw")
    client.force_login(user)
    assert client.get("/admin/core/jobcatalogentry/").status_code == 302
