"""Escrow services: the state machines, who may do what, and the notification intent each change records."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.errors import Conflict, Invalid, NotFound, PermissionDenied
from core.models import OutboxIntent
from payments.models import EscrowFunding, EscrowTransaction, Milestone, MilestoneEvidence
from payments.services.escrow import (
    MilestoneSpec,
    escrow_cancel,
    escrow_create,
    escrow_dispute,
    escrow_get,
    escrow_visible_to,
)
from payments.services.escrow_funding import escrow_fund
from payments.services.escrow_milestones import escrow_release, milestone_approve, milestone_reject, milestone_submit
from tests.support.factories.escrow import Parties, make_escrow, make_parties, milestones_of, upload
from tests.support.outbox import intent_kwargs

pytestmark = pytest.mark.django_db

Status = EscrowTransaction.Status
M = Milestone.Status
NOTICE = "payments.send_transaction_notification"


@pytest.fixture
def parties(db: Any) -> Parties:
    return make_parties()


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


def stored_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()]


def notices() -> list[tuple[str, int | None]]:
    return [(k["notification_type"], k.get("milestone_id")) for k in intent_kwargs(NOTICE)]


def specs(*amounts: str) -> list[MilestoneSpec]:
    return [MilestoneSpec(title=f"Part {i}", amount=Decimal(a)) for i, a in enumerate(amounts, start=1)]


def create(parties: Parties, *amounts: str, total: str = "100.00") -> EscrowTransaction:
    return escrow_create(
        buyer=parties.buyer,
        seller_id=parties.seller.pk,
        title="Website",
        amount=Decimal(total),
        currency="EUR",
        milestones=specs(*amounts),
    )


def test_the_buyer_creates_a_transaction_split_into_milestones_and_the_seller_is_told(parties: Parties) -> None:
    escrow = create(parties, "60.00", "40.00")

    assert escrow.status == Status.CREATED and escrow.buyer_id == parties.buyer.pk
    assert [(m.position, m.amount, m.status) for m in milestones_of(escrow)] == [
        (1, Decimal("60.00"), M.PENDING),
        (2, Decimal("40.00"), M.PENDING),
    ]
    assert notices() == [("created", None)]
    assert OutboxIntent.objects.get(task_name=NOTICE).dedupe_key == f"escrow:{escrow.pk}:created"


@pytest.mark.parametrize(
    ("amounts", "total", "field"),
    [
        (("60.00", "30.00"), "100.00", "milestones"),
        (("60.00", "50.00"), "100.00", "milestones"),
        ((), "100.00", "milestones"),
        (("100.001",), "100.001", "amount"),
        (("0",), "0", "amount"),
    ],
)
def test_amounts_that_do_not_add_up_are_refused_and_nothing_is_written(
    parties: Parties, amounts: tuple[str, ...], total: str, field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        create(parties, *amounts, total=total)

    assert field in refused.value.errors
    assert EscrowTransaction.objects.count() == 0 and OutboxIntent.objects.count() == 0


def test_the_refusal_of_milestones_that_do_not_sum_says_both_amounts(parties: Parties) -> None:
    with pytest.raises(Invalid) as refused:
        create(parties, "60.00", "30.00")
    assert refused.value.errors["milestones"] == [
        "The milestone amounts sum to 90.00 EUR; the transaction is 100.00 EUR. They must be equal."
    ]


def test_a_buyer_cannot_open_a_transaction_with_themself_or_an_unknown_seller(parties: Parties) -> None:
    for seller_id in (parties.buyer.pk, 999_999):
        with pytest.raises(Invalid) as refused:
            escrow_create(
                buyer=parties.buyer,
                seller_id=seller_id,
                title="x",
                amount=Decimal("1"),
                currency="EUR",
                milestones=specs("1"),
            )
        assert "seller" in refused.value.errors


def test_the_whole_flow_moves_both_state_machines_and_records_one_notice_per_event(parties: Parties) -> None:
    # Given a created transaction of two milestones
    escrow = create(parties, "60.00", "40.00")
    first, second = milestones_of(escrow)
    # When it is funded, both milestones submitted, one rejected and submitted again, both approved and released
    escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="fund-1")
    milestone_submit(milestone_id=first.pk, user=parties.seller, files=[upload()])
    milestone_reject(milestone_id=first.pk, user=parties.buyer, reason="Blurry scans")
    milestone_submit(milestone_id=first.pk, user=parties.seller, files=[upload()])
    milestone_approve(milestone_id=first.pk, user=parties.buyer)
    escrow_release(transaction_id=escrow.pk, user=parties.buyer)
    mid = EscrowTransaction.objects.get(pk=escrow.pk)
    milestone_submit(milestone_id=second.pk, user=parties.seller, files=[upload(), upload(name="b.pdf")])
    milestone_approve(milestone_id=second.pk, user=parties.buyer)
    escrow_release(transaction_id=escrow.pk, user=parties.buyer)

    # Then the transaction went funded → in progress → completed, each milestone released
    escrow.refresh_from_db()
    assert mid.status == Status.IN_PROGRESS
    assert escrow.status == Status.COMPLETED and escrow.funded_at and escrow.completed_at
    assert [(m.status, m.submission_count) for m in milestones_of(escrow)] == [(M.RELEASED, 2), (M.RELEASED, 1)]
    assert MilestoneEvidence.objects.count() == 4
    # And each event recorded its notice once, the resubmission included
    assert notices() == [
        ("created", None),
        ("funded", None),
        ("milestone_submitted", first.pk),
        ("milestone_rejected", first.pk),
        ("milestone_submitted", first.pk),
        ("milestone_approved", first.pk),
        ("milestone_released", first.pk),
        ("milestone_submitted", second.pk),
        ("milestone_approved", second.pk),
        ("milestone_released", second.pk),
        ("completed", None),
    ]
    assert len(intent_kwargs("payments.process_milestone_evidence")) == 4


def test_funding_twice_with_the_same_key_charges_once_and_answers_the_same(parties: Parties) -> None:
    escrow = create(parties, "100.00")

    escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="key-1")
    again = escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="key-1")

    assert again.status == Status.FUNDED
    funding = EscrowFunding.objects.get()
    assert (funding.status, funding.amount, funding.needs_refund) == ("succeeded", Decimal("100.00"), False)
    assert funding.gateway_reference.startswith("stub_ch_")
    assert notices() == [("created", None), ("funded", None)]


def test_funding_a_funded_transaction_with_a_new_key_is_a_conflict(parties: Parties) -> None:
    escrow = create(parties, "100.00")
    escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="key-1")

    with pytest.raises(Conflict, match="is funded; to fund it, it must be created"):
        escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="key-2")
    assert EscrowFunding.objects.count() == 1


def test_a_funding_that_lands_after_a_cancellation_is_kept_for_refund_and_refused(
    parties: Parties, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the seller cancels while the buyer's charge is at the gateway
    escrow = create(parties, "100.00")

    def charge_while_cancelled(**kwargs: Any) -> str:
        escrow_cancel(transaction_id=escrow.pk, user=parties.seller)
        return "ch_late"

    monkeypatch.setattr("payments.services.escrow_funding.escrow_gateway_charge", charge_while_cancelled)
    # When the charge comes back
    with pytest.raises(Conflict, match="is cancelled"):
        escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="late")
    # Then the money is traceable and the transaction stays cancelled
    funding = EscrowFunding.objects.get()
    assert (funding.status, funding.needs_refund, funding.gateway_reference) == ("succeeded", True, "ch_late")
    assert EscrowTransaction.objects.get(pk=escrow.pk).status == Status.CANCELLED


@pytest.mark.parametrize(
    ("action", "status", "milestone_state", "reason"),
    [
        ("fund", Status.CANCELLED, M.PENDING, "is cancelled; to fund it, it must be created"),
        ("approve", Status.IN_PROGRESS, M.RELEASED, "is released; to approve it, it must be submitted"),
        ("approve", Status.IN_PROGRESS, M.PENDING, "is pending; to approve it, it must be submitted"),
        ("reject", Status.IN_PROGRESS, M.APPROVED, "is approved; to reject it, it must be submitted"),
        ("submit", Status.IN_PROGRESS, M.APPROVED, "is approved; to submit it, it must be pending or rejected"),
        ("submit", Status.CREATED, M.PENDING, "only while it is funded or in progress"),
        ("cancel", Status.FUNDED, M.PENDING, "is funded; to cancel it, it must be created"),
        ("dispute", Status.CREATED, M.PENDING, "is created; to dispute it, it must be funded or in_progress"),
        ("dispute", Status.COMPLETED, M.RELEASED, "is completed; to dispute it"),
        ("release", Status.IN_PROGRESS, M.SUBMITTED, "no approved milestone to release"),
        ("release", Status.DISPUTED, M.APPROVED, "money is released only while it is funded or in progress"),
    ],
)
def test_a_transition_the_state_machine_forbids_is_a_conflict_with_the_reason_and_changes_nothing(
    parties: Parties, media: Path, action: str, status: str, milestone_state: str, reason: str
) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, amounts=("100.00",), status=status, milestone_statuses=(milestone_state,)
    )
    milestone = milestones_of(escrow)[0]
    calls = {
        "fund": lambda: escrow_fund(transaction_id=escrow.pk, user=parties.buyer, idempotency_key="k"),
        "approve": lambda: milestone_approve(milestone_id=milestone.pk, user=parties.buyer),
        "reject": lambda: milestone_reject(milestone_id=milestone.pk, user=parties.buyer, reason="no"),
        "submit": lambda: milestone_submit(milestone_id=milestone.pk, user=parties.seller, files=[upload()]),
        "cancel": lambda: escrow_cancel(transaction_id=escrow.pk, user=parties.buyer),
        "dispute": lambda: escrow_dispute(transaction_id=escrow.pk, user=parties.buyer, reason="late"),
        "release": lambda: escrow_release(transaction_id=escrow.pk, user=parties.buyer),
    }

    with pytest.raises(Conflict) as refused:
        calls[action]()

    assert reason in refused.value.detail
    assert EscrowTransaction.objects.get(pk=escrow.pk).status == status
    assert Milestone.objects.get(pk=milestone.pk).status == milestone_state
    assert OutboxIntent.objects.count() == 0 and EscrowFunding.objects.count() == 0
    assert MilestoneEvidence.objects.count() == 0
    # A refused submission leaves no file behind in storage.
    assert stored_files(media) == []


def test_a_stranger_gets_not_found_for_everything_and_staff_see_but_cannot_act(parties: Parties) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, status=Status.IN_PROGRESS, milestone_statuses=(M.SUBMITTED, M.PENDING)
    )
    milestone = milestones_of(escrow)[0]

    for call in (
        lambda: escrow_get(transaction_id=escrow.pk, user=parties.stranger),
        lambda: escrow_fund(transaction_id=escrow.pk, user=parties.stranger, idempotency_key="k"),
        lambda: escrow_dispute(transaction_id=escrow.pk, user=parties.stranger, reason="x"),
        lambda: milestone_approve(milestone_id=milestone.pk, user=parties.stranger),
        lambda: milestone_submit(milestone_id=milestone.pk, user=parties.stranger, files=[upload()]),
    ):
        with pytest.raises(NotFound):
            call()
    assert escrow_get(transaction_id=escrow.pk, user=parties.staff).pk == escrow.pk
    with pytest.raises(PermissionDenied, match="Only the buyer"):
        milestone_approve(milestone_id=milestone.pk, user=parties.staff)
    with pytest.raises(PermissionDenied, match="Only the buyer"):
        milestone_approve(milestone_id=milestone.pk, user=parties.seller)
    assert list(escrow_visible_to(parties.stranger)) == []
    assert list(escrow_visible_to(parties.seller)) == [escrow]


def test_a_dispute_needs_a_reason_and_tells_both_who_opened_it(parties: Parties) -> None:
    escrow = make_escrow(parties.buyer, parties.seller, status=Status.FUNDED)
    with pytest.raises(Invalid):
        escrow_dispute(transaction_id=escrow.pk, user=parties.seller, reason="  ")

    escrow_dispute(transaction_id=escrow.pk, user=parties.seller, reason="The buyer keeps changing the brief")

    escrow.refresh_from_db()
    assert (escrow.status, escrow.disputed_by_id, escrow.dispute_reason) == (
        Status.DISPUTED,
        parties.seller.pk,
        "The buyer keeps changing the brief",
    )
    assert notices() == [("disputed", None)]


def test_releasing_one_milestone_leaves_the_transaction_in_progress(parties: Parties) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, status=Status.IN_PROGRESS, milestone_statuses=(M.APPROVED, M.APPROVED)
    )
    first = milestones_of(escrow)[0]

    escrow_release(transaction_id=escrow.pk, user=parties.buyer, milestone_id=first.pk)

    assert EscrowTransaction.objects.get(pk=escrow.pk).status == Status.IN_PROGRESS
    assert [m.status for m in milestones_of(escrow)] == [M.RELEASED, M.APPROVED]
    assert notices() == [("milestone_released", first.pk)]
    with pytest.raises(Conflict, match="to release it, it must be approved"):
        escrow_release(transaction_id=escrow.pk, user=parties.buyer, milestone_id=first.pk)


def test_submitting_needs_one_to_five_files(parties: Parties) -> None:
    escrow = make_escrow(parties.buyer, parties.seller, status=Status.FUNDED)
    milestone = milestones_of(escrow)[0]
    for files in ([], [upload()] * 6):
        with pytest.raises(Invalid) as refused:
            milestone_submit(milestone_id=milestone.pk, user=parties.seller, files=files)
        assert "evidence" in refused.value.errors


def test_files_stored_for_a_submission_refused_under_the_lock_are_deleted_again(
    parties: Parties, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the buyer disputes the transaction between the seller's checks and the locked change
    escrow = make_escrow(parties.buyer, parties.seller, status=Status.FUNDED)
    milestone = milestones_of(escrow)[0]
    from payments.services import escrow_milestones

    real_lock = escrow_milestones.transaction_lock

    def lock_after_a_dispute(transaction_id: int, user: Any) -> EscrowTransaction:
        EscrowTransaction.objects.filter(pk=transaction_id).update(status=Status.DISPUTED)
        return real_lock(transaction_id, user)

    monkeypatch.setattr(escrow_milestones, "transaction_lock", lock_after_a_dispute)
    # When the submission reaches the lock
    with pytest.raises(Conflict, match="is disputed"):
        milestone_submit(milestone_id=milestone.pk, user=parties.seller, files=[upload(), upload()])
    # Then nothing is recorded and the two files it had stored are gone
    assert stored_files(media) == [] and MilestoneEvidence.objects.count() == 0
    assert Milestone.objects.get(pk=milestone.pk).status == M.PENDING
