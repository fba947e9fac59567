"""The escrow guide's three notification tasks, run eagerly (tests/e2e/test_escrow_tasks.py runs them on a worker)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.db import OperationalError

from notifications.models import Notification
from payments.models import Milestone, SellerVerification
from payments.services.escrow_notices import NoticeRefused
from payments.tasks import send_email_notification, send_transaction_notification, send_verification_notification
from tests.support.broker import BrokerProbe, test_broker
from tests.support.factories.escrow import Parties, make_escrow, make_parties, milestones_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def parties(db: Any) -> Parties:
    return make_parties()


def rows(template: str | None = None) -> list[tuple[str, str, str]]:
    qs = Notification.objects.order_by("pk")
    if template:
        qs = qs.filter(template_key=template)
    return list(qs.values_list("template_key", "to_address", "status"))


def test_send_email_notification_writes_one_message_per_recipient_and_returns_ids_never_the_body() -> None:
    result = send_email_notification.apply(
        kwargs={
            "subject": "Welcome!",
            "message": "Thank you for registering.",
            "recipient_list": ["user@example.com", "other@example.com", "user@example.com"],
        }
    )

    assert result.status == "SUCCESS"
    assert rows() == [("raw_email", "user@example.com", "pending"), ("raw_email", "other@example.com", "pending")]
    summary = result.result
    assert summary["recipients"] == 2 and [n["status"] for n in summary["notifications"]] == ["pending", "pending"]
    assert "Thank you" not in json.dumps(summary)
    assert Notification.objects.filter(context__body="Thank you for registering.").count() == 2


def test_the_same_message_delivered_twice_writes_its_rows_once() -> None:
    kwargs = {"subject": "Hi", "message": "Body", "recipient_list": ["a@example.com"]}
    first = send_email_notification.apply(kwargs=kwargs, task_id="redelivered-1").result
    second = send_email_notification.apply(kwargs=kwargs, task_id="redelivered-1").result
    assert first == second and Notification.objects.count() == 1


def test_invalid_addresses_fail_at_once_and_the_valid_ones_are_still_sent() -> None:
    result = send_email_notification.apply(
        kwargs={"subject": "Hi", "message": "Body", "recipient_list": ["ok@example.com", "not-an-address", 42]}
    )

    assert result.status == "FAILURE" and isinstance(result.result, NoticeRefused)
    text = str(result.result)
    assert "'not-an-address' (malformed email address 'not-an-address')" in text and "42 (not a string)" in text
    assert rows() == [("raw_email", "ok@example.com", "pending")]
    assert result.result.__class__ not in send_email_notification.autoretry_for


@pytest.mark.parametrize("recipients", [[], "user@example.com"])
def test_an_empty_recipient_list_fails_at_once_and_writes_nothing(recipients: Any) -> None:
    result = send_email_notification.apply(kwargs={"subject": "Hi", "message": "Body", "recipient_list": recipients})
    assert result.status == "FAILURE" and "recipient_list is empty" in str(result.result)
    assert Notification.objects.count() == 0


def test_the_email_task_publishes_its_arguments_without_the_message_text(broker: BrokerProbe) -> None:
    send_email_notification.delay(
        subject="Welcome!", message="Thank you for registering.", recipient_list=["user@example.com"]
    )
    send_email_notification.delay("Positional", "Secret body", ["user@example.com"])

    envelopes = [json.loads(raw) for raw in reversed(test_broker().lrange("payments", 0, -1))]
    headers = [e["headers"] for e in envelopes]
    assert headers[0]["kwargsrepr"] == (
        "{'subject': '<8 characters>', 'message': '<26 characters>', 'recipient_list': ['user@example.com']}"
    )
    assert headers[1]["argsrepr"] == "['<10 characters>', '<11 characters>', ['user@example.com']]"
    # The body itself still travels to the worker, which needs it.
    _, kwargs, _ = json.loads(base64.b64decode(envelopes[0]["body"]))
    assert kwargs["message"] == "Thank you for registering."


@pytest.mark.parametrize(
    ("notification_type", "recipients"),
    [
        ("created", ["seller"]),
        ("funded", ["seller"]),
        ("completed", ["buyer", "seller"]),
        ("cancelled", ["buyer", "seller"]),
    ],
)
def test_send_transaction_notification_writes_the_templated_message_to_the_right_party(
    parties: Parties, notification_type: str, recipients: list[str]
) -> None:
    escrow = make_escrow(parties.buyer, parties.seller, status="funded")

    result = send_transaction_notification.apply(
        kwargs={"transaction_id": escrow.pk, "notification_type": notification_type}
    )

    assert result.status == "SUCCESS" and result.result["outcome"] == "notified"
    expected = [getattr(parties, r).email for r in recipients]
    assert [to for _, to, _ in rows(f"escrow_transaction_{notification_type}")] == expected
    assert {n["id"] for n in result.result["notifications"]} == set(Notification.objects.values_list("pk", flat=True))


def test_a_milestone_notice_without_a_milestone_id_uses_the_latest_milestone_of_that_event(parties: Parties) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, status="in_progress", milestone_statuses=(Milestone.Status.SUBMITTED,) * 2
    )
    first, second = milestones_of(escrow)
    Milestone.objects.filter(pk=second.pk).update(submitted_at="2030-01-02T00:00Z")
    Milestone.objects.filter(pk=first.pk).update(submitted_at="2030-01-01T00:00Z")

    result = send_transaction_notification.apply(
        kwargs={"transaction_id": escrow.pk, "notification_type": "milestone_submitted"}
    ).result

    assert result["milestone_id"] == second.pk
    assert Notification.objects.get().context["milestone_title"] == "Part 2"


def test_unknown_types_fail_at_once_and_missing_transactions_are_reported_not_retried(parties: Parties) -> None:
    escrow = make_escrow(parties.buyer, parties.seller)

    unknown = send_transaction_notification.apply(kwargs={"transaction_id": escrow.pk, "notification_type": "paid"})
    missing = send_transaction_notification.apply(kwargs={"transaction_id": 999_999, "notification_type": "funded"})

    assert unknown.status == "FAILURE"
    assert str(unknown.result).startswith(
        "Unknown notification_type 'paid'; one of created, funded, milestone_submitted"
    )
    assert (missing.status, missing.result["outcome"]) == ("SUCCESS", "not_found")
    assert Notification.objects.count() == 0


@pytest.mark.parametrize("status", ["VERIFIED", "REJECTED", "PENDING"])
def test_send_verification_notification_tells_the_seller(parties: Parties, status: str) -> None:
    SellerVerification.objects.create(user=parties.seller, status=status, reason="Blurred photo")

    result = send_verification_notification.apply(kwargs={"user_id": parties.seller.pk, "verification_status": status})

    assert result.status == "SUCCESS"
    assert rows() == [(f"escrow_verification_{status.lower()}", parties.seller.email, "pending")]
    assert Notification.objects.get().context["reason"] == "Blurred photo"


def test_unknown_verification_statuses_fail_at_once_and_unknown_users_are_reported(parties: Parties) -> None:
    unknown = send_verification_notification.apply(
        kwargs={"user_id": parties.seller.pk, "verification_status": "verified"}
    )
    missing = send_verification_notification.apply(kwargs={"user_id": 999_999, "verification_status": "VERIFIED"})

    assert unknown.status == "FAILURE" and "Unknown verification_status 'verified'" in str(unknown.result)
    assert missing.result == {
        "user_id": 999_999,
        "verification_status": "VERIFIED",
        "outcome": "not_found",
        "notifications": [],
    }


def test_the_notification_tasks_retry_a_lost_database_only() -> None:
    for task in (send_email_notification, send_transaction_notification, send_verification_notification):
        assert task.autoretry_for == (OperationalError,)
        assert task.max_retries == 3
