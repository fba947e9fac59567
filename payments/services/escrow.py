"""Escrow transactions: the rules every escrow change follows, the reads, and create, cancel, dispute.

Funding is in escrow_funding.py, milestones (submit, approve, reject, release) in
escrow_milestones.py; both use the helpers here.

Every state change locks the transaction row (`SELECT ... FOR UPDATE`), moves the row
along the state machine of payments/models/escrow.py with a conditional update, and
records the notification it causes as an outbox intent in the same transaction
(`payments.send_transaction_notification`), so the message commits with the change and
a rolled-back change sends nothing.

Visibility: a transaction is shown to its buyer, its seller and staff. Anyone else gets
`EscrowNotFound` (404), never a hint that it exists. A party acting outside their role
(the seller approving) gets `PermissionDenied` (403); a forbidden transition (approve a
released milestone, fund a cancelled transaction) gets `EscrowStateConflict` (409) with
the reason, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from core.errors import Conflict, Invalid, NotFound, PermissionDenied
from core.models import User
from core.services.outbox import outbox_add
from payments.models import EscrowTransaction, Milestone, MilestoneEvidence
from payments.models.escrow import AMOUNT_DECIMAL_PLACES

Status = EscrowTransaction.Status
MilestoneStatus = Milestone.Status

MAX_MILESTONES = 50
MAX_EVIDENCE_FILES = 5
NOTICE_TASK = "payments.send_transaction_notification"
EVIDENCE_TASK = "payments.process_milestone_evidence"

Caller = User | AbstractBaseUser | AnonymousUser


class EscrowNotFound(NotFound):
    """No such transaction or milestone, or not the caller's to see."""


class EscrowStateConflict(Conflict):
    """The state machine does not allow the action now: the detail says why."""


class EscrowInvalid(Invalid):
    pass


# Reads -----------------------------------------------------------------------------------


def escrow_visible_to(user: Caller) -> QuerySet[EscrowTransaction]:
    """The transactions `user` may see: all for staff, else those where they are buyer or seller."""
    queryset = EscrowTransaction.objects.select_related("buyer", "seller")
    if not user.is_authenticated:
        return queryset.none()
    if getattr(user, "is_staff", False):
        return queryset
    return queryset.filter(Q(buyer_id=user.pk) | Q(seller_id=user.pk))


def escrow_get(*, transaction_id: int, user: Caller) -> EscrowTransaction:
    """One transaction with its milestones and their evidence, if `user` may see it; else EscrowNotFound."""
    found = (
        escrow_visible_to(user)
        .filter(pk=transaction_id)
        .prefetch_related(
            Prefetch(
                "milestones",
                queryset=Milestone.objects.order_by("position").prefetch_related(
                    Prefetch("evidence", queryset=MilestoneEvidence.objects.order_by("pk"))
                ),
            )
        )
        .first()
    )
    if found is None:
        raise EscrowNotFound(f"No escrow transaction {transaction_id}.")
    return found


def user_id_of(user: Caller) -> int:
    if user.pk is None:
        raise PermissionDenied("Sign in first.")
    return int(user.pk)


def is_party(escrow: EscrowTransaction, user: Caller) -> bool:
    return user.pk in (escrow.buyer_id, escrow.seller_id)


def can_see(escrow: EscrowTransaction, user: Caller) -> bool:
    return user.is_authenticated and (is_party(escrow, user) or bool(getattr(user, "is_staff", False)))


def party_require(escrow: EscrowTransaction, user: Caller, role: str, action: str) -> None:
    party_id = escrow.buyer_id if role == "buyer" else escrow.seller_id
    if user.pk != party_id:
        raise PermissionDenied(f"Only the {role} of escrow transaction {escrow.pk} can {action}.")


def transaction_lock(transaction_id: int, user: Caller) -> EscrowTransaction:
    """The transaction row, locked until the caller's transaction ends, if `user` may see it."""
    escrow = EscrowTransaction.objects.select_for_update().filter(pk=transaction_id).first()
    if escrow is None or not can_see(escrow, user):
        raise EscrowNotFound(f"No escrow transaction {transaction_id}.")
    return escrow


def milestone_visible(milestone_id: int, user: Caller) -> Milestone:
    milestone = Milestone.objects.filter(pk=milestone_id).select_related("transaction").first()
    if milestone is None or not can_see(milestone.transaction, user):
        raise EscrowNotFound(f"No milestone {milestone_id}.")
    return milestone


# State machine ------------------------------------------------------------------------------


def transaction_refusal(escrow: EscrowTransaction, action: str, target: str) -> EscrowStateConflict:
    allowed = " or ".join(EscrowTransaction.sources_of(target)) or "nothing"
    return EscrowStateConflict(
        f"Escrow transaction {escrow.pk} is {escrow.status}; to {action} it, it must be {allowed}."
    )


def transaction_move(escrow: EscrowTransaction, target: str, *, action: str, now: datetime, **fields: Any) -> None:
    """Move a locked transaction to `target`, or refuse; a conditional update guards it all the same."""
    if not EscrowTransaction.can_move(escrow.status, target):
        raise transaction_refusal(escrow, action, target)
    moved = EscrowTransaction.objects.filter(pk=escrow.pk, status=escrow.status).update(
        status=target, updated_at=now, **fields
    )
    if moved != 1:
        raise EscrowStateConflict(f"Escrow transaction {escrow.pk} changed meanwhile; try again.")
    escrow.status = target
    for name, value in fields.items():
        setattr(escrow, name, value)


def milestone_move(milestone: Milestone, target: str, *, action: str, now: datetime, **fields: Any) -> None:
    if not Milestone.can_move(milestone.status, target):
        allowed = " or ".join(Milestone.sources_of(target))
        raise EscrowStateConflict(
            f"Milestone {milestone.pk} is {milestone.status}; to {action} it, it must be {allowed}."
        )
    moved = Milestone.objects.filter(pk=milestone.pk, status=milestone.status).update(
        status=target, updated_at=now, **fields
    )
    if moved != 1:
        raise EscrowStateConflict(f"Milestone {milestone.pk} changed meanwhile; try again.")
    milestone.refresh_from_db()


def working_require(escrow: EscrowTransaction, action: str) -> None:
    if escrow.status not in EscrowTransaction.WORKING:
        raise EscrowStateConflict(
            f"Escrow transaction {escrow.pk} is {escrow.status}; milestones can be {action} only while it is "
            "funded or in progress."
        )


def notice_record(escrow: EscrowTransaction, notification_type: str, *, key: str = "", **extra: Any) -> None:
    """Record the transaction's notification in the current transaction (published after commit)."""
    outbox_add(
        task=NOTICE_TASK,
        kwargs={"transaction_id": escrow.pk, "notification_type": notification_type, **extra},
        dedupe_key=f"escrow:{escrow.pk}:{notification_type}{key}",
    )


# Creating ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MilestoneSpec:
    title: str
    amount: Decimal
    due_date: date | None = None


def _amount(value: object, field: str) -> Decimal:
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise EscrowInvalid({field: [f"Not an amount: {value!r}."]}) from None
    if not amount.is_finite() or amount <= 0:
        raise EscrowInvalid({field: ["Must be more than 0."]})
    if amount != amount.quantize(Decimal(1).scaleb(-AMOUNT_DECIMAL_PLACES)):
        raise EscrowInvalid({field: [f"At most {AMOUNT_DECIMAL_PLACES} decimal places."]})
    return amount


def escrow_create(
    *,
    buyer: Caller,
    seller_id: int,
    title: str,
    amount: Decimal,
    currency: str,
    milestones: Sequence[MilestoneSpec],
    description: str = "",
) -> EscrowTransaction:
    """The buyer opens a transaction with a seller, its amount split into milestones that sum to it.

    Refuses (400, nothing written): an unknown seller or the buyer themself, no milestones
    or more than MAX_MILESTONES, amounts that are not positive, and milestone amounts that
    do not sum to the transaction's amount. The seller is told (`created`).
    """
    if not buyer.is_authenticated:
        raise PermissionDenied("Sign in to open an escrow transaction.")
    total = _amount(amount, "amount")
    currency = str(currency).upper()
    if len(currency) != 3 or not currency.isalpha() or not currency.isascii():
        raise EscrowInvalid({"currency": ["Use an ISO 4217 code such as EUR or USD."]})
    if not title.strip():
        raise EscrowInvalid({"title": ["Give the transaction a title."]})
    if not 1 <= len(milestones) <= MAX_MILESTONES:
        raise EscrowInvalid({"milestones": [f"Give 1 to {MAX_MILESTONES} milestones."]})
    amounts = [_amount(spec.amount, "milestones") for spec in milestones]
    if sum(amounts, Decimal(0)) != total:
        raise EscrowInvalid(
            {
                "milestones": [
                    f"The milestone amounts sum to {sum(amounts, Decimal(0))} {currency}; "
                    f"the transaction is {total} {currency}. They must be equal."
                ]
            }
        )
    if seller_id == buyer.pk:
        raise EscrowInvalid({"seller": ["You cannot open an escrow transaction with yourself."]})
    if not User.objects.filter(pk=seller_id, is_active=True).exists():
        raise EscrowInvalid({"seller": [f"No seller with id {seller_id}."]})
    with transaction.atomic():
        escrow = EscrowTransaction.objects.create(
            buyer_id=buyer.pk,
            seller_id=seller_id,
            title=title.strip(),
            description=description,
            amount=total,
            currency=currency,
        )
        Milestone.objects.bulk_create(
            Milestone(
                transaction=escrow,
                title=spec.title.strip() or f"Milestone {position}",
                amount=milestone_amount,
                position=position,
                due_date=spec.due_date,
            )
            for position, (spec, milestone_amount) in enumerate(zip(milestones, amounts, strict=True), start=1)
        )
        notice_record(escrow, "created")
    return escrow


# Cancelling and disputing ---------------------------------------------------------------------


def escrow_cancel(*, transaction_id: int, user: Caller) -> EscrowTransaction:
    """Either party cancels a transaction that is not funded yet; both are told (`cancelled`)."""
    with transaction.atomic():
        escrow = transaction_lock(transaction_id, user)
        if not is_party(escrow, user):
            raise PermissionDenied(f"Only the buyer or the seller of escrow transaction {escrow.pk} can cancel it.")
        now = timezone.now()
        transaction_move(escrow, Status.CANCELLED, action="cancel", now=now, cancelled_at=now, cancelled_by_id=user.pk)
        notice_record(escrow, "cancelled")
    return escrow


def escrow_dispute(*, transaction_id: int, user: Caller, reason: str) -> EscrowTransaction:
    """Either party disputes a funded or in-progress transaction; the money stays held; both are told."""
    if not (reason or "").strip():
        raise EscrowInvalid({"reason": ["Say what the dispute is about."]})
    with transaction.atomic():
        escrow = transaction_lock(transaction_id, user)
        if not is_party(escrow, user):
            raise PermissionDenied(f"Only the buyer or the seller of escrow transaction {escrow.pk} can dispute it.")
        now = timezone.now()
        transaction_move(
            escrow,
            Status.DISPUTED,
            action="dispute",
            now=now,
            disputed_at=now,
            disputed_by_id=user.pk,
            dispute_reason=reason.strip(),
        )
        notice_record(escrow, "disputed")
    return escrow
