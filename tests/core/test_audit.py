"""The audit trail: every operator action writes one core.AuditLog entry; the trail is view-only."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from rest_framework.test import APIClient

from core.admin_audit import AuditedModelAdmin
from core.models import AuditLog, JobRun, User
from core.scheduler import SchedulerService
from logistics.models import Station
from notifications.models import Notification
from notifications.services import notify

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(db: Any) -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw-root-1")


@pytest.fixture
def root_client(root: User) -> Client:
    client = Client()
    client.force_login(root)
    return client


def entries(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action).order_by("created_at"))


def test_every_registered_admin_is_audited() -> None:
    unaudited = sorted(
        f"{model._meta.label}: {type(model_admin).__name__}"
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, AuditedModelAdmin)
    )
    # Third-party ones too (beat's schedules and their kinds, groups, API tokens, task results).
    assert unaudited == [], "derive these from core.admin_audit.AuditedModelAdmin"


def test_a_trigger_from_each_entry_point_is_audited_with_who_and_where(
    root: User, root_client: Client, staff_client: APIClient, staff_user: User, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post("/api/v1/admin/jobs/sleep/trigger/", {"params": {"seconds": 0}}, format="json")
        root_client.post("/admin/core/jobcatalogentry/sleep/run/", {"seconds": "1"})
    call_command("jobs", "run", "sleep", "--param", "seconds=0", "--sync", stdout=io.StringIO())
    SchedulerService.trigger_manual_update("sleep", {"seconds": 0}, sync=True)

    got = [(e.source, e.actor_id, e.target, e.data["params"]) for e in entries("job.trigger")]
    assert got == [
        ("api", staff_user.pk, "job:sleep", {"seconds": 0}),
        ("admin", root.pk, "job:sleep", {"seconds": 1}),
        ("cli", None, "job:sleep", {"seconds": 0}),
        ("shell", None, "job:sleep", {"seconds": 0}),
    ]
    runs = {str(r.pk) for r in JobRun.objects.all()}
    assert {e.data["job_run_id"] for e in entries("job.trigger")} == runs
    assert entries("job.trigger")[0].actor_name == "staff"


def test_beat_runs_are_not_operator_actions() -> None:
    SchedulerService.trigger_manual_update("beat_heartbeat", sync=True, source="beat")
    assert not AuditLog.objects.exists()


def test_bad_parameters_change_nothing_and_audit_nothing(staff_client: APIClient) -> None:
    response = staff_client.post("/api/v1/admin/jobs/sleep/trigger/", {"params": {"seconds": -1}}, format="json")
    assert response.status_code == 400
    assert not AuditLog.objects.exists() and not JobRun.objects.exists()


def test_a_schedule_edit_in_the_admin_records_before_and_after(root_client: Client) -> None:
    SchedulerService.setup_default_tasks()
    created = entries("schedule.create")
    assert created and all(e.source == "setup" for e in created)
    task = PeriodicTask.objects.get(name="beat_heartbeat")
    ten = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    form = root_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(
        regtask="core.beat_heartbeat", task="", interval=ten.pk, enabled="on", args="[]", kwargs="{}", headers="{}"
    )
    assert root_client.post(url, data).status_code == 302

    (change,) = entries("schedule.change")
    assert change.source == "admin" and change.actor_name == "root"
    assert change.target.startswith(f"django_celery_beat.periodictask:{task.pk}")
    assert change.data["before"]["interval"] == {"id": task.interval_id, "str": str(task.interval)}
    assert change.data["after"]["interval"]["id"] == ten.pk


def test_enabling_disabling_and_deleting_schedules_are_audited(root_client: Client) -> None:
    SchedulerService.setup_default_tasks()
    task = PeriodicTask.objects.get(name="beat_heartbeat")
    changelist = "/admin/django_celery_beat/periodictask/"
    root_client.post(changelist, {"action": "disable_tasks", "_selected_action": [task.pk]})
    root_client.post(changelist, {"action": "enable_tasks", "_selected_action": [task.pk]})
    root_client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/delete/", {"post": "yes"})

    assert [e.data["ids"] for e in entries("schedule.disable")] == [[task.pk]]
    assert [e.data["ids"] for e in entries("schedule.enable")] == [[task.pk]]
    (deleted,) = entries("schedule.delete")
    assert "beat_heartbeat" in deleted.target


def test_jobs_setup_reset_records_what_it_put_back() -> None:
    SchedulerService.setup_default_tasks()
    PeriodicTask.objects.filter(name="beat_heartbeat").update(enabled=False)
    call_command("jobs", "setup", "--reset", stdout=io.StringIO())
    reset = {e.target.split(" ", 1)[1]: e for e in entries("schedule.reset")}
    assert reset["beat_heartbeat"].data["before"]["enabled"] is False
    assert reset["beat_heartbeat"].data["after"]["enabled"] is True


def test_retry_revoke_and_resume_are_audited(staff_client: APIClient, staff_user: User) -> None:
    failed = JobRun.objects.create(
        job_key="sleep", task_name="core.sleep", task_id="t-failed", source="api", status="failed", params={}
    )
    assert staff_client.post(f"/api/v1/admin/jobs/runs/{failed.pk}/retry/").status_code == 202
    (retry,) = entries("job.retry")
    assert retry.data["before"] == {"job_run_id": str(failed.pk), "status": "failed"}
    assert not entries("job.trigger")  # one entry for one action

    queued = SchedulerService.trigger_manual_update("sleep", {"seconds": 1}, source="shell")
    assert staff_client.post(f"/api/v1/admin/tasks/{queued.task_id}/revoke/", {}, format="json").status_code == 202
    (revoke,) = entries("task.revoke")
    assert (revoke.target, revoke.actor_id, revoke.data["terminate"]) == (
        f"task:{queued.task_id}",
        staff_user.pk,
        False,
    )

    from core.models import JobState

    JobState.objects.create(job_key="beat_heartbeat", last_slot=timezone.now(), paused_at=timezone.now())
    call_command("jobs", "resume", "beat_heartbeat", stdout=io.StringIO())
    (resume,) = entries("job.resume")
    assert resume.source == "cli" and resume.data["before"]["paused_at"]


def test_a_dead_letter_retry_is_audited_from_the_admin_and_the_api(
    root_client: Client, staff_client: APIClient
) -> None:
    rows = [
        notify(template="raw_sms", to="+14155552671", context={"body": "x"}, channels=["sms"], dedupe_key=k)[0]
        for k in ("a", "b")
    ]
    Notification.objects.filter(pk__in=[r.pk for r in rows]).update(status="failed")
    root_client.post("/admin/notifications/deadletter/", {"action": "retry", "_selected_action": [rows[0].pk]})
    assert staff_client.post(f"/api/v1/admin/notifications/{rows[1].pk}/retry/").status_code == 202

    got = [(e.source, e.data["ids"]) for e in entries("deadletter.retry")]
    assert got == [("admin", [rows[0].pk]), ("api", [rows[1].pk])]


def test_an_admin_change_to_a_domain_row_keeps_the_changed_fields_before_and_after(root_client: Client) -> None:
    station = Station.objects.create(code="MS-9", name="Old name", kind=Station.Kind.MS)
    url = f"/admin/logistics/station/{station.pk}/change/"
    form = root_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data["name"] = "New name"
    assert root_client.post(url, data).status_code == 302

    (change,) = entries("logistics.station.change")
    assert change.data == {"before": {"name": "Old name"}, "after": {"name": "New name"}}


def test_passwords_set_in_the_admin_are_never_recorded(root_client: Client) -> None:
    response = root_client.post(
        "/admin/core/user/add/",
        {"username": "newbie", "password1": "S3cret-pass-9", "password2": "S3cret-pass-9", "usable_password": "true"},
    )
    assert response.status_code == 302
    (created,) = entries("core.user.create")
    assert "S3cret-pass-9" not in str(created.data)


def test_the_trail_is_view_only_and_filterable_in_the_admin(root_client: Client, root: User) -> None:
    SchedulerService.trigger_manual_update("beat_heartbeat", sync=True, source="cli")
    entry = AuditLog.objects.get()

    listing = root_client.get("/admin/core/auditlog/?source__exact=cli")
    assert listing.status_code == 200 and listing.context["cl"].result_count == 1
    assert root_client.get("/admin/core/auditlog/?source__exact=api").context["cl"].result_count == 0
    assert root_client.get("/admin/core/auditlog/add/").status_code == 403
    assert root_client.post(f"/admin/core/auditlog/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    page = root_client.get(f"/admin/core/auditlog/{entry.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert AuditLog.objects.filter(pk=entry.pk).exists()


def test_the_cleanup_job_deletes_old_entries_only() -> None:
    old = AuditLog.objects.create(action="job.trigger", source="cli")
    AuditLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=100))
    run = SchedulerService.trigger_manual_update("audit_logs_cleanup", sync=True, source="shell")
    assert run.status == "succeeded" and run.summary["deleted"] == 1
    assert not AuditLog.objects.filter(pk=old.pk).exists()
    assert entries("job.trigger")  # the cleanup's own trigger stays


def test_an_api_tokens_key_is_never_written_to_the_trail(root_client: Client, staff_user: User) -> None:
    from rest_framework.authtoken.models import Token

    assert root_client.post("/admin/authtoken/tokenproxy/add/", {"user": staff_user.pk}).status_code == 302
    key = Token.objects.get(user=staff_user).key
    root_client.post(f"/admin/authtoken/tokenproxy/{staff_user.pk}/delete/", {"post": "yes"})

    assert {e.action for e in AuditLog.objects.all()} >= {"authtoken.tokenproxy.create", "authtoken.tokenproxy.delete"}
    assert key not in str(list(AuditLog.objects.values("target", "data")))


def test_a_password_changed_in_the_admin_is_audited_without_it(root_client: Client, staff_user: User) -> None:
    url = f"/admin/core/user/{staff_user.pk}/password/"
    response = root_client.post(url, {"password1": "N3w-pass-word-7", "password2": "N3w-pass-word-7"})
    assert response.status_code == 302
    (changed,) = entries("core.user.password_change")
    assert changed.target == f"core.user:{staff_user.pk}" and "N3w-pass-word-7" not in str(changed.data)


def test_retrying_from_the_notifications_list_is_a_dead_letter_retry(root_client: Client) -> None:
    row = notify(template="raw_sms", to="+14155552671", context={"body": "x"}, channels=["sms"], dedupe_key="n")[0]
    Notification.objects.filter(pk=row.pk).update(status="failed")
    root_client.post("/admin/notifications/notification/", {"action": "retry", "_selected_action": [row.pk]})
    assert [(e.source, e.data["ids"]) for e in entries("deadletter.retry")] == [("admin", [row.pk])]
