"""Slots, schedule previews, pausing after failures, the late report, and the beat lease."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, schedule
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from core.beat import LEADER_KEY, BeatLeadership, LeaderScheduler, beat_leader
from core.catalog import JobCatalog
from core.models import JobRun, JobState, User
from core.redis import get_redis
from core.scheduler import SchedulerService
from core.services import jobruns
from core.slots import dst_warnings, due_slot, preview

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")


def berlin_0230() -> crontab:
    value = crontab(minute="30", hour="2")
    value.tz = BERLIN  # as django-celery-beat's TzAwareCrontab carries it
    return value


def test_the_preview_of_0230_in_berlin_across_the_march_change() -> None:
    fires = preview(berlin_0230(), datetime(2027, 3, 26, 12, tzinfo=UTC), 4)

    assert [f.local.strftime("%m-%d %H:%M %Z") for f in fires] == [
        "03-27 02:30 CET",
        "03-28 03:30 CEST",  # 02:30 does not exist that night
        "03-29 02:30 CEST",
        "03-30 02:30 CEST",
    ]
    assert [f.at.strftime("%m-%d %H:%M") for f in fires] == ["03-27 01:30", "03-28 01:30", "03-29 00:30", "03-30 00:30"]
    assert [f.dst for f in fires] == ["", "skipped", "", ""]


def test_the_preview_of_0230_in_berlin_across_the_october_change() -> None:
    fires = preview(berlin_0230(), datetime(2026, 10, 24, 12, tzinfo=UTC), 3)

    # 02:30 happens twice on the 25th: it fires once, at the first (CEST).
    assert [f.local.strftime("%m-%d %H:%M %Z") for f in fires] == [
        "10-25 02:30 CEST",
        "10-26 02:30 CET",
        "10-27 02:30 CET",
    ]
    assert [f.at.strftime("%m-%d %H:%M") for f in fires] == ["10-25 00:30", "10-26 01:30", "10-27 01:30"]
    assert fires[0].dst == "repeated"
    warnings = dst_warnings(berlin_0230(), datetime(2026, 10, 1, tzinfo=UTC))
    assert warnings[0].startswith("2026-10-25: 02:30 happens twice in Europe/Berlin")
    assert warnings[1].startswith("2027-03-28: 02:30 does not exist in Europe/Berlin")


def test_a_utc_crontab_has_no_warnings_and_a_weekly_one_fires_on_its_day() -> None:
    monday = crontab(minute="0", hour="10", day_of_week="1")
    fires = preview(monday, datetime(2026, 12, 4, tzinfo=UTC), 2)  # a Friday
    assert [f.at for f in fires] == [datetime(2026, 12, 7, 10, tzinfo=UTC), datetime(2026, 12, 14, 10, tzinfo=UTC)]
    assert dst_warnings(monday, datetime(2026, 12, 4, tzinfo=UTC)) == []


def test_due_slot_is_the_newest_fire_time_and_counts_the_ones_it_leaves_out() -> None:
    five = schedule(timedelta(seconds=5))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert due_slot(five, start, start + timedelta(seconds=4)) == (None, 0)
    assert due_slot(five, start, start + timedelta(seconds=5)) == (start + timedelta(seconds=5), 0)
    assert due_slot(five, start, start + timedelta(seconds=17)) == (start + timedelta(seconds=15), 2)
    hourly = crontab(minute="0")
    assert due_slot(hourly, start, start + timedelta(hours=3, minutes=10)) == (start + timedelta(hours=3), 2)


def test_the_api_detail_shows_ten_fire_times_in_the_zone_and_utc_with_warnings(admin_client: Client) -> None:
    SchedulerService.setup_default_tasks()
    cron = CrontabSchedule.objects.create(minute="30", hour="2", timezone="Europe/Berlin")
    PeriodicTask.objects.filter(name="job_runs_cleanup").update(crontab=cron)

    body = admin_client.get("/api/v1/admin/jobs/job_runs_cleanup/").json()

    preview_ = body["preview"]
    assert preview_["timezone"] == "Europe/Berlin"
    assert len(preview_["next_fire_times"]) == 10
    first = preview_["next_fire_times"][0]
    assert datetime.fromisoformat(first["local"]).strftime("%H:%M") == "02:30"
    assert first["utc"].endswith("Z")
    assert any("Europe/Berlin" in w for w in preview_["warnings"])


def test_the_periodic_task_admin_page_shows_the_preview(admin_client: Client) -> None:
    SchedulerService.setup_default_tasks()
    task = PeriodicTask.objects.get(name="payment_timeouts")

    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/").content.decode()

    assert "Next 10 fire times, UTC<" in page
    assert page.count(":00:00+00:00") >= 10


def fail(key: str, n: int) -> None:
    job = JobCatalog.get(key)
    for i in range(n):
        task_id = f"{key}-fail-{i}-{timezone.now().timestamp()}"
        jobruns.jobrun_create_queued(job=job, task_id=task_id, source="beat", params={})
        jobruns.jobrun_mark_failed(task_id=task_id, exc=RuntimeError(f"provider down ({i})"))


def test_five_failures_in_a_row_pause_a_job_and_one_action_resumes_it(admin_client: Client) -> None:
    fail("exchange_rates", 4)
    assert not SchedulerService.get_task_status("exchange_rates")["paused"]  # type: ignore[index]
    fail("exchange_rates", 1)

    status = SchedulerService.get_task_status("exchange_rates")
    assert status["paused"] is True  # type: ignore[index]
    assert "5 failed runs in a row" in status["pause_reason"]  # type: ignore[index]
    assert "RuntimeError: provider down (0)" in status["pause_reason"]  # type: ignore[index]
    out = StringIO()
    call_command("jobs", "status", stdout=out)
    assert "PAUSED exchange_rates" in out.getvalue()

    response = admin_client.post("/api/v1/admin/jobs/exchange_rates/resume/")
    assert response.status_code == 200
    assert response.json()["paused"] is False and response.json()["consecutive_failures"] == 0
    assert admin_client.post("/api/v1/admin/jobs/exchange_rates/resume/").status_code == 409
    with pytest.raises(CommandError, match="not paused"):
        call_command("jobs", "resume", "exchange_rates")


def test_a_success_resets_the_count_and_the_heartbeat_never_pauses() -> None:
    fail("exchange_rates", 4)
    job = JobCatalog.get("exchange_rates")
    jobruns.jobrun_create_queued(job=job, task_id="ok-1", source="beat", params={})
    jobruns.jobrun_mark_succeeded(task_id="ok-1", result={"ok": True})
    fail("exchange_rates", 4)
    assert JobState.objects.get(job_key="exchange_rates").paused_at is None

    fail("beat_heartbeat", 8)
    assert JobState.objects.get(job_key="beat_heartbeat").paused_at is None


def beat_scheduler() -> LeaderScheduler:
    from config.celery import app

    return LeaderScheduler(app=app, lazy=True)


def test_beat_sends_nothing_for_a_paused_job_and_again_after_resume() -> None:
    SchedulerService.setup_default_tasks()
    beat = beat_scheduler()
    beat._read_state(force=True)
    minute_ago = timezone.now() - timedelta(minutes=1)
    JobState.objects.filter(job_key="outbox_relay").update(last_slot=minute_ago)
    PeriodicTask.objects.filter(name="outbox_relay").update(date_changed=minute_ago)
    beat._read_state(force=True)
    # The entry as beat builds it (not through beat.schedule, which commits and closes connections).
    entry = beat.Entry(PeriodicTask.objects.get(name="outbox_relay"), app=beat.app)
    assert beat.is_due(entry).is_due is True

    fail("outbox_relay", 5)
    beat._read_state(force=True)
    assert beat.is_due(entry).is_due is False
    assert beat.apply_async(entry, advance=False) is None

    SchedulerService.resume("outbox_relay")
    beat._read_state(force=True)
    assert beat.is_due(entry).is_due is True
    # It runs again: the slot is claimed, recorded and sent (beat's periodic sync, which
    # closes database connections, kept out of the test's transaction).
    beat._last_sync = time.monotonic()
    sent = beat.apply_async(entry, advance=False)
    assert sent is not None
    run = JobRun.objects.get(task_id=sent.id)
    assert run.source == "beat" and run.slot is not None and run.status == "queued"


def test_a_slot_is_claimed_once_and_a_second_run_for_it_is_a_duplicate() -> None:
    job = JobCatalog.get("outbox_relay")
    slot = datetime(2026, 12, 4, 10, 0, 15, tzinfo=UTC)
    jobruns.jobstates_for([job.key], start=slot - timedelta(seconds=15))

    first = jobruns.jobstate_claim_slot(job=job, slot=slot, missed=0, send=True)
    assert first
    assert jobruns.jobstate_claim_slot(job=job, slot=slot, missed=0, send=True) is None  # another beat
    assert JobRun.objects.filter(job_key=job.key, slot=slot).count() == 1

    # A message for the same slot under another task id (a beat without the claim, a split brain).
    run = jobruns.jobrun_mark_running(job=job, task_id="other", source="beat", params={}, worker="w", slot=slot)
    assert run is not None and run.status == "duplicate"
    assert run.summary["run_task_id"] == first
    # The claimed one runs.
    mine = jobruns.jobrun_mark_running(job=job, task_id=first, source="beat", params={}, worker="w", slot=slot)
    assert mine is not None and JobRun.objects.get(task_id=first).status == "running"


def test_one_beat_leads_and_the_other_takes_over_when_the_lease_lapses() -> None:
    a, b = BeatLeadership(ttl_seconds=2), BeatLeadership(ttl_seconds=2)
    b.token = json.dumps({"host": "other", "pid": 2, "since": 0})
    assert a.hold() is True
    assert b.hold() is False
    assert a.hold() is True  # renewing
    assert beat_leader()["pid"] == json.loads(a.token)["pid"]  # type: ignore[index]
    get_redis().delete(LEADER_KEY)  # the lease lapsed: the leader died
    assert b.hold() is True
    assert a.hold() is False


def test_a_critical_job_that_is_late_turns_health_to_503_and_is_listed(client: Client, settings: Any) -> None:
    SchedulerService.setup_default_tasks()
    settings.HEALTH_CACHE_SECONDS = 0
    hour_ago = timezone.now() - timedelta(hours=2)
    job = JobCatalog.get("payment_timeouts")  # hourly, critical
    jobruns.jobrun_create_queued(job=job, task_id="old", source="beat", params={})
    JobRun.objects.filter(task_id="old").update(queued_at=hour_ago, started_at=hour_ago, status="succeeded")

    body = client.get("/health/").json()
    assert "jobs" in body["down"]
    assert body["checks"]["jobs"]["error"] == "critical job(s) late: payment_timeouts"
    out = StringIO()
    call_command("jobs", "status", stdout=out)
    assert "LATE   payment_timeouts" in out.getvalue()

    JobRun.objects.filter(task_id="old").update(started_at=timezone.now())
    assert client.get("/health/").json()["checks"]["jobs"]["ok"] is True


def test_resume_needs_staff(client: Client) -> None:
    user = User.objects.create_user("someone", password="pw")
    client.force_login(user)
    assert client.post("/api/v1/admin/jobs/exchange_rates/resume/").status_code == 403


def test_a_failed_run_is_retried_with_its_parameters_as_a_new_linked_run(admin_client: Client) -> None:
    job = JobCatalog.get("payment_timeouts")
    jobruns.jobrun_create_queued(job=job, task_id="first", source="beat", params={"older_than_days": 5})
    jobruns.jobrun_mark_failed(task_id="first", exc=RuntimeError("database restarted"))
    failed = JobRun.objects.get(task_id="first")

    response = admin_client.post(f"/api/v1/admin/jobs/runs/{failed.pk}/retry/")

    assert response.status_code == 202, response.json()
    retry = JobRun.objects.get(pk=response.json()["job_run_id"])
    assert retry.retry_of_id == failed.pk and retry.params == {"older_than_days": 5} and retry.source == "api"
    assert admin_client.post(f"/api/v1/admin/jobs/runs/{retry.pk}/retry/").status_code == 409  # it did not fail
    assert admin_client.post("/api/v1/admin/jobs/runs/not-a-run/retry/").status_code == 404


def test_the_watchdog_closes_a_run_whose_worker_stopped_renewing_and_frees_its_lease() -> None:
    from core.leases import JobLease, RunAlive
    from core.services.watchdog import runs_watchdog

    job = JobCatalog.get("payment_timeouts")
    for task_id in ("dead", "alive"):
        jobruns.jobrun_create_queued(job=job, task_id=task_id, source="beat", params={})
        jobruns.jobrun_mark_running(job=job, task_id=task_id, source="beat", params={}, worker="w")
    JobRun.objects.update(started_at=timezone.now() - timedelta(minutes=2))
    assert JobLease(job.key, "dead", 120).acquire()
    keeper = RunAlive("alive")
    keeper.start()
    try:
        assert runs_watchdog() == {"running_lost": 1, "queued_lost": 0}
    finally:
        keeper.stop()
    assert JobRun.objects.get(task_id="dead").status == "lost"
    assert JobRun.objects.get(task_id="alive").status == "running"
    assert get_redis().get("jobs:lease:payment_timeouts") is None
    # Lost counts as a failure in a row.
    assert JobState.objects.get(job_key="payment_timeouts").consecutive_failures == 1


def test_a_queued_run_whose_message_is_gone_is_closed_lost_and_a_waiting_one_is_not(settings: Any) -> None:
    import redis as redis_lib

    from core.services.watchdog import runs_watchdog

    job = JobCatalog.get("exchange_rates")  # daily: expires after a day
    broker = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("payments")
    for task_id in ("gone", "waiting"):
        jobruns.jobrun_create_queued(job=job, task_id=task_id, source="api", params={})
    broker.lpush("payments", b'{"headers": {"id": "waiting"}}')
    JobRun.objects.update(queued_at=timezone.now() - timedelta(days=2))
    try:
        assert runs_watchdog()["queued_lost"] == 1
    finally:
        broker.delete("payments")
    assert JobRun.objects.get(task_id="gone").status == "lost"
    assert JobRun.objects.get(task_id="waiting").status == "queued"


def test_a_redelivered_run_says_so_and_keeps_the_earlier_attempt() -> None:
    job = JobCatalog.get("payment_timeouts")
    jobruns.jobrun_create_queued(job=job, task_id="again", source="beat", params={})
    jobruns.jobrun_mark_running(job=job, task_id="again", source="beat", params={}, worker="w1")
    jobruns.jobruns_mark_lost(task_ids=["again"], reason="lost: test", statuses=("running",))
    # The broker hands the message out again after its visibility timeout.
    jobruns.jobrun_mark_running(job=job, task_id="again", source="beat", params={}, worker="w2")
    jobruns.jobrun_mark_succeeded(task_id="again", result={"orders_cancelled": 3})

    run = JobRun.objects.get(task_id="again")
    assert run.status == "succeeded" and run.attempts == 2
    assert run.summary["orders_cancelled"] == 3 and run.summary["redelivered"] is True
    assert [(a["status"], a["worker"]) for a in run.summary["earlier_attempts"]] == [("lost", "w1")]


def test_the_admin_retries_the_selected_failed_runs(admin_client: Client) -> None:
    job = JobCatalog.get("exchange_rates")
    jobruns.jobrun_create_queued(job=job, task_id="broken", source="beat", params={})
    jobruns.jobrun_mark_failed(task_id="broken", exc=RuntimeError("feed down"))
    failed = JobRun.objects.get(task_id="broken")

    response = admin_client.post(
        "/admin/core/jobrun/", {"action": "retry_runs", "_selected_action": [str(failed.pk)]}, follow=True
    )

    assert response.status_code == 200
    retry = JobRun.objects.get(retry_of=failed)
    assert retry.source == "admin" and retry.job_key == "exchange_rates"
    assert f"retry queued as task {retry.task_id}" in response.content.decode()
