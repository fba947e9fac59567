"""Escrow end to end: the guide's calls as written, and an HTTP flow, on real worker processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult
from django_celery_results.models import TaskResult

from notifications.models import Notification
from payments.models import MilestoneEvidence, SellerVerification
from payments.tasks import send_email_notification, send_transaction_notification, send_verification_notification
from tests.e2e.conftest import wait_for
from tests.support.factories.escrow import JPEG_BYTES, make_escrow, make_parties, upload

pytestmark = pytest.mark.e2e


def finished(task_id: str, timeout: float = 60) -> AsyncResult[Any]:
    result: AsyncResult[Any] = AsyncResult(task_id)
    wait_for(lambda: result.status in ("SUCCESS", "FAILURE"), timeout=timeout, message=f"task {task_id} to finish")
    return result


def test_the_guides_three_calls_run_on_a_worker_and_their_status_and_result_are_stored(
    start_worker: Callable[..., Any],
) -> None:
    # Given a funded transaction, a verified seller, and a worker on the payments and notifications queues
    parties = make_parties()
    escrow = make_escrow(parties.buyer, parties.seller, status="funded")
    SellerVerification.objects.create(user=parties.seller, status="VERIFIED")
    worker = start_worker(queues="payments,notifications,notifications_retry")

    # When the guide's calls are made as written
    email = send_email_notification.delay(
        subject="Welcome!", message="Thank you for registering.", recipient_list=["user@example.com"]
    )
    funded = send_transaction_notification.delay(transaction_id=escrow.pk, notification_type="funded")
    verified = send_verification_notification.delay(user_id=parties.seller.pk, verification_status="VERIFIED")

    # Then AsyncResult(task_id) reports each one's status and its result (ids and statuses)
    results = [finished(r.id) for r in (email, funded, verified)]
    assert [r.status for r in results] == ["SUCCESS"] * 3, f"worker log: {worker.log}"
    assert results[0].result["recipients"] == 1
    assert results[1].result["outcome"] == "notified" and results[1].result["notification_type"] == "funded"
    assert results[2].result["verification_status"] == "VERIFIED"
    ids = [n["id"] for r in results for n in r.result["notifications"]]
    # And the notifications queue delivered the three emails
    wait_for(
        lambda: Notification.objects.filter(pk__in=ids, status="sent").count() == 3,
        timeout=60,
        message=f"the 3 emails to be sent; worker log: {worker.log}",
    )
    rows = Notification.objects.filter(pk__in=ids)
    # The three tasks ran at once on the worker's two processes: in no particular order.
    assert sorted((n.template_key, n.to_address) for n in rows) == [
        ("escrow_transaction_funded", parties.seller.email),
        ("escrow_verification_verified", parties.seller.email),
        ("raw_email", "user@example.com"),
    ]
    raw = rows.get(template_key="raw_email")
    assert raw.subject == "Welcome!" and raw.body == "Thank you for registering."
    # The results store keeps the arguments without the message text
    stored = TaskResult.objects.get(task_id=email.id)
    assert "Thank you" not in (stored.task_kwargs or "") and "Thank you" not in (stored.result or "")
    assert "user@example.com" in (stored.task_kwargs or "")


def test_an_unknown_type_fails_at_once_and_a_bad_address_fails_while_the_good_one_is_sent(
    start_worker: Callable[..., Any],
) -> None:
    parties = make_parties()
    escrow = make_escrow(parties.buyer, parties.seller)
    start_worker(queues="payments,notifications,notifications_retry")

    unknown = send_transaction_notification.delay(transaction_id=escrow.pk, notification_type="refunded-ish")
    mixed = send_email_notification.delay(subject="Hi", message="Body", recipient_list=["good@example.com", "bad@"])

    failed = finished(unknown.id)
    assert failed.status == "FAILURE" and "Unknown notification_type 'refunded-ish'" in str(failed.result)
    assert TaskResult.objects.get(task_id=unknown.id).status == "FAILURE"
    partial = finished(mixed.id)
    assert partial.status == "FAILURE" and "'bad@'" in str(partial.result)
    wait_for(
        lambda: Notification.objects.filter(to_address="good@example.com", status="sent").exists(),
        timeout=60,
        message="the valid address's email to be sent",
    )
    assert not Notification.objects.filter(to_address="bad@").exists()


def test_an_http_flow_is_told_through_the_outbox_and_the_evidence_is_checked_by_the_worker(
    start_worker: Callable[..., Any], tmp_path: Path, settings: Any
) -> None:
    # Given a worker that shares this process's media directory
    settings.MEDIA_ROOT = tmp_path / "media"
    parties = make_parties()
    worker = start_worker(queues="payments,notifications,notifications_retry", MEDIA_ROOT=str(settings.MEDIA_ROOT))
    buyer, seller = parties.client("buyer"), parties.client("seller")
    # When the buyer opens and funds a transaction and the seller submits its milestone with a photo
    created = buyer.post(
        "/api/v1/escrow/transactions/",
        {
            "seller": parties.seller.pk,
            "title": "Logo",
            "amount": "300.00",
            "currency": "EUR",
            "milestones": [{"title": "Logo", "amount": "300.00"}],
        },
        format="json",
    ).json()
    buyer.post(f"/api/v1/escrow/transactions/{created['id']}/fund/", HTTP_IDEMPOTENCY_KEY="e2e-fund")
    milestone = created["milestones"][0]["id"]
    submitted = seller.post(
        f"/api/v1/escrow/milestones/{milestone}/submit/",
        {"evidence": [upload(JPEG_BYTES, "logo.jpg")]},
        format="multipart",
    )
    assert submitted.status_code == 200, submitted.json()

    # Then the worker accepted the evidence and the seller and buyer were told of each step
    wait_for(
        lambda: MilestoneEvidence.objects.filter(status="accepted", content_type="image/jpeg").exists(),
        timeout=60,
        message=f"the evidence to be accepted; worker log: {worker.log}",
    )
    expected = {
        ("escrow_transaction_created", parties.seller.email),
        ("escrow_transaction_funded", parties.seller.email),
        ("escrow_transaction_milestone_submitted", parties.buyer.email),
    }
    wait_for(
        lambda: set(Notification.objects.filter(status="sent").values_list("template_key", "to_address")) == expected,
        timeout=60,
        message=f"the three escrow emails to be sent; worker log: {worker.log}",
    )
