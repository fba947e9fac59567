"""Milestone evidence: check an uploaded file (size, type sniffed from its bytes, SHA-256) and accept or reject it.

The file is read through Django's storage API (`MilestoneEvidence.file.storage`), so the
same code runs on the local MEDIA_ROOT and on an object store. The type comes from the
file's first bytes (magic numbers), never from its name or the client's Content-Type.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.utils import timezone

from payments.models import MilestoneEvidence

logger = logging.getLogger(__name__)

# Magic numbers of the accepted types: PDF "%PDF-", PNG's 8-byte signature, JPEG's SOI marker + a segment.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
HEAD_BYTES = 16
READ_CHUNK_BYTES = 1024 * 1024

Status = MilestoneEvidence.Status


def content_type_sniff(head: bytes) -> str | None:
    """The accepted content type whose signature `head` starts with, or None."""
    for signature, content_type in SIGNATURES:
        if head.startswith(signature):
            return content_type
    return None


def evidence_process(*, evidence_id: int) -> dict[str, Any]:
    """Check one pending evidence file and record the outcome once.

    Accepted: within ESCROW_EVIDENCE_MAX_BYTES and a PDF, PNG or JPEG by its bytes; the
    size, type and SHA-256 are recorded. Otherwise rejected with the reason. A file missing
    from storage is rejected; other storage errors (OSError) propagate, so the task retries.
    Idempotent: only a pending row is updated (a conditional update), a repeat reports the
    recorded outcome.
    """
    evidence = MilestoneEvidence.objects.filter(pk=evidence_id).first()
    if evidence is None:
        logger.warning("evidence %s does not exist; nothing to process", evidence_id)
        return {"evidence_id": evidence_id, "outcome": "not_found"}
    if evidence.status != Status.PENDING:
        return {"evidence_id": evidence_id, "outcome": "already_processed", "status": evidence.status}
    limit = int(settings.ESCROW_EVIDENCE_MAX_BYTES)
    storage, name = evidence.file.storage, evidence.file.name or ""
    fields: dict[str, Any] = {"size": None, "content_type": "", "sha256": "", "rejection_reason": ""}
    try:
        fields["size"] = size = storage.size(name)
        if size > limit:
            fields["rejection_reason"] = f"The file is {size} bytes; the limit is {limit} bytes."
        else:
            digest = hashlib.sha256()
            with storage.open(name, "rb") as handle:
                head = handle.read(HEAD_BYTES)
                digest.update(head)
                while chunk := handle.read(READ_CHUNK_BYTES):
                    digest.update(chunk)
            fields["sha256"] = digest.hexdigest()
            sniffed = content_type_sniff(head)
            if sniffed is None:
                fields["rejection_reason"] = "Not a PDF, PNG or JPEG file (judged by its first bytes, not its name)."
            else:
                fields["content_type"] = sniffed
    except FileNotFoundError:
        fields["rejection_reason"] = "The uploaded file is missing from storage; upload it again."
    status = Status.REJECTED if fields["rejection_reason"] else Status.ACCEPTED
    recorded = MilestoneEvidence.objects.filter(pk=evidence.pk, status=Status.PENDING).update(
        status=status, processed_at=timezone.now(), **fields
    )
    if not recorded:
        evidence.refresh_from_db(fields=["status"])
        return {"evidence_id": evidence_id, "outcome": "already_processed", "status": evidence.status}
    return {
        "evidence_id": evidence_id,
        "outcome": status,
        "reason": fields["rejection_reason"],
        "size": fields["size"],
        "content_type": fields["content_type"],
        "sha256": fields["sha256"],
    }
