"""Seller verification: the seller submits documents, staff review them; each change tells the seller.

The notification is `payments.send_verification_notification(user_id, verification_status)`,
recorded as an outbox intent in the transaction that changes the status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, Invalid, NotFound, PermissionDenied
from core.services.outbox import Intent, outbox_add_many
from payments.models import SellerVerification
from payments.services.escrow import Caller

VerificationStatus = SellerVerification.Status

NOTICE_TASK = "payments.send_verification_notification"
DOCUMENT_KINDS = ("passport", "national_id", "driving_licence", "business_registration", "tax_id", "other")
MAX_DOCUMENTS = 10


class VerificationNotFound(NotFound):
    pass


class VerificationConflict(Conflict):
    pass


def _intent(verification_id: int, user_id: int, status: str, at: datetime, reason: str = "") -> Intent:
    # One notice per status change: the change's time tells a second rejection from the first.
    # The reason travels with it: by the time the notice is written the row may be reviewed again.
    return Intent(
        task=NOTICE_TASK,
        kwargs={"user_id": user_id, "verification_status": status, "reason": reason},
        dedupe_key=f"escrow-verification:{verification_id}:{status}:{at.timestamp():.6f}",
    )


def _documents(documents: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if not 1 <= len(documents) <= MAX_DOCUMENTS:
        raise Invalid({"documents": [f"Give 1 to {MAX_DOCUMENTS} documents."]})
    cleaned = []
    for document in documents:
        kind = str(document.get("kind", ""))
        reference = str(document.get("reference", "")).strip()
        if kind not in DOCUMENT_KINDS:
            raise Invalid({"documents": [f"Unknown document kind {kind!r}; one of {', '.join(DOCUMENT_KINDS)}."]})
        if not reference or len(reference) > 200:
            raise Invalid({"documents": ["Each document needs a reference of 1 to 200 characters."]})
        cleaned.append({"kind": kind, "reference": reference})
    return cleaned


def verification_get(*, user: Caller) -> SellerVerification:
    found = SellerVerification.objects.filter(user_id=user.pk).first() if user.is_authenticated else None
    if found is None:
        raise VerificationNotFound("You have not submitted a seller verification yet.")
    return found


def verification_submit(*, user: Caller, documents: Sequence[Mapping[str, Any]]) -> SellerVerification:
    """A seller asks to be verified (again, after a rejection); they are told it is PENDING.

    Refused (409) while a verification is pending review or once the seller is verified.
    """
    if not user.is_authenticated:
        raise PermissionDenied("Sign in to submit a seller verification.")
    cleaned = _documents(documents)
    with transaction.atomic():
        now = timezone.now()
        current = SellerVerification.objects.select_for_update().filter(user_id=user.pk).first()
        if current is None:
            current = SellerVerification.objects.create(user_id=user.pk, documents=cleaned, submitted_at=now)
        elif current.status == VerificationStatus.REJECTED:
            # Conditional, like every status change: only a rejected verification is submitted again.
            SellerVerification.objects.filter(pk=current.pk, status=VerificationStatus.REJECTED).update(
                status=VerificationStatus.PENDING,
                documents=cleaned,
                submitted_at=now,
                # The last rejection's reason stays until the next review: its notice may still be on its way.
                reviewer=None,
                reviewed_at=None,
                updated_at=now,
            )
            current.refresh_from_db()
        else:
            state = "waiting for review" if current.status == VerificationStatus.PENDING else "already verified"
            raise VerificationConflict(f"Your seller verification is {state}; nothing to submit.")
        outbox_add_many([_intent(current.pk, user.pk, VerificationStatus.PENDING, now)])
    return current


def verifications_review(
    *, verification_ids: Sequence[int], reviewer_id: int, status: str, reason: str = ""
) -> dict[str, int]:
    """Staff decide pending verifications: one UPDATE for all of them, one notice per seller.

    Only PENDING rows change (a conditional update); the others are counted as unchanged.
    A rejection needs a reason, which the seller is shown.
    """
    if status not in (VerificationStatus.VERIFIED, VerificationStatus.REJECTED):
        raise Invalid({"status": [f"Decide VERIFIED or REJECTED, not {status!r}."]})
    reason = (reason or "").strip()
    if status == VerificationStatus.REJECTED and not reason:
        raise Invalid({"reason": ["Tell the seller why the verification is rejected."]})
    given = list(dict.fromkeys(verification_ids))
    with transaction.atomic():
        now = timezone.now()
        pending = list(
            SellerVerification.objects.filter(pk__in=given, status=VerificationStatus.PENDING)
            .select_for_update()
            .order_by("pk")
            .values_list("pk", "user_id")
        )
        reviewed = SellerVerification.objects.filter(
            pk__in=[pk for pk, _ in pending], status=VerificationStatus.PENDING
        ).update(status=status, reviewer_id=reviewer_id, reason=reason, reviewed_at=now, updated_at=now)
        outbox_add_many(_intent(pk, user_id, status, now, reason) for pk, user_id in pending)
    return {"reviewed": reviewed, "unchanged": len(given) - reviewed}


def verification_review(*, verification_id: int, reviewer_id: int, status: str, reason: str = "") -> SellerVerification:
    """One verification decided by staff (the API); 409 when it is not pending."""
    current = SellerVerification.objects.filter(pk=verification_id).first()
    if current is None:
        raise VerificationNotFound(f"No seller verification {verification_id}.")
    if current.status != VerificationStatus.PENDING:
        raise VerificationConflict(
            f"Seller verification {verification_id} is {current.status}; only a PENDING one can be reviewed."
        )
    outcome = verifications_review(
        verification_ids=[verification_id], reviewer_id=reviewer_id, status=status, reason=reason
    )
    if outcome["reviewed"] != 1:
        raise VerificationConflict(f"Seller verification {verification_id} was reviewed meanwhile.")
    current.refresh_from_db()
    return current
