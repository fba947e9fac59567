"""An operator signs in and edits a schedule in the admin; a real beat follows the edit."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from core.beat import LEADER_KEY
from core.models import JobRun, User
from core.redis import get_redis
from core.scheduler import SchedulerService
from tests.browser.conftest import OPERATOR_PASSWORD, AdminBrowser
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.browser


def test_an_operator_signs_in_to_the_admin_and_a_wrong_password_is_refused(admin: AdminBrowser, operator: User) -> None:
    # Given the sign-in page, when the operator types a wrong password
    admin.login(operator.username, "not-the-password")
    # Then the page says so and stays on the sign-in form
    assert admin.path.startswith("/admin/login/")
    assert "Please enter the correct username and password" in admin.text(".errornote")

    # And a customer's right password does not open the admin either: it is for staff
    User.objects.create_user(username="customer", password="pw-customer-1")
    admin.login("customer", "pw-customer-1")
    assert admin.path.startswith("/admin/login/")
    assert "for a staff account" in admin.text(".errornote")

    # When they type the right one
    admin.login(operator.username, OPERATOR_PASSWORD)
    # Then they land on the admin's index, signed in, with the job pages listed
    assert admin.path == "/admin/"
    assert "operator" in admin.text("#user-tools").lower()
    index = admin.text("#content-main")
    assert "Periodic tasks" in index
    assert "Jobs (catalog, run now)" in index


def _beat_runs_since(key: str, since: Any) -> list[JobRun]:
    return list(JobRun.objects.filter(job_key=key, source="beat", slot__gte=since).order_by("slot"))


@pytest.mark.e2e
def test_an_interval_edited_in_the_admin_is_followed_by_a_running_beat(
    signed_in: AdminBrowser, start_worker: Callable[..., Any], start_beat: Callable[..., Any]
) -> None:
    # Given the default schedules, only beat_heartbeat enabled (every 30 s), and an interval of 4 s on offer
    SchedulerService.setup_default_tasks()
    PeriodicTask.objects.exclude(name="beat_heartbeat").update(enabled=False)
    PeriodicTasks.update_changed()
    IntervalSchedule.objects.get_or_create(every=4, period=IntervalSchedule.SECONDS)
    assert PeriodicTask.objects.get(name="beat_heartbeat").interval.every == 30
    worker = start_worker(queues="default")
    beat = start_beat()
    wait_for(lambda: get_redis().get(LEADER_KEY), timeout=20, message=f"beat to lead; log {beat.log}")

    # When the operator opens beat_heartbeat's change page, picks "every 4 seconds" and saves
    admin = signed_in
    admin.open("/admin/django_celery_beat/periodictask/")
    admin.click_and_wait(admin.driver.find_element("link text", "beat_heartbeat"))
    assert admin.text("#content h2") == "beat_heartbeat: every 30 seconds"
    admin.select("interval", "every 4 seconds")
    admin.shot("schedule-change")
    admin.click_and_wait(admin.find("input[name=_save]"))
    saved_at = timezone.now()

    # Then the admin confirms the change
    assert any("beat_heartbeat" in m and "changed successfully" in m for m in admin.messages()), admin.messages()
    # And beat sends the job every 4 seconds from then on: three runs in a row, 4 s apart, all done by the worker
    runs = wait_for(
        lambda: (
            (r := _beat_runs_since("beat_heartbeat", saved_at))[2:]
            and all(x.status == JobRun.Status.SUCCEEDED for x in r)
            and r
        ),
        timeout=60,
        message=f"three beat_heartbeat runs after the edit; beat log {beat.log}, worker log {worker.log}",
    )
    slots = [r.slot for r in runs]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(slots)] == [4.0] * (len(slots) - 1)

    # And the job catalog page shows the new schedule and the last run's outcome
    admin.open("/admin/core/jobcatalogentry/")
    row = admin.row("beat_heartbeat")
    assert "every 4 seconds" in row.text
    assert "succeeded" in row.text
    admin.shot("job-catalog")
