"""Escrow milestones: the seller submits them with evidence; the buyer approves or rejects them and releases the money.

Like every escrow change: the transaction row is locked, the move is checked against the
state machine and applied with a conditional update, and the notification is recorded in
the outbox in the same transaction (see payments/services/escrow.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from core.services.outbox import Intent, outbox_add_many
from payments.models import EscrowTransaction, Milestone, MilestoneEvidence
from payments.models.escrow import evidence_name
from payments.services.escrow import (
    EVIDENCE_TASK,
    MAX_EVIDENCE_FILES,
    NOTICE_TASK,
    Caller,
    EscrowInvalid,
    EscrowNotFound,
    EscrowStateConflict,
    milestone_move,
    milestone_visible,
    notice_record,
    party_require,
    transaction_lock,
    transaction_move,
    user_id_of,
    working_require,
)

Status = EscrowTransaction.Status
MilestoneStatus = Milestone.Status


def milestone_submit(*, milestone_id: int, user: Caller, files: Sequence[UploadedFile[bytes]]) -> Milestone:
    """The seller submits a pending (or rejected) milestone with 1 to MAX_EVIDENCE_FILES evidence files.

    The files are stored first (storage is not transactional; they are deleted again if
    the change is refused), then, in one transaction: the milestone becomes submitted, a
    funded transaction becomes in progress, one evidence row per file is written pending
    with a `payments.process_milestone_evidence` intent each, and the buyer is told.
    """
    if not 1 <= len(files) <= MAX_EVIDENCE_FILES:
        raise EscrowInvalid({"evidence": [f"Upload 1 to {MAX_EVIDENCE_FILES} evidence files with the milestone."]})
    # Check before storing anything, so a stranger or a refused state writes no file.
    milestone = milestone_visible(milestone_id, user)
    _check_submittable(milestone, user)
    stored: list[tuple[str, str]] = []
    try:
        for upload in files:
            name = default_storage.save(evidence_name(milestone.pk), upload)
            stored.append((name, (upload.name or "")[:255]))
        with transaction.atomic():
            escrow = transaction_lock(milestone.transaction_id, user)
            milestone = Milestone.objects.select_for_update().get(pk=milestone_id)
            milestone.transaction = escrow
            _check_submittable(milestone, user)
            now = timezone.now()
            milestone_move(
                milestone,
                MilestoneStatus.SUBMITTED,
                action="submit",
                now=now,
                submitted_at=now,
                # The last rejection's reason stays (with rejected_at): its notice may still be on its way.
                submission_count=milestone.submission_count + 1,
            )
            if escrow.status == Status.FUNDED:
                transaction_move(escrow, Status.IN_PROGRESS, action="start", now=now)
            rows = MilestoneEvidence.objects.bulk_create(
                MilestoneEvidence(
                    milestone=milestone, uploaded_by_id=user_id_of(user), file=name, original_name=original
                )
                for name, original in stored
            )
            outbox_add_many(
                Intent(task=EVIDENCE_TASK, kwargs={"evidence_id": row.pk}, dedupe_key=f"escrow-evidence:{row.pk}")
                for row in rows
            )
            notice_record(
                escrow,
                "milestone_submitted",
                key=f":{milestone.pk}:{milestone.submission_count}",
                milestone_id=milestone.pk,
            )
    except BaseException:
        for name, _ in stored:
            default_storage.delete(name)
        raise
    return milestone


def _check_submittable(milestone: Milestone, user: Caller) -> None:
    party_require(milestone.transaction, user, "seller", "submit its milestones")
    working_require(milestone.transaction, "submitted")
    if not Milestone.can_move(milestone.status, MilestoneStatus.SUBMITTED):
        allowed = " or ".join(Milestone.sources_of(MilestoneStatus.SUBMITTED))
        raise EscrowStateConflict(
            f"Milestone {milestone.pk} is {milestone.status}; to submit it, it must be {allowed}."
        )


def milestone_approve(*, milestone_id: int, user: Caller) -> Milestone:
    """The buyer approves a submitted milestone; the seller is told. The money moves on release."""
    with transaction.atomic():
        milestone, escrow = _lock_milestone(milestone_id, user, action="approve", done="approved")
        now = timezone.now()
        milestone_move(milestone, MilestoneStatus.APPROVED, action="approve", now=now, approved_at=now)
        notice_record(escrow, "milestone_approved", key=f":{milestone.pk}", milestone_id=milestone.pk)
    return milestone


def milestone_reject(*, milestone_id: int, user: Caller, reason: str) -> Milestone:
    """The buyer rejects a submitted milestone with a reason; the seller is told and may submit again."""
    if not (reason or "").strip():
        raise EscrowInvalid({"reason": ["Tell the seller why the milestone is rejected."]})
    with transaction.atomic():
        milestone, escrow = _lock_milestone(milestone_id, user, action="reject", done="rejected")
        now = timezone.now()
        milestone_move(
            milestone,
            MilestoneStatus.REJECTED,
            action="reject",
            now=now,
            rejected_at=now,
            rejection_reason=reason.strip(),
        )
        notice_record(
            escrow,
            "milestone_rejected",
            key=f":{milestone.pk}:{milestone.submission_count}",
            milestone_id=milestone.pk,
        )
    return milestone


def _lock_milestone(milestone_id: int, user: Caller, *, action: str, done: str) -> tuple[Milestone, EscrowTransaction]:
    milestone = milestone_visible(milestone_id, user)
    escrow = transaction_lock(milestone.transaction_id, user)
    party_require(escrow, user, "buyer", f"{action} its milestones")
    working_require(escrow, done)
    milestone = Milestone.objects.select_for_update().get(pk=milestone_id)
    return milestone, escrow


def escrow_release(*, transaction_id: int, user: Caller, milestone_id: int | None = None) -> EscrowTransaction:
    """The buyer releases the money of approved milestones (all of them, or `milestone_id`).

    One update moves them approved → released; the seller is told per milestone. When no
    milestone is left unreleased the transaction completes and both parties are told.
    """
    with transaction.atomic():
        escrow = transaction_lock(transaction_id, user)
        party_require(escrow, user, "buyer", "release its money")
        if escrow.status not in EscrowTransaction.WORKING:
            raise EscrowStateConflict(
                f"Escrow transaction {escrow.pk} is {escrow.status}; money is released only while it is funded "
                "or in progress."
            )
        candidates = Milestone.objects.filter(transaction=escrow, status=MilestoneStatus.APPROVED)
        if milestone_id is not None:
            one = Milestone.objects.filter(transaction=escrow, pk=milestone_id).first()
            if one is None:
                raise EscrowNotFound(f"No milestone {milestone_id} in escrow transaction {escrow.pk}.")
            if one.status != MilestoneStatus.APPROVED:
                raise EscrowStateConflict(f"Milestone {one.pk} is {one.status}; to release it, it must be approved.")
            candidates = candidates.filter(pk=milestone_id)
        ids = list(candidates.select_for_update().order_by("position").values_list("pk", flat=True))
        if not ids:
            raise EscrowStateConflict(f"Escrow transaction {escrow.pk} has no approved milestone to release.")
        now = timezone.now()
        Milestone.objects.filter(pk__in=ids, status=MilestoneStatus.APPROVED).update(
            status=MilestoneStatus.RELEASED, released_at=now, updated_at=now
        )
        outbox_add_many(
            Intent(
                task=NOTICE_TASK,
                kwargs={"transaction_id": escrow.pk, "notification_type": "milestone_released", "milestone_id": pk},
                dedupe_key=f"escrow:{escrow.pk}:milestone_released:{pk}",
            )
            for pk in ids
        )
        if not Milestone.objects.filter(transaction=escrow).exclude(status=MilestoneStatus.RELEASED).exists():
            if escrow.status == Status.FUNDED:  # cannot happen: a release needs a submission first
                transaction_move(escrow, Status.IN_PROGRESS, action="start", now=now)
            transaction_move(escrow, Status.COMPLETED, action="complete", now=now, completed_at=now)
            notice_record(escrow, "completed")
    return escrow
