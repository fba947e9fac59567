from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.models import User
from notifications.models import Notification, PushDevice
from notifications.services import notify

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_staff(staff_user: User) -> Client:
    staff_user.is_superuser = True
    staff_user.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(staff_user)
    return client


def test_staff_see_the_outbox_the_dead_letters_templates_and_devices_in_the_admin(
    admin_client_staff: Client, recipient: User, django_assert_max_num_queries: Any
) -> None:
    # Given a sent-to-be row, a failed row and a device
    notify(template="raw_sms", to="+447911123456", context={"body": "ok"}, channels=["sms"], dedupe_key="ok")
    notify(template="raw_sms", to="12345", context={"body": "bad"}, channels=["sms"], dedupe_key="bad")
    PushDevice.objects.create(user=recipient, token="tok")
    # When staff open the admin pages
    pages = {
        name: admin_client_staff.get(f"/admin/notifications/{name}/")
        for name in ("notification", "deadletter", "notificationtemplate", "pushdevice")
    }
    # Then each renders, and the dead-letter page lists only the failed row with its error
    assert {name: r.status_code for name, r in pages.items()} == dict.fromkeys(pages, 200)
    dead = pages["deadletter"].content.decode()
    assert "is not in E.164 form" in dead
    assert "+447911123456" not in dead
    assert "payment_failed" in pages["notificationtemplate"].content.decode()


def test_the_dead_letter_retry_action_requeues_the_selected_failed_rows(admin_client_staff: Client) -> None:
    row = notify(template="raw_sms", to="+14155552671", context={"body": "x"}, channels=["sms"], dedupe_key="r")[0]
    Notification.objects.filter(pk=row.pk).update(status="failed", last_error="gave up after 4 attempts: HTTP 502")
    response = admin_client_staff.post(
        "/admin/notifications/deadletter/", {"action": "retry", "_selected_action": [row.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "1 notification queued again." in response.content.decode()
    assert Notification.objects.get(pk=row.pk).status == "pending"
