"""Milestone evidence processing: size limit, type from the bytes, SHA-256, accepted or rejected with the reason."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from payments.models import Milestone, MilestoneEvidence
from payments.services.escrow_evidence import content_type_sniff, evidence_process
from payments.tasks import process_milestone_evidence
from tests.support.factories.escrow import JPEG_BYTES, PDF_BYTES, PNG_BYTES, make_escrow, make_parties, milestones_of

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.ESCROW_EVIDENCE_MAX_BYTES = 1000


@pytest.fixture
def milestone(db: Any) -> Milestone:
    parties = make_parties()
    escrow = make_escrow(
        parties.buyer, parties.seller, status="in_progress", milestone_statuses=(Milestone.Status.SUBMITTED, "pending")
    )
    return milestones_of(escrow)[0]


def evidence(milestone: Milestone, content: bytes, name: str = "scan.pdf") -> MilestoneEvidence:
    stored = default_storage.save(f"escrow/evidence/{milestone.pk}/{len(content)}", ContentFile(content))
    return MilestoneEvidence.objects.create(
        milestone=milestone, uploaded_by=milestone.transaction.seller, file=stored, original_name=name
    )


@pytest.mark.parametrize(
    ("content", "name", "content_type"),
    [
        (PDF_BYTES, "contract.pdf", "application/pdf"),
        (PNG_BYTES, "notes.txt", "image/png"),
        (JPEG_BYTES, "x", "image/jpeg"),
    ],
)
def test_a_pdf_png_or_jpeg_is_accepted_by_its_bytes_whatever_its_name(
    milestone: Milestone, content: bytes, name: str, content_type: str
) -> None:
    row = evidence(milestone, content, name)

    summary = process_milestone_evidence.apply(kwargs={"evidence_id": row.pk}).get()

    row.refresh_from_db()
    assert (row.status, row.content_type, row.size, row.rejection_reason) == (
        "accepted",
        content_type,
        len(content),
        "",
    )
    assert row.sha256 == hashlib.sha256(content).hexdigest() == summary["sha256"]
    assert row.processed_at is not None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"MZ\x90\x00 this is an executable named scan.pdf", "Not a PDF, PNG or JPEG file (judged by its first bytes"),
        (b"", "Not a PDF, PNG or JPEG file"),
        (b"%PDF-" + b"0" * 1000, "The file is 1005 bytes; the limit is 1000 bytes."),
    ],
)
def test_a_refused_type_or_a_file_over_the_limit_is_rejected_with_the_reason(
    milestone: Milestone, content: bytes, reason: str
) -> None:
    row = evidence(milestone, content, "scan.pdf")

    summary = evidence_process(evidence_id=row.pk)

    row.refresh_from_db()
    assert (row.status, summary["outcome"]) == ("rejected", "rejected")
    assert row.rejection_reason.startswith(reason)


def test_a_file_missing_from_storage_is_rejected_and_a_second_run_changes_nothing(milestone: Milestone) -> None:
    row = evidence(milestone, PDF_BYTES)
    default_storage.delete(row.file.name)

    first = evidence_process(evidence_id=row.pk)
    second = evidence_process(evidence_id=row.pk)

    assert first["reason"] == "The uploaded file is missing from storage; upload it again."
    assert second == {"evidence_id": row.pk, "outcome": "already_processed", "status": "rejected"}
    assert evidence_process(evidence_id=999_999) == {"evidence_id": 999_999, "outcome": "not_found"}


def test_a_storage_error_is_retried_three_times_and_the_row_stays_pending(
    milestone: Milestone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an object store that keeps timing out
    row = evidence(milestone, PDF_BYTES)
    calls: list[str] = []

    def unreachable(self: Any, name: str) -> int:
        calls.append(name)
        raise TimeoutError("object store timed out")

    monkeypatch.setattr(type(default_storage._wrapped), "size", unreachable)
    # When the task runs (eagerly: its retries run inline, without their backoff)
    result = process_milestone_evidence.apply(kwargs={"evidence_id": row.pk})
    # Then it tried once and retried three times, and the row is left pending for a later run
    assert len(calls) == 4 and result.status == "FAILURE"
    assert MilestoneEvidence.objects.get(pk=row.pk).status == "pending"


def test_the_sniffer_knows_only_the_three_signatures() -> None:
    assert content_type_sniff(b"%PDF-1.4") == "application/pdf"
    assert content_type_sniff(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert content_type_sniff(b"\xff\xd8\xff\xdb") == "image/jpeg"
    assert content_type_sniff(b"GIF89a") is None
    assert content_type_sniff(b"%PD") is None
