"""Escrow demo data for `make run` (called by payments/demo.py's `load_demo_data`).

A buyer and a verified seller, and transactions in a few states: one unfunded for 10 days
(`escrow_funding_reminders` reminds the buyer), one funded 20 days ago with a milestone
still pending (`escrow_overdue_milestones` tells the seller), one waiting on the buyer's
approval, one completed, one cancelled. Idempotent: a transaction is found by its title
and buyer, never created twice. Rows are written directly (back-dated), not through the
services, so loading the demo sends no messages.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from payments.models import EscrowTransaction, Milestone, SellerVerification

Status = EscrowTransaction.Status
M = Milestone.Status

# (title, age in days, status, funded days ago or None, [(milestone title, amount, status)])
TRANSACTIONS = [
    (
        "Demo: logo design",
        1,
        Status.CREATED,
        None,
        [("Sketches", "150.00", M.PENDING), ("Final logo", "250.00", M.PENDING)],
    ),
    (
        "Demo: website redesign",
        10,
        Status.CREATED,
        None,
        [("Design", "900.00", M.PENDING), ("Build", "1600.00", M.PENDING)],
    ),
    (
        "Demo: mobile app MVP",
        22,
        Status.IN_PROGRESS,
        20,
        [("Wireframes", "1200.00", M.PENDING), ("Beta build", "3800.00", M.PENDING)],
    ),
    (
        "Demo: product copywriting",
        6,
        Status.IN_PROGRESS,
        5,
        [("First 20 descriptions", "300.00", M.SUBMITTED), ("Remaining 30", "450.00", M.PENDING)],
    ),
    ("Demo: photo shoot", 30, Status.COMPLETED, 28, [("Shoot and edit", "600.00", M.RELEASED)]),
    ("Demo: translation", 3, Status.CANCELLED, None, [("Translate the catalogue", "200.00", M.PENDING)]),
]


def load_escrow_demo() -> dict[str, int]:
    user_model = get_user_model()
    now = timezone.now()
    created = 0
    with transaction.atomic():
        buyer, _ = user_model.objects.get_or_create(
            username="demo-buyer", defaults={"email": "demo-buyer@example.com", "first_name": "Bina"}
        )
        seller, _ = user_model.objects.get_or_create(
            username="demo-seller", defaults={"email": "demo-seller@example.com", "first_name": "Sami"}
        )
        SellerVerification.objects.get_or_create(
            user=seller,
            defaults={
                "status": SellerVerification.Status.VERIFIED,
                "documents": [{"kind": "business_registration", "reference": "DEMO-REG-001"}],
                "submitted_at": now - timedelta(days=40),
                "reviewed_at": now - timedelta(days=39),
            },
        )
        for title, age, status, funded_days, milestones in TRANSACTIONS:
            if EscrowTransaction.objects.filter(buyer=buyer, title=title).exists():
                continue
            created_at = now - timedelta(days=age)
            funded_at = now - timedelta(days=funded_days) if funded_days is not None else None
            escrow = EscrowTransaction.objects.create(
                buyer=buyer,
                seller=seller,
                title=title,
                amount=sum((Decimal(amount) for _, amount, _ in milestones), Decimal(0)),
                currency="EUR",
                status=status,
                created_at=created_at,
                funded_at=funded_at,
                completed_at=now - timedelta(days=1) if status == Status.COMPLETED else None,
                cancelled_at=now - timedelta(days=1) if status == Status.CANCELLED else None,
                cancelled_by=buyer if status == Status.CANCELLED else None,
            )
            done_at = now - timedelta(days=1)
            Milestone.objects.bulk_create(
                Milestone(
                    transaction=escrow,
                    title=name,
                    amount=Decimal(amount),
                    position=position,
                    status=milestone_status,
                    created_at=created_at,
                    due_date=(created_at + timedelta(days=14 * position)).date(),
                    submission_count=0 if milestone_status == M.PENDING else 1,
                    submitted_at=done_at if milestone_status != M.PENDING else None,
                    approved_at=done_at if milestone_status == M.RELEASED else None,
                    released_at=done_at if milestone_status == M.RELEASED else None,
                )
                for position, (name, amount, milestone_status) in enumerate(milestones, start=1)
            )
            created += 1
    return {
        "escrow_transactions_created": created,
        "escrow_transactions_total": EscrowTransaction.objects.filter(buyer__username="demo-buyer").count(),
    }
