from __future__ import annotations

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from core.catalog import Crontab, InvalidJobParams, Job, JobCatalog, UnknownJob
from core.models import JobRun
from core.scheduler import SchedulerService

pytestmark = pytest.mark.django_db


def test_setup_creates_a_beat_entry_named_after_each_scheduled_job() -> None:
    result = SchedulerService.setup_default_tasks()

    scheduled = [j.key for j in JobCatalog.all() if j.schedule is not None]
    assert sorted(result["created"]) == sorted(scheduled)
    heartbeat = PeriodicTask.objects.get(name="beat_heartbeat")
    assert heartbeat.task == "core.beat_heartbeat"
    assert heartbeat.interval.every == 30 and heartbeat.interval.period == IntervalSchedule.SECONDS
    assert heartbeat.expire_seconds == 30
    assert not PeriodicTask.objects.filter(name="sleep").exists()  # manual-only jobs get no beat entry


def test_setup_twice_changes_nothing_the_second_time() -> None:
    SchedulerService.setup_default_tasks()
    before = list(PeriodicTask.objects.values_list("id", "name", "interval_id", "crontab_id", "enabled"))

    result = SchedulerService.setup_default_tasks()

    assert result["created"] == []
    assert list(PeriodicTask.objects.values_list("id", "name", "interval_id", "crontab_id", "enabled")) == before


def test_setup_keeps_an_operators_edit_unless_reset() -> None:
    SchedulerService.setup_default_tasks()
    task = PeriodicTask.objects.get(name="beat_heartbeat")
    task.interval = IntervalSchedule.objects.create(every=45, period=IntervalSchedule.SECONDS)
    task.enabled = False
    task.total_run_count = 7
    task.save()

    SchedulerService.setup_default_tasks()
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (45, False)

    SchedulerService.setup_default_tasks(reset=True)
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (30, True)
    assert task.total_run_count == 7  # updated in place, never deleted and recreated


def test_an_unknown_job_key_is_refused_and_nothing_is_recorded() -> None:
    with pytest.raises(UnknownJob):
        SchedulerService.trigger_manual_update("no_such_job")
    assert not JobRun.objects.exists()


def test_invalid_parameters_name_the_field_and_nothing_is_recorded() -> None:
    with pytest.raises(InvalidJobParams) as info:
        SchedulerService.trigger_manual_update("sleep", {"seconds": -5})
    assert "seconds" in info.value.errors

    with pytest.raises(InvalidJobParams) as info:
        SchedulerService.trigger_manual_update("sleep", {"colour": "red"})
    assert "colour" in info.value.errors
    assert not JobRun.objects.exists()


def test_a_sync_trigger_runs_inline_and_records_the_summary() -> None:
    run = SchedulerService.trigger_manual_update("sleep", {"seconds": 0}, sync=True, source="shell")

    assert run.status == JobRun.Status.SUCCEEDED
    assert run.summary == {"slept_seconds": 0}
    assert run.source == "shell" and run.params == {"seconds": 0}
    assert run.started_at is not None and run.finished_at is not None and run.duration_ms is not None


def test_a_sync_run_is_skipped_while_another_holds_the_jobs_lease() -> None:
    from core.leases import JobLease

    other = JobLease("sleep", "someone-else", ttl_seconds=30)
    assert other.acquire()
    try:
        run = SchedulerService.trigger_manual_update("sleep", {"seconds": 0}, sync=True)
    finally:
        other.release()

    assert run.status == JobRun.Status.SKIPPED
    assert run.summary["running_task_id"] == "someone-else"


def test_status_reports_schedule_in_words_and_the_last_outcome() -> None:
    SchedulerService.setup_default_tasks()
    SchedulerService.trigger_manual_update("beat_heartbeat", sync=True)

    status = SchedulerService.get_task_status("beat_heartbeat")

    assert status["enabled"] is True
    assert status["schedule"] == "every 30 seconds"
    assert status["last_status"] == "succeeded"
    assert status["runs_recorded"] == 1
    assert status["next_run_at"] is not None


def test_a_run_revoked_before_any_worker_saw_it_does_not_execute() -> None:
    from core.tasks import sleep as sleep_task

    run = SchedulerService.trigger_manual_update("sleep", {"seconds": 0})  # queued, no worker running
    JobRun.objects.filter(pk=run.pk).update(status=JobRun.Status.REVOKED)

    result = sleep_task.apply(kwargs={"seconds": 0}, task_id=run.task_id)

    assert result.state == "IGNORED"  # eager apply; a worker stores REVOKED (update_state)
    run.refresh_from_db()
    assert run.status == JobRun.Status.REVOKED and run.summary is None


@pytest.mark.parametrize(
    ("crontab", "period"),
    [
        (Crontab(minute="0"), 3600),
        (Crontab(minute="0", hour="0"), 86400),
        (Crontab(minute="0", hour="*/6"), 21600),
        (Crontab(minute="0", hour="10", day_of_week="1"), 604800),
        (Crontab(minute="*/5"), 300),
    ],
)
def test_a_crontab_jobs_messages_expire_after_one_period(crontab: Crontab, period: int) -> None:
    job = Job(key="k", task="t", description="d", schedule=crontab)
    assert job.expire_seconds == period


def test_a_bare_delay_of_a_catalog_task_is_recorded_as_queued_when_sent() -> None:
    import redis
    from django.conf import settings

    from core.tasks import sleep as sleep_task

    result = sleep_task.delay(seconds=0)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default")

    run = JobRun.objects.get(task_id=result.id)
    assert (run.job_key, run.status, run.source) == ("sleep", "queued", "shell")


def test_a_lease_left_by_a_dead_worker_lapses_and_the_job_can_run_again() -> None:
    import time

    from core.leases import JobLease
    from core.redis import get_redis

    # A worker that died holding the lease: nobody renews it.
    get_redis().set("jobs:lease:sleep", "dead-task", px=200)
    assert not JobLease("sleep", "new-task", ttl_seconds=30).acquire()

    time.sleep(0.3)  # Redis expires keys on its own clock; time_machine cannot move it
    lease = JobLease("sleep", "new-task", ttl_seconds=30)
    assert lease.acquire()
    lease.release()


def test_a_held_lease_is_renewed_while_the_job_runs() -> None:
    import time

    from core.leases import JobLease
    from core.redis import get_redis

    lease = JobLease("sleep", "t1", ttl_seconds=1)
    assert lease.acquire()
    try:
        time.sleep(1.5)  # longer than the TTL: only renewal keeps it
        assert get_redis().get("jobs:lease:sleep") == "t1"
    finally:
        lease.release()
    assert get_redis().get("jobs:lease:sleep") is None


def test_cleanup_closes_lost_runs_and_deletes_old_finished_ones() -> None:
    from datetime import timedelta

    from django.utils import timezone

    def make(task_id: str, status: str, **extra: object) -> None:
        JobRun.objects.create(
            job_key="sleep", task_name="core.sleep", task_id=task_id, source="cli", status=status, **extra
        )

    make("old-done", "succeeded")
    make("lost", "running", started_at=timezone.now() - timedelta(hours=2))
    make("fresh", "succeeded")
    JobRun.objects.filter(task_id="old-done").update(queued_at=timezone.now() - timedelta(days=40))

    run = SchedulerService.trigger_manual_update("job_runs_cleanup", sync=True)

    assert run.summary == {"closed_lost": 1, "deleted": 1}
    assert not JobRun.objects.filter(task_id="old-done").exists()
    assert JobRun.objects.get(task_id="lost").status == "lost"
    assert JobRun.objects.filter(task_id="fresh").exists()


def test_setup_copes_with_a_schedule_an_operator_created_twice() -> None:
    IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)

    assert "beat_heartbeat" in SchedulerService.setup_default_tasks()["created"]


@pytest.mark.django_db(transaction=True)
def test_a_trigger_with_the_broker_down_fails_clearly_and_records_why() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.e2e.conftest import process_env

    # The CLI in its own process, with a broker address nobody listens on.
    env = {**os.environ, **process_env(CELERY_BROKER_URL="redis://127.0.0.1:1/0")}
    result = subprocess.run(
        [sys.executable, "manage.py", "jobs", "run", "sleep", "--param", "seconds=0"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 1
    assert "Could not reach the broker" in result.stderr
    run = JobRun.objects.get()
    assert run.status == "failed" and run.error
