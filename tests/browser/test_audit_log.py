"""An operator's actions show in the audit log, which the admin lists and filters but never lets anyone change."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule

from core.models import AuditLog, User
from core.scheduler import SchedulerService
from notifications.services import notification_templates_install_defaults, notify
from tests.browser.conftest import AdminBrowser
from tests.support.broker import BrokerProbe

pytestmark = pytest.mark.browser


def _act_in_the_admin(admin: AdminBrowser) -> None:
    """Run a job with parameters, edit a schedule and retry a dead letter, each through the admin's pages."""
    admin.open("/admin/core/jobcatalogentry/sleep/run/")
    admin.fill("seconds", "1")
    admin.click_and_wait(
        admin.driver.find_element("name", "seconds").find_element("xpath", "./ancestor::form//*[@type='submit']")
    )
    assert admin.path.startswith("/admin/core/jobrun/"), admin.text()

    admin.open("/admin/django_celery_beat/periodictask/")
    admin.click_and_wait(admin.driver.find_element("link text", "beat_heartbeat"))
    admin.select("interval", "every 4 seconds")
    admin.click_and_wait(admin.find("input[name=_save]"))
    assert any("changed successfully" in m for m in admin.messages()), admin.messages()

    admin.open("/admin/notifications/deadletter/")
    admin.row("12345", "#result_list tbody tr").find_element("css selector", "input[name=_selected_action]").click()
    admin.select("action", "Retry selected failed notifications")
    admin.click_and_wait(admin.find("button[name=index]"))
    assert "1 notification queued again." in admin.messages()


def test_operator_actions_are_listed_in_the_audit_log_and_filterable(
    signed_in: AdminBrowser, operator: User, broker: BrokerProbe
) -> None:
    # Given the default schedules, a 4 s interval and a dead letter (a number Twilio would never take)
    SchedulerService.setup_default_tasks()
    IntervalSchedule.objects.get_or_create(every=4, period=IntervalSchedule.SECONDS)
    notification_templates_install_defaults()
    notify(template="raw_sms", to="12345", context={"body": "x"}, channels=["sms"], dedupe_key="audit-dead")
    AuditLog.objects.all().delete()  # what setup wrote (source "setup") is not this test's subject

    # When the operator runs a job, edits a schedule and retries a dead letter in the admin,
    # and someone runs a job from manage.py
    admin = signed_in
    _act_in_the_admin(admin)
    call_command("jobs", "run", "sleep", "--param", "seconds=0")

    # Then the audit log lists four entries, newest first, with who did what from where
    admin.open("/admin/core/auditlog/")
    headers = admin.text("#result_list thead").lower()
    for column in ("created", "actor", "source", "action", "target"):
        assert column in headers, headers
    rows = [r.text for r in admin.find_all("#result_list tbody tr")]
    assert len(rows) == 4, rows
    assert "manage.py" in rows[0] and "sleep" in rows[0]
    admin_rows = rows[1:]
    assert all("operator" in r and "Admin" in r for r in admin_rows), admin_rows
    assert any("beat_heartbeat" in r for r in admin_rows), admin_rows
    assert any("sleep" in r for r in admin_rows), admin_rows
    admin.shot("audit-log")

    # And the source filter narrows the list to the manage.py entry, the actor filter to the operator's three
    admin.click_and_wait(admin.driver.find_element("xpath", "//*[@id='changelist-filter']//a[text()='manage.py']"))
    rows = [r.text for r in admin.find_all("#result_list tbody tr")]
    assert len(rows) == 1 and "sleep" in rows[0], rows
    admin.open("/admin/core/auditlog/")
    admin.click_and_wait(admin.driver.find_element("xpath", "//*[@id='changelist-filter']//a[text()='operator']"))
    rows = [r.text for r in admin.find_all("#result_list tbody tr")]
    assert len(rows) == 3 and all("Admin" in r for r in rows), rows


def test_a_schedule_edits_audit_entry_shows_the_interval_before_and_after(signed_in: AdminBrowser) -> None:
    # Given beat_heartbeat every 30 s and a 4 s interval on offer
    SchedulerService.setup_default_tasks()
    IntervalSchedule.objects.get_or_create(every=4, period=IntervalSchedule.SECONDS)
    admin = signed_in
    # When the operator changes its interval in the admin
    admin.open("/admin/django_celery_beat/periodictask/")
    admin.click_and_wait(admin.driver.find_element("link text", "beat_heartbeat"))
    admin.select("interval", "every 4 seconds")
    admin.click_and_wait(admin.find("input[name=_save]"))
    # Then the audit entry of the edit reads as the schedules, before and after, not as row ids
    admin.open("/admin/core/auditlog/?action=schedule.change")
    admin.click_and_wait(admin.row("beat_heartbeat", "#result_list tbody tr").find_element("css selector", "th a"))
    data = json.loads(admin.text(".field-data .readonly"))
    assert "every 4 seconds" in json.dumps(data["after"]["interval"]), data
    assert "every 30 seconds" in json.dumps(data["before"]["interval"]), data


def test_an_audit_entry_cannot_be_added_changed_or_deleted_from_the_admin(
    signed_in: AdminBrowser, operator: User
) -> None:
    # Given one entry (a manage.py trigger)
    call_command("jobs", "run", "sleep", "--param", "seconds=0")
    entry = AuditLog.objects.get()
    admin = signed_in

    # When even a superuser opens the list and the entry
    admin.open("/admin/core/auditlog/")
    # Then there is no add button and no delete action
    assert not admin.has("#content a.addlink")
    assert not [o.text for o in admin.find_all("select[name=action] option") if "Delete" in o.text]
    admin.open(f"/admin/core/auditlog/{entry.pk}/change/")
    assert "View audit log" in admin.text("#content h1"), admin.text("#content h1")
    assert not admin.has("input[name=_save]")
    assert not admin.has("#content a.deletelink")

    # And typing the add or delete address answers 403, leaving the entry in place
    for path in ("/admin/core/auditlog/add/", f"/admin/core/auditlog/{entry.pk}/delete/"):
        admin.open(path)
        assert "403 Forbidden" in admin.text(), path
    assert AuditLog.objects.filter(pk=entry.pk).exists()
