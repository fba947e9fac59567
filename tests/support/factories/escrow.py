"""Escrow test data: the four personas, transactions in any state, evidence files, thousands of rows set-based."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import count

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import User
from payments.models import EscrowTransaction, Milestone
from tests.support.personas import client_for

_seq = count(1)

PDF_BYTES = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 32
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32


def make_user(username: str | None = None, **fields: object) -> User:
    name = username or f"user{next(_seq)}"
    fields.setdefault("email", f"{name}@example.com")
    return User.objects.create_user(username=name, password="pw-escrow-1", **fields)


@dataclass
class Parties:
    """The personas of the escrow permission tests."""

    buyer: User
    seller: User
    stranger: User
    staff: User

    def client(self, who: str) -> APIClient:
        return client_for(getattr(self, who))


def make_parties() -> Parties:
    return Parties(
        buyer=make_user("buyer", first_name="Bina"),
        seller=make_user("seller", first_name="Sami"),
        stranger=make_user("stranger"),
        staff=make_user("escrow-staff", is_staff=True),
    )


def make_escrow(
    buyer: User,
    seller: User,
    *,
    amounts: tuple[str, ...] = ("60.00", "40.00"),
    status: str = EscrowTransaction.Status.CREATED,
    milestone_statuses: tuple[str, ...] | None = None,
    created_at: datetime | None = None,
    funded_at: datetime | None = None,
    currency: str = "EUR",
    title: str = "Website",
) -> EscrowTransaction:
    """A transaction straight in the given state (rows written directly, no notifications queued)."""
    now = timezone.now()
    if funded_at is None and status not in (EscrowTransaction.Status.CREATED, EscrowTransaction.Status.CANCELLED):
        funded_at = now
    escrow = EscrowTransaction.objects.create(
        buyer=buyer,
        seller=seller,
        title=title,
        amount=sum((Decimal(a) for a in amounts), Decimal(0)),
        currency=currency,
        status=status,
        created_at=created_at or now,
        funded_at=funded_at,
    )
    statuses = milestone_statuses or (Milestone.Status.PENDING,) * len(amounts)
    Milestone.objects.bulk_create(
        Milestone(
            transaction=escrow,
            title=f"Part {position}",
            amount=Decimal(amount),
            position=position,
            status=state,
            created_at=created_at or now,
            submission_count=0 if state == Milestone.Status.PENDING else 1,
        )
        for position, (amount, state) in enumerate(zip(amounts, statuses, strict=True), start=1)
    )
    return escrow


def milestones_of(escrow: EscrowTransaction) -> list[Milestone]:
    return list(Milestone.objects.filter(transaction=escrow).order_by("position"))


def upload(
    content: bytes = PDF_BYTES, name: str = "evidence.pdf", content_type: str = "application/pdf"
) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def seed_unfunded(*, count: int, age_days: float, buyers: int | None = None) -> list[EscrowTransaction]:
    """`count` created (unfunded) transactions `age_days` old, one buyer each (or `buyers` of them), set-based."""
    seller = make_user(f"bulk-seller-{next(_seq)}")
    tag = next(_seq)
    people = User.objects.bulk_create(
        [
            User(username=f"bulk-buyer-{tag}-{i}", email=f"bulk-buyer-{tag}-{i}@example.com")
            for i in range(buyers or count)
        ],
        batch_size=2000,
    )
    created_at = timezone.now() - timedelta(days=age_days)
    rows = EscrowTransaction.objects.bulk_create(
        [
            EscrowTransaction(
                buyer=people[i % len(people)],
                seller=seller,
                title=f"Bulk {i}",
                amount=Decimal("10.00"),
                currency="EUR",
                created_at=created_at,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    Milestone.objects.bulk_create(
        [Milestone(transaction=t, title="All", amount=Decimal("10.00"), position=1) for t in rows], batch_size=2000
    )
    return rows
