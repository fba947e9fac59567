"""The tasks the seed systems call by name: thin shells over notify()."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail

from core.models import User
from notifications.models import Notification, PushDevice
from notifications.tasks import (
    deliver,
    send_email,
    send_push,
    send_sms,
    send_templated_email,
    send_templated_sms,
)

pytestmark = pytest.mark.django_db


def _deliver_all() -> None:
    for pk in Notification.objects.filter(status="pending").values_list("pk", flat=True):
        deliver.apply(args=(pk,))


def test_send_email_writes_a_raw_email_that_delivery_sends_with_the_given_subject_and_body(broker: Any) -> None:
    # When the seed's send_email task runs
    result = send_email.apply(args=("ada@example.com", "Welcome!", "Thank you for registering."), task_id="t-1").get()
    _deliver_all()
    # Then one email with exactly that subject and body went out
    assert result["notifications"][0]["status"] == "pending"
    assert [(m.to, m.subject, m.body) for m in mail.outbox] == [
        (["ada@example.com"], "Welcome!", "Thank you for registering.")
    ]


def test_the_same_task_message_delivered_twice_sends_once(broker: Any) -> None:
    # Given a broker redelivering one message (same task id) after a worker died
    send_sms.apply(args=("+14155552671", "code 1"), task_id="same-id")
    send_sms.apply(args=("+14155552671", "code 1"), task_id="same-id")
    # Then only one row exists
    assert Notification.objects.count() == 1


def test_templated_tasks_render_the_template_with_the_context(broker: Any) -> None:
    send_templated_email.apply(
        args=("order_shipped", "ada@example.com", {"order_number": "AB12", "tracking_number": "TN9"})
    )
    send_templated_sms.apply(args=("order_shipped", "+14155552671", {"order_number": "AB12"}))
    _deliver_all()
    assert mail.outbox[0].subject == "Order AB12 has shipped"
    assert "Tracking number: TN9" in mail.outbox[0].body
    assert Notification.objects.get(channel="sms").body == "Order AB12 has shipped."


def test_a_templated_task_with_an_unknown_template_returns_the_error_and_sends_nothing(broker: Any) -> None:
    result = send_templated_email.apply(args=("nope", "ada@example.com", {})).get()
    assert result["notifications"] == [
        {
            "id": result["notifications"][0]["id"],
            "channel": "email",
            "status": "failed",
            "error": "unknown template 'nope' for channel email",
        }
    ]
    assert broker.delivery_ids() == []


def test_send_push_goes_to_the_users_devices_and_a_missing_user_is_reported(recipient: User, broker: Any) -> None:
    PushDevice.objects.create(user=recipient, token="tok-1")
    result = send_push.apply(args=(recipient.pk, "Hello", "World", {"screen": "orders"})).get()
    row = Notification.objects.get(pk=result["notifications"][0]["id"])
    assert (row.to_address, row.data) == ("tok-1", {"screen": "orders"})
    _deliver_all()
    row.refresh_from_db()
    assert (row.status, row.subject, row.body) == ("sent", "Hello", "World")
    assert send_push.apply(args=(999999, "t", "b", {})).get() == {"user_id": 999999, "outcome": "not_found"}


@pytest.mark.parametrize("task", [send_push, send_templated_email, send_templated_sms])
def test_the_templated_send_tasks_do_not_store_their_arguments_as_a_result(task: Any) -> None:
    # One-time codes travel in these arguments; with result_extended a stored result would keep them 14 days
    assert task.ignore_result is True


@pytest.mark.parametrize("task", [send_email, send_sms])
def test_the_raw_send_tasks_store_a_result_but_publish_their_text_as_a_length(task: Any) -> None:
    # Seed 003 calls result.get() on them; what the results store keeps is the message's kwargsrepr.
    assert task.ignore_result is False
    assert {"subject", "body", "message"} <= task.redacted
    assert task._hide("body", "code 123456") == "<11 characters>"
