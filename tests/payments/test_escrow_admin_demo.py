"""Escrow in the admin (every model, the verification review actions) and in the demo data."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.models import OutboxIntent, User
from core.scheduler import SchedulerService
from payments.demo_escrow import load_escrow_demo
from payments.models import EscrowFunding, EscrowTransaction, Milestone, MilestoneEvidence, SellerVerification
from tests.support.factories.escrow import make_escrow, make_parties, make_user, milestones_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: Any) -> Client:
    User.objects.create_superuser(username="root", password="pw-root-1", email="root@example.com")
    client = Client()
    client.login(username="root", password="pw-root-1")
    return client


def test_the_escrow_demo_loads_once_and_leaves_work_for_each_job() -> None:
    first = load_escrow_demo()
    second = load_escrow_demo()

    assert (first["escrow_transactions_created"], second["escrow_transactions_created"]) == (6, 0)
    assert second["escrow_transactions_total"] == 6
    for escrow in EscrowTransaction.objects.all():
        assert sum(m.amount for m in escrow.milestones.all()) == escrow.amount
    reminders = SchedulerService.trigger_manual_update("escrow_funding_reminders", sync=True).summary
    overdue = SchedulerService.trigger_manual_update("escrow_overdue_milestones", sync=True).summary
    summaries = SchedulerService.trigger_manual_update("escrow_daily_summary", sync=True).summary
    assert reminders is not None and reminders["notifications_written"] == 1  # unfunded for 10 days
    assert overdue is not None and overdue["notifications_written"] == 2  # funded 20 days ago, both pending
    assert summaries is not None and summaries["users"] == 2  # the demo buyer and seller


@pytest.mark.parametrize("model", [EscrowTransaction, Milestone, MilestoneEvidence, EscrowFunding, SellerVerification])
def test_every_escrow_model_has_a_working_admin_list_with_filters_and_a_detail_page(
    admin_client: Client, model: type
) -> None:
    parties = make_parties()
    escrow = make_escrow(
        parties.buyer, parties.seller, status="in_progress", milestone_statuses=("submitted", "pending")
    )
    milestone = milestones_of(escrow)[0]
    MilestoneEvidence.objects.create(
        milestone=milestone, uploaded_by=parties.seller, file="escrow/evidence/x", original_name="a.pdf"
    )
    EscrowFunding.objects.create(
        transaction=escrow, idempotency_key="k1", amount=escrow.amount, currency="EUR", gateway="stub"
    )
    SellerVerification.objects.create(user=parties.seller)
    url = f"/admin/payments/{model._meta.model_name}/"

    listing = admin_client.get(url)
    searched = admin_client.get(url, {"q": "seller"})
    detail = admin_client.get(f"{url}{model.objects.first().pk}/change/")

    assert (listing.status_code, searched.status_code, detail.status_code) == (200, 200, 200)
    assert b'id="changelist-filter"' in listing.content


def test_the_transaction_page_shows_its_milestones_inline(admin_client: Client) -> None:
    parties = make_parties()
    escrow = make_escrow(parties.buyer, parties.seller, amounts=("70.00", "30.00"))

    page = admin_client.get(f"/admin/payments/escrowtransaction/{escrow.pk}/change/").content.decode()

    assert "Part 1" in page and "Part 2" in page and "70.00" in page
    assert admin_client.get("/admin/payments/escrowtransaction/add/").status_code == 403


def test_the_review_actions_decide_pending_verifications_in_one_update_and_tell_each_seller(
    admin_client: Client,
) -> None:
    pending = [SellerVerification.objects.create(user=make_user()) for _ in range(3)]
    verified = SellerVerification.objects.create(user=make_user(), status="VERIFIED")
    url = "/admin/payments/sellerverification/"

    response = admin_client.post(
        url,
        {"action": "mark_verified", "_selected_action": [str(v.pk) for v in [*pending[:2], verified]]},
        follow=True,
    )
    rejected = admin_client.post(
        url, {"action": "mark_rejected", "_selected_action": [str(pending[2].pk)]}, follow=True
    )

    assert b"2 seller verifications are now VERIFIED. 1 was left unchanged (not pending)." in response.content
    assert b"1 seller verification is now REJECTED." in rejected.content
    assert list(SellerVerification.objects.order_by("pk").values_list("status", flat=True)) == [
        "VERIFIED",
        "VERIFIED",
        "REJECTED",
        "VERIFIED",
    ]
    assert SellerVerification.objects.get(pk=pending[2].pk).reason.startswith("Your documents could not be verified")
    notices = sorted(
        (i.kwargs["user_id"], i.kwargs["verification_status"])
        for i in OutboxIntent.objects.filter(task_name="payments.send_verification_notification")
    )
    assert notices == sorted(
        [(pending[0].user_id, "VERIFIED"), (pending[1].user_id, "VERIFIED"), (pending[2].user_id, "REJECTED")]
    )


def test_make_runs_demo_loader_includes_the_escrow_demo() -> None:
    from payments.demo import load_demo_data

    assert load_demo_data()["escrow_transactions_created"] == 6
    assert load_demo_data()["escrow_transactions_created"] == 0
