"""The escrow REST API with personas: buyer, seller, stranger, staff, anonymous."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from rest_framework.test import APIClient

from core.models import OutboxIntent
from notifications.models import Notification
from notifications.tasks import deliver
from payments.models import EscrowTransaction, Milestone, MilestoneEvidence, SellerVerification
from payments.tasks import process_milestone_evidence, send_transaction_notification, send_verification_notification
from tests.support.factories.escrow import JPEG_BYTES, Parties, make_escrow, make_parties, milestones_of, upload

pytestmark = pytest.mark.django_db

BASE = "/api/v1/escrow"
M = Milestone.Status


@pytest.fixture
def parties(db: Any) -> Parties:
    return make_parties()


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


def run_intents() -> None:
    """What the worker does with the recorded intents: run each task once, then deliver the emails."""
    tasks = {
        "payments.send_transaction_notification": send_transaction_notification,
        "payments.send_verification_notification": send_verification_notification,
        "payments.process_milestone_evidence": process_milestone_evidence,
    }
    for intent in OutboxIntent.objects.filter(task_name__in=tasks, published_at__isnull=True).order_by("pk"):
        tasks[intent.task_name].apply(kwargs=intent.kwargs, task_id=str(intent.task_id)).get()
        OutboxIntent.objects.filter(pk=intent.pk).update(published_at=intent.created_at)
    for pk in Notification.objects.filter(status="pending").order_by("pk").values_list("pk", flat=True):
        deliver.apply(kwargs={"notification_id": pk})


def inbox() -> list[tuple[str, str]]:
    return [(m.to[0], m.subject) for m in mail.outbox]


def test_the_full_flow_through_http_with_every_party_told_at_each_step(parties: Parties, media: Path) -> None:
    buyer, seller = parties.client("buyer"), parties.client("seller")
    # The buyer opens a transaction of two milestones with the seller
    created = buyer.post(
        f"{BASE}/transactions/",
        {
            "seller": parties.seller.pk,
            "title": "Shop website",
            "amount": "1000.00",
            "currency": "EUR",
            "milestones": [
                {"title": "Design", "amount": "400.00", "due_date": "2030-01-31"},
                {"title": "Build", "amount": "600.00"},
            ],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    escrow_id = created.json()["id"]
    first, second = (m["id"] for m in created.json()["milestones"])
    # funds it (the header is the idempotency key; a retry answers the same)
    for _ in range(2):
        funded = buyer.post(f"{BASE}/transactions/{escrow_id}/fund/", HTTP_IDEMPOTENCY_KEY="order-77-funding")
        assert funded.status_code == 200 and funded.json()["status"] == "funded"
    # the seller submits the first milestone with a PDF, the buyer approves it and releases its money
    submitted = seller.post(
        f"{BASE}/milestones/{first}/submit/",
        {"evidence": [upload(), upload(JPEG_BYTES, "photo.jpg")]},
        format="multipart",
    )
    assert submitted.status_code == 200, submitted.json()
    assert submitted.json()["status"] == "in_progress"
    assert [e["status"] for e in submitted.json()["milestones"][0]["evidence"]] == ["pending", "pending"]
    run_intents()
    detail = buyer.get(f"{BASE}/transactions/{escrow_id}/").json()
    evidence = detail["milestones"][0]["evidence"]
    assert [(e["status"], e["content_type"], e["original_name"]) for e in evidence] == [
        ("accepted", "application/pdf", "evidence.pdf"),
        ("accepted", "image/jpeg", "photo.jpg"),
    ]
    assert all(len(e["sha256"]) == 64 for e in evidence)
    assert buyer.post(f"{BASE}/milestones/{first}/approve/").status_code == 200
    assert buyer.post(f"{BASE}/transactions/{escrow_id}/release/", {}, format="json").status_code == 200
    # then the second, rejected once before its approval
    seller.post(f"{BASE}/milestones/{second}/submit/", {"evidence": [upload()]}, format="multipart")
    rejected = buyer.post(f"{BASE}/milestones/{second}/reject/", {"reason": "Wrong colours"}, format="json")
    assert rejected.json()["milestones"][1]["rejection_reason"] == "Wrong colours"
    seller.post(f"{BASE}/milestones/{second}/submit/", {"evidence": [upload()]}, format="multipart")
    buyer.post(f"{BASE}/milestones/{second}/approve/")
    done = buyer.post(f"{BASE}/transactions/{escrow_id}/release/", {"milestone": second}, format="json")
    run_intents()

    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert [m["status"] for m in done.json()["milestones"]] == ["released", "released"]
    s, b = parties.seller.email, parties.buyer.email
    assert inbox() == [
        (s, f"New escrow transaction #{escrow_id}: Shop website"),
        (s, f"Escrow #{escrow_id} is funded"),
        (b, f"Milestone submitted on escrow #{escrow_id}: Design"),
        (s, f"Milestone approved on escrow #{escrow_id}: Design"),
        (s, f"400.00 EUR released on escrow #{escrow_id}"),
        (b, f"Milestone submitted on escrow #{escrow_id}: Build"),
        (s, f"Milestone rejected on escrow #{escrow_id}: Build"),
        (b, f"Milestone submitted on escrow #{escrow_id}: Build"),
        (s, f"Milestone approved on escrow #{escrow_id}: Build"),
        (s, f"600.00 EUR released on escrow #{escrow_id}"),
        (b, f"Escrow #{escrow_id} is completed"),
        (s, f"Escrow #{escrow_id} is completed"),
    ]
    assert "Wrong colours" in mail.outbox[6].body
    # The stored names never come from the client's file names
    stored = sorted(p.name for p in media.rglob("*") if p.is_file())
    assert len(stored) == 4 and not any(name.endswith((".pdf", ".jpg")) for name in stored)


def test_a_stranger_gets_404_for_every_endpoint_and_sees_nothing_in_the_list(parties: Parties) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, status="in_progress", milestone_statuses=(M.SUBMITTED, M.PENDING)
    )
    milestone = milestones_of(escrow)[0]
    stranger = parties.client("stranger")

    responses = [
        stranger.get(f"{BASE}/transactions/{escrow.pk}/"),
        stranger.post(f"{BASE}/transactions/{escrow.pk}/fund/", HTTP_IDEMPOTENCY_KEY="k"),
        stranger.post(f"{BASE}/transactions/{escrow.pk}/cancel/"),
        stranger.post(f"{BASE}/transactions/{escrow.pk}/dispute/", {"reason": "x"}, format="json"),
        stranger.post(f"{BASE}/transactions/{escrow.pk}/release/", {}, format="json"),
        stranger.post(f"{BASE}/milestones/{milestone.pk}/approve/"),
        stranger.post(f"{BASE}/milestones/{milestone.pk}/reject/", {"reason": "x"}, format="json"),
        stranger.post(f"{BASE}/milestones/{milestone.pk}/submit/", {"evidence": [upload()]}, format="multipart"),
    ]

    assert [r.status_code for r in responses] == [404] * 8
    assert responses[0].json() == {"detail": f"No escrow transaction {escrow.pk}.", "errors": {}}
    # Same answer as for an id that does not exist: nothing tells them apart
    assert stranger.get(f"{BASE}/transactions/999999/").json() == {
        "detail": "No escrow transaction 999999.",
        "errors": {},
    }
    assert stranger.get(f"{BASE}/transactions/").json()["results"] == []
    assert Milestone.objects.get(pk=milestone.pk).status == M.SUBMITTED
    assert MilestoneEvidence.objects.count() == 0 and OutboxIntent.objects.count() == 0


def test_parties_see_their_own_staff_see_all_and_anonymous_callers_get_401(
    parties: Parties, anon_client: APIClient
) -> None:
    mine = make_escrow(parties.buyer, parties.seller, title="Mine")
    other = make_escrow(parties.stranger, parties.seller, title="Other")

    def titles(who: str, query: str = "") -> list[str]:
        return [t["title"] for t in parties.client(who).get(f"{BASE}/transactions/{query}").json()["results"]]

    assert titles("buyer") == ["Mine"]
    assert titles("seller") == ["Other", "Mine"]
    assert titles("staff") == ["Other", "Mine"]
    assert titles("staff", "?status=funded") == []
    assert parties.client("staff").get(f"{BASE}/transactions/{other.pk}/").status_code == 200
    assert parties.client("buyer").get(f"{BASE}/transactions/?status=bogus").status_code == 400
    assert anon_client.get(f"{BASE}/transactions/").status_code == 401
    assert anon_client.post(f"{BASE}/transactions/{mine.pk}/cancel/").status_code == 401


def test_the_seller_cannot_act_as_the_buyer_nor_the_buyer_as_the_seller(parties: Parties) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, status="in_progress", milestone_statuses=(M.SUBMITTED, M.PENDING)
    )
    first, second = milestones_of(escrow)

    approve = parties.client("seller").post(f"{BASE}/milestones/{first.pk}/approve/")
    submit = parties.client("buyer").post(
        f"{BASE}/milestones/{second.pk}/submit/", {"evidence": [upload()]}, format="multipart"
    )
    fund = parties.client("staff").post(f"{BASE}/transactions/{escrow.pk}/fund/", HTTP_IDEMPOTENCY_KEY="k")

    assert (approve.status_code, submit.status_code, fund.status_code) == (403, 403, 403)
    assert approve.json()["detail"] == f"Only the buyer of escrow transaction {escrow.pk} can approve its milestones."


@pytest.mark.parametrize(
    ("path", "status", "milestone_state", "reason"),
    [
        ("transactions/{t}/fund/", "cancelled", M.PENDING, "is cancelled; to fund it, it must be created"),
        ("milestones/{m}/approve/", "in_progress", M.RELEASED, "is released; to approve it, it must be submitted"),
        ("transactions/{t}/cancel/", "in_progress", M.SUBMITTED, "is in_progress; to cancel it, it must be created"),
    ],
)
def test_a_forbidden_transition_is_409_with_the_reason(
    parties: Parties, path: str, status: str, milestone_state: str, reason: str
) -> None:
    escrow = make_escrow(
        parties.buyer, parties.seller, amounts=("10.00",), status=status, milestone_statuses=(milestone_state,)
    )
    url = f"{BASE}/" + path.format(t=escrow.pk, m=milestones_of(escrow)[0].pk)

    response = parties.client("buyer").post(url, HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 409
    assert reason in response.json()["detail"] and response.json()["errors"] == {}
    assert EscrowTransaction.objects.get(pk=escrow.pk).status == status


def test_bad_input_is_400_with_the_field_and_the_reason(parties: Parties) -> None:
    buyer = parties.client("buyer")
    body = {"seller": parties.seller.pk, "title": "x", "amount": "100.00", "currency": "EUR"}

    not_summing = buyer.post(
        f"{BASE}/transactions/", {**body, "milestones": [{"title": "a", "amount": "90.00"}]}, format="json"
    )
    no_milestones = buyer.post(f"{BASE}/transactions/", {**body, "milestones": []}, format="json")
    bad_currency = buyer.post(
        f"{BASE}/transactions/",
        {**body, "currency": "eu", "milestones": [{"title": "a", "amount": "100"}]},
        format="json",
    )
    escrow = make_escrow(parties.buyer, parties.seller)
    no_key = buyer.post(f"{BASE}/transactions/{escrow.pk}/fund/")
    no_reason = buyer.post(f"{BASE}/transactions/{escrow.pk}/dispute/", {}, format="json")

    assert not_summing.status_code == 400
    assert not_summing.json()["errors"] == {
        "milestones": ["The milestone amounts sum to 90.00 EUR; the transaction is 100.00 EUR. They must be equal."]
    }
    assert (no_milestones.status_code, list(no_milestones.json()["errors"])) == (400, ["milestones"])
    assert (bad_currency.status_code, list(bad_currency.json()["errors"])) == (400, ["currency"])
    assert (no_key.status_code, list(no_key.json()["errors"])) == (400, ["idempotency_key"])
    assert (no_reason.status_code, list(no_reason.json()["errors"])) == (400, ["reason"])
    assert EscrowTransaction.objects.count() == 1


def test_seller_verification_submit_review_and_notices(parties: Parties) -> None:
    seller, staff = parties.client("seller"), parties.client("staff")
    documents = {"documents": [{"kind": "passport", "reference": "X1234567"}]}

    assert seller.get(f"{BASE}/verification/").status_code == 404
    submitted = seller.post(f"{BASE}/verification/", documents, format="json")
    again = seller.post(f"{BASE}/verification/", documents, format="json")
    verification_id = submitted.json()["id"]
    not_staff = seller.post(f"{BASE}/verifications/{verification_id}/review/", {"status": "VERIFIED"}, format="json")
    no_reason = staff.post(f"{BASE}/verifications/{verification_id}/review/", {"status": "REJECTED"}, format="json")
    listed = staff.get(f"{BASE}/verifications/?status=PENDING").json()["results"]
    rejected = staff.post(
        f"{BASE}/verifications/{verification_id}/review/",
        {"status": "REJECTED", "reason": "Photo unreadable"},
        format="json",
    )
    twice = staff.post(f"{BASE}/verifications/{verification_id}/review/", {"status": "VERIFIED"}, format="json")
    resubmitted = seller.post(f"{BASE}/verification/", documents, format="json")
    verified = staff.post(f"{BASE}/verifications/{verification_id}/review/", {"status": "VERIFIED"}, format="json")
    run_intents()

    assert (submitted.status_code, submitted.json()["status"]) == (201, "PENDING")
    assert again.status_code == 409 and "waiting for review" in again.json()["detail"]
    assert (not_staff.status_code, no_reason.status_code) == (403, 400)
    assert [v["id"] for v in listed] == [verification_id]
    assert (rejected.status_code, rejected.json()["status"], rejected.json()["reason"]) == (
        200,
        "REJECTED",
        "Photo unreadable",
    )
    assert twice.status_code == 409
    assert (resubmitted.status_code, resubmitted.json()["status"]) == (201, "PENDING")
    assert (verified.json()["status"], verified.json()["reviewer"]) == ("VERIFIED", parties.staff.pk)
    assert SellerVerification.objects.get().status == "VERIFIED"
    assert inbox() == [
        (parties.seller.email, "We received your seller verification"),
        (parties.seller.email, "Your seller verification was not accepted"),
        (parties.seller.email, "We received your seller verification"),
        (parties.seller.email, "Your seller account is verified"),
    ]
    assert "Photo unreadable" in mail.outbox[1].body


def test_the_escrow_endpoints_are_in_the_openapi_schema(parties: Parties) -> None:
    schema = parties.client("staff").get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/escrow/transactions/", "/api/v1/escrow/milestones/{id}/submit/"} <= set(paths)
