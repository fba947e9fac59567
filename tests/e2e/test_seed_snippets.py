"""Seed 003's notification snippets, as its guide writes them, through a real worker."""

from __future__ import annotations

from typing import Any

import pytest
from django_celery_results.models import TaskResult

from notifications.models import Notification

pytestmark = pytest.mark.e2e


def test_send_email_task_with_the_guides_keywords_stores_a_result_without_the_text(start_worker: Any) -> None:
    start_worker(queues="notifications,notifications_retry")
    from notifications.tasks import send_email as send_email_task

    # Queue a task
    result = send_email_task.delay(to_email="user@example.com", subject="Test", body="Test message")

    # Check status / get result (blocks until task completes)
    assert result.status in {"PENDING", "STARTED", "SUCCESS"}
    outcome = result.get(timeout=10)
    assert result.status == "SUCCESS"
    [row] = outcome["notifications"]
    assert row["channel"] == "email" and row["status"] in {"pending", "sending", "sent"}
    stored = Notification.objects.get(pk=row["id"])
    assert (stored.to_address, stored.context["body"]) == ("user@example.com", "Test message")
    # The results store (and Flower) keep the arguments without the message text.
    kept = TaskResult.objects.get(task_id=result.id)
    assert "Test message" not in (kept.task_kwargs or "") and "Test message" not in (kept.result or "")
    assert "user@example.com" in (kept.task_kwargs or "")


def test_send_sms_task_takes_to_phone_and_a_missing_address_fails_at_once(start_worker: Any) -> None:
    start_worker(queues="notifications,notifications_retry")
    from notifications.tasks import send_sms as send_sms_task

    result = send_sms_task.delay(to_phone="+14155552671", message="Your order has shipped.")
    [row] = result.get(timeout=10)["notifications"]
    assert Notification.objects.get(pk=row["id"]).to_address == "+14155552671"

    broken = send_sms_task.delay(message="nobody to send to")
    with pytest.raises(TypeError, match="to_phone"):
        broken.get(timeout=10)
    assert broken.status == "FAILURE"
