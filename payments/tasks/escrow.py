"""The escrow guide's tasks, with its names and arguments: thin shells over payments/services/escrow_*.py.

    send_email_notification.delay(subject="Welcome!", message="...", recipient_list=["user@example.com"])
    send_transaction_notification.delay(transaction_id=123, notification_type="funded")
    send_verification_notification.delay(user_id=456, verification_status="VERIFIED")

Results are stored (django-celery-results): ids and statuses, never message bodies.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task, shared_task
from django.db import OperationalError

from core.task_base import BodyRedactingTask

# A lost database connection or a deadlock is worth a retry (the message is already taken
# off the queue); a repeat writes nothing twice. Unknown types and bad addresses are
# NoticeRefused (a ValueError): not listed, so they fail at once.
_DB_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 3,
}


class EmailNotificationTask(BodyRedactingTask):
    redacted = frozenset({"subject", "message"})


@shared_task(bind=True, base=EmailNotificationTask, name="payments.send_email_notification", **_DB_RETRY)
def send_email_notification(
    self: Task[Any, Any], subject: str, message: str, recipient_list: list[str]
) -> dict[str, Any]:
    """One email per recipient through the notifications outbox; invalid addresses fail at once."""
    from payments.services.escrow_notices import escrow_email_send

    return escrow_email_send(
        subject=subject, message=message, recipient_list=recipient_list, delivery_key=_delivery_key(self)
    )


@shared_task(bind=True, name="payments.send_transaction_notification", **_DB_RETRY)
def send_transaction_notification(
    self: Task[Any, Any], transaction_id: int, notification_type: str, milestone_id: int | None = None
) -> dict[str, Any]:
    """`created`, `funded`, `milestone_submitted`, `milestone_approved`, `completed`, `disputed`, `cancelled`
    (and `milestone_rejected`, `milestone_released`) to the parties concerned."""
    from payments.services.escrow_notices import escrow_transaction_notify

    return escrow_transaction_notify(
        transaction_id=transaction_id,
        notification_type=notification_type,
        milestone_id=milestone_id,
        delivery_key=_delivery_key(self),
    )


@shared_task(bind=True, name="payments.send_verification_notification", **_DB_RETRY)
def send_verification_notification(
    self: Task[Any, Any], user_id: int, verification_status: str, reason: str | None = None
) -> dict[str, Any]:
    """`VERIFIED`, `REJECTED` or `PENDING` to the seller (`reason`: the review's, for a rejection)."""
    from payments.services.escrow_notices import escrow_verification_notify

    return escrow_verification_notify(
        user_id=user_id, verification_status=verification_status, reason=reason, delivery_key=_delivery_key(self)
    )


# Storage errors (an object store timing out, a full disk) are retried with backoff: 3 times,
# at most 10 minutes apart. A file missing from storage is rejected by the service instead.
@shared_task(
    name="payments.process_milestone_evidence",
    autoretry_for=(OSError, OperationalError),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def process_milestone_evidence(evidence_id: int) -> dict[str, Any]:
    """Check an uploaded evidence file: size limit, type sniffed from its bytes, SHA-256; accept or reject it."""
    from payments.services.escrow_evidence import evidence_process

    return evidence_process(evidence_id=evidence_id)


@shared_task(name="payments.send_daily_transaction_summary")
def send_daily_transaction_summary() -> dict[str, Any]:
    from payments.services.escrow_sweeps import escrow_daily_summaries_send

    return escrow_daily_summaries_send()


@shared_task(name="payments.cleanup_old_pending_transactions")
def cleanup_old_pending_transactions(older_than_days: int | None = None) -> dict[str, Any]:
    """Remind buyers of transactions unfunded for more than `older_than_days` (ESCROW_FUNDING_REMINDER_DAYS, 7)."""
    from payments.services.escrow_sweeps import escrow_funding_reminders_send

    return escrow_funding_reminders_send(older_than_days=older_than_days)


@shared_task(name="payments.check_overdue_milestones")
def check_overdue_milestones(older_than_days: int | None = None) -> dict[str, Any]:
    """Tell sellers of milestones pending for more than `older_than_days` (ESCROW_OVERDUE_MILESTONE_DAYS, 14)."""
    from payments.services.escrow_sweeps import escrow_overdue_milestones_notify

    return escrow_overdue_milestones_notify(older_than_days=older_than_days)


def _delivery_key(task: Task[Any, Any]) -> str:
    # A redelivered or relayed message keeps its task id, so it maps to the same notification rows.
    # A direct call (no message) has none: each such call is its own delivery.
    return str(task.request.id or uuid.uuid4())
