"""The escrow guide's three notification tasks, as services: plain email, transaction events, verification.

Each writes notification rows through `notifications.services.notify` (the notifications
outbox delivers them, with its retries and dead letters); the context is built here,
because notifications never reads payments' tables. `delivery_key` is the calling
task's id: a redelivered or relayed message carries the same id, so it writes nothing
twice, while a new `.delay()` from a shell is a new message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from core.models import User
from notifications.exceptions import InvalidAddress
from notifications.models import Channel, Notification
from notifications.services import notify, summary_of
from notifications.validation import email_validate
from payments.models import EscrowTransaction, Milestone, SellerVerification

logger = logging.getLogger(__name__)

BUYER, SELLER = "buyer", "seller"

# notification_type → who is told. The guide's seven types, and the two milestone events
# it leaves out (a rejection and a release are state changes the seller must hear of).
TRANSACTION_NOTICES: dict[str, tuple[str, ...]] = {
    "created": (SELLER,),
    "funded": (SELLER,),
    "milestone_submitted": (BUYER,),
    "milestone_approved": (SELLER,),
    "milestone_rejected": (SELLER,),
    "milestone_released": (SELLER,),
    "completed": (BUYER, SELLER),
    "disputed": (BUYER, SELLER),
    "cancelled": (BUYER, SELLER),
}
# Milestone events, and the milestone time that picks "the latest one" when no id is given.
MILESTONE_NOTICES: dict[str, str] = {
    "milestone_submitted": "submitted_at",
    "milestone_approved": "approved_at",
    "milestone_rejected": "rejected_at",
    "milestone_released": "released_at",
}
VERIFICATION_STATUSES = tuple(SellerVerification.Status.values)


class NoticeRefused(ValueError):
    """A call that can never succeed (an unknown type or status, no valid recipient): failed at once, not retried."""


def name_of(user: User) -> str:
    return user.get_full_name() or user.get_username()


# send_email_notification ---------------------------------------------------------------------


def escrow_email_send(
    *, subject: str, message: str, recipient_list: Sequence[str], delivery_key: str
) -> dict[str, Any]:
    """One `raw_email` message per distinct valid address, written in one transaction.

    An empty list is refused before anything is written. Invalid addresses are never
    written or retried: once the valid ones are committed (and so will be sent), the
    call fails with `NoticeRefused` naming each invalid address and why.
    """
    if isinstance(recipient_list, str) or not recipient_list:
        raise NoticeRefused("recipient_list is empty: give a list of at least one email address.")
    valid: list[str] = []
    invalid: list[str] = []
    for address in recipient_list:
        if not isinstance(address, str):
            invalid.append(f"{address!r} (not a string)")
            continue
        try:
            cleaned = email_validate(address.strip())
        except InvalidAddress as exc:
            invalid.append(f"{address!r} ({exc})")
            continue
        if cleaned not in valid:
            valid.append(cleaned)
    with transaction.atomic():
        rows: list[Notification] = []
        for index, address in enumerate(valid):
            rows += notify(
                template="raw_email",
                to=address,
                context={"subject": subject, "body": message},
                channels=[Channel.EMAIL],
                # The position, not the address: the key stays short whatever the address.
                dedupe_key=f"escrow-email:{delivery_key}:{index}",
            )
    if invalid:
        sent = f"; the {len(valid)} valid address(es) were written as notifications {[n.pk for n in rows]}"
        raise NoticeRefused(f"Invalid recipient address(es), not sent: {', '.join(invalid)}{sent if valid else ''}.")
    return summary_of(rows, recipients=len(valid))


# send_transaction_notification ---------------------------------------------------------------------


def escrow_transaction_notify(
    *, transaction_id: int, notification_type: str, delivery_key: str, milestone_id: int | None = None
) -> dict[str, Any]:
    """The templated message `escrow_transaction_<type>` to the parties the type concerns.

    Unknown types raise NoticeRefused. A transaction (or milestone) that does not exist is
    logged and reported, not retried. For a milestone event without `milestone_id` (a
    call from a shell), the transaction's latest milestone with that event is used.
    """
    if notification_type not in TRANSACTION_NOTICES:
        raise NoticeRefused(
            f"Unknown notification_type {notification_type!r}; one of {', '.join(TRANSACTION_NOTICES)}."
        )
    summary: dict[str, Any] = {"transaction_id": transaction_id, "notification_type": notification_type}
    escrow = (
        EscrowTransaction.objects.select_related("buyer", "seller", "cancelled_by", "disputed_by")
        .filter(pk=transaction_id)
        .first()
    )
    if escrow is None:
        logger.warning("escrow notice %s: transaction %s does not exist", notification_type, transaction_id)
        return {**summary, "outcome": "not_found", "notifications": []}
    context = transaction_context(escrow)
    if notification_type in MILESTONE_NOTICES:
        milestone = _milestone_for(escrow, notification_type, milestone_id)
        if milestone is None:
            logger.warning("escrow notice %s: no such milestone on transaction %s", notification_type, transaction_id)
            return {**summary, "milestone_id": milestone_id, "outcome": "milestone_not_found", "notifications": []}
        context.update(milestone_context(milestone))
        summary["milestone_id"] = milestone.pk
    rows: list[Notification] = []
    with transaction.atomic():
        for role in TRANSACTION_NOTICES[notification_type]:
            recipient = escrow.buyer if role == BUYER else escrow.seller
            rows += notify(
                template=f"escrow_transaction_{notification_type}",
                user=recipient,
                context={**context, "recipient_name": name_of(recipient), "recipient_role": role},
                channels=[Channel.EMAIL],
                dedupe_key=f"escrow-notice:{delivery_key}:{role}",
            )
    return summary_of(rows, **summary, outcome="notified")


def _milestone_for(escrow: EscrowTransaction, notification_type: str, milestone_id: int | None) -> Milestone | None:
    milestones = Milestone.objects.filter(transaction=escrow)
    if milestone_id is not None:
        return milestones.filter(pk=milestone_id).first()
    stamp = MILESTONE_NOTICES[notification_type]
    return milestones.filter(**{f"{stamp}__isnull": False}).order_by(f"-{stamp}", "-pk").first()


def transaction_context(escrow: EscrowTransaction) -> dict[str, Any]:
    """What the escrow templates show of a transaction (payments builds it; notifications never reads it)."""
    actor = escrow.disputed_by if escrow.status == EscrowTransaction.Status.DISPUTED else escrow.cancelled_by
    return {
        "transaction_id": escrow.pk,
        "title": escrow.title,
        "amount": str(escrow.amount),
        "currency": escrow.currency,
        "status": escrow.status,
        "buyer_name": name_of(escrow.buyer),
        "seller_name": name_of(escrow.seller),
        "actor_name": name_of(actor) if actor is not None else "One of the parties",
        "reason": escrow.dispute_reason,
        "milestone_count": escrow.milestones.count(),
    }


def milestone_context(milestone: Milestone) -> dict[str, Any]:
    return {
        "milestone_id": milestone.pk,
        "milestone_title": milestone.title,
        "milestone_position": milestone.position,
        "milestone_amount": str(milestone.amount),
        "milestone_status": milestone.status,
        "due_date": milestone.due_date.isoformat() if milestone.due_date else "",
        "reason": milestone.rejection_reason,
    }


# send_verification_notification ---------------------------------------------------------------------


def escrow_verification_notify(
    *, user_id: int, verification_status: str, delivery_key: str, reason: str | None = None
) -> dict[str, Any]:
    """`escrow_verification_<status>` to the seller. Unknown statuses raise NoticeRefused; a missing user is reported.

    `reason` is the review's (recorded with the intent); without one (a call from a shell) a
    rejection shows the verification's current reason.
    """
    if verification_status not in VERIFICATION_STATUSES:
        raise NoticeRefused(
            f"Unknown verification_status {verification_status!r}; one of {', '.join(VERIFICATION_STATUSES)}."
        )
    summary: dict[str, Any] = {"user_id": user_id, "verification_status": verification_status}
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        logger.warning("verification notice %s: user %s does not exist", verification_status, user_id)
        return {**summary, "outcome": "not_found", "notifications": []}
    verification = SellerVerification.objects.filter(user=user).first()
    context = {
        "recipient_name": name_of(user),
        "verification_status": verification_status,
        "reason": reason if reason is not None else (verification.reason if verification is not None else ""),
        "document_count": len(verification.documents) if verification is not None else 0,
    }
    rows = notify(
        template=f"escrow_verification_{verification_status.lower()}",
        user=user,
        context=context,
        channels=[Channel.EMAIL],
        dedupe_key=f"escrow-verification-notice:{delivery_key}",
    )
    return summary_of(rows, **summary, outcome="notified")
