from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from core.models import AuditLog, JobRun
from core.redis import get_redis
from core.scheduler import SchedulerService
from core.tokens import token_consume, token_issue

pytestmark = pytest.mark.django_db


def test_a_one_time_token_works_once() -> None:
    token = token_issue(purpose="password_reset", user_id=7, ttl_seconds=60)

    assert token_consume(purpose="password_reset", token=token) == 7
    assert token_consume(purpose="password_reset", token=token) is None


def test_expired_tokens_leave_the_index_and_live_ones_stay() -> None:
    live = token_issue(purpose="email_confirm", user_id=1, ttl_seconds=3600)
    r = get_redis()
    # Two tokens that expired: their keys are gone, their index entries are not.
    r.zadd("tokens:index:email_confirm", {"2:old-a": 1.0, "3:old-b": 2.0})

    run = SchedulerService.trigger_manual_update("expired_tokens_cleanup", sync=True)

    assert run.summary == {"indexes_scanned": 1, "expired_removed": 2}
    assert r.zrange("tokens:index:email_confirm", 0, -1) == [f"1:{live}"]
    again = SchedulerService.trigger_manual_update("expired_tokens_cleanup", sync=True)
    assert again.summary["expired_removed"] == 0


def test_audit_logs_older_than_the_threshold_are_deleted_and_newer_kept() -> None:
    old = AuditLog.objects.bulk_create([AuditLog(action="login") for _ in range(3)])
    AuditLog.objects.filter(pk__in=[a.pk for a in old]).update(created_at=timezone.now() - timedelta(days=91))
    recent = AuditLog.objects.create(action="login")

    run = SchedulerService.trigger_manual_update("audit_logs_cleanup", sync=True)

    assert run.summary == {"deleted": 3, "older_than_days": 90}
    # The recent entry stays, and so does the one the trigger itself wrote.
    assert list(AuditLog.objects.filter(action="login").values_list("pk", flat=True)) == [recent.pk]
    assert AuditLog.objects.filter(action="job.trigger", target="job:audit_logs_cleanup").count() == 1


def test_the_audit_log_threshold_is_a_validated_parameter() -> None:
    from core.catalog import InvalidJobParams

    with pytest.raises(InvalidJobParams):
        SchedulerService.trigger_manual_update("audit_logs_cleanup", {"older_than_days": 0})
    assert not JobRun.objects.exists()


def test_expired_sessions_are_deleted_and_live_ones_kept() -> None:
    live = SessionStore()
    live["user"] = 1
    live.create()
    dead = SessionStore()
    dead.create()
    Session.objects.filter(session_key=dead.session_key).update(expire_date=timezone.now() - timedelta(days=1))

    run = SchedulerService.trigger_manual_update("abandoned_sessions_cleanup", sync=True)

    assert run.summary == {"deleted": 1}
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_cleanup_jobs_are_scheduled_as_the_design_says() -> None:
    from django_celery_beat.models import PeriodicTask

    SchedulerService.setup_default_tasks()
    tokens = PeriodicTask.objects.get(name="expired_tokens_cleanup")
    assert (tokens.crontab.hour, tokens.crontab.minute, tokens.enabled) == ("3", "0", True)
    assert PeriodicTask.objects.get(name="audit_logs_cleanup").enabled is False
    assert PeriodicTask.objects.get(name="abandoned_sessions_cleanup").enabled is False


@pytest.mark.django_db(transaction=True)
def test_two_workers_deleting_old_audit_logs_at_once_delete_each_row_once() -> None:
    from maintenance.services import audit_logs_delete_old

    AuditLog.objects.bulk_create([AuditLog(action="x") for _ in range(3000)])
    AuditLog.objects.update(created_at=timezone.now() - timedelta(days=100))
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(audit_logs_delete_old(older_than_days=90))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == [] and len(results) == 2
    assert sum(r["deleted"] for r in results) == 3000
    assert not AuditLog.objects.exists()
