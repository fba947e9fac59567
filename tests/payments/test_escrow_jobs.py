"""The three escrow jobs: their beat entries, what each sends, and that a second run the same day (week) sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django_celery_beat.models import PeriodicTask

from core.catalog import InvalidJobParams
from core.models import JobRun
from core.scheduler import SchedulerService
from notifications.models import Notification
from payments.models import EscrowTransaction, Milestone
from tests.support.factories.escrow import Parties, make_escrow, make_parties, make_user, milestones_of

pytestmark = pytest.mark.django_db

# A Monday, at the daily summary's hour.
MONDAY = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
M = Milestone.Status


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(MONDAY, tick=False) as traveller:
        yield traveller


@pytest.fixture
def parties(clock: time_machine.Coordinates, db: Any) -> Parties:
    return make_parties()


def run(key: str, **params: Any) -> dict[str, Any]:
    job_run = SchedulerService.trigger_manual_update(key, params or None, sync=True, source="cli")
    assert job_run.status == JobRun.Status.SUCCEEDED, job_run.error
    assert job_run.summary is not None
    return job_run.summary


def sent(template: str) -> list[tuple[str, str]]:
    """(recipient email, dedupe group) of the rows of `template`, oldest first."""
    return list(
        Notification.objects.filter(template_key=template).order_by("pk").values_list("to_address", "dedupe_group")
    )


def test_setup_creates_the_three_beat_entries_at_the_guides_times(db: Any) -> None:
    SchedulerService.setup_default_tasks()

    entries = {
        t.name: (t.task, t.crontab.minute, t.crontab.hour, t.crontab.day_of_week, str(t.crontab.timezone), t.enabled)
        for t in PeriodicTask.objects.filter(name__startswith="escrow_").select_related("crontab")
    }
    assert entries == {
        "escrow_daily_summary": ("payments.send_daily_transaction_summary", "0", "8", "*", "UTC", True),
        "escrow_funding_reminders": ("payments.cleanup_old_pending_transactions", "0", "2", "*", "UTC", True),
        "escrow_overdue_milestones": ("payments.check_overdue_milestones", "0", "10", "1", "UTC", True),
    }
    status = SchedulerService.get_task_status("escrow_overdue_milestones")
    assert isinstance(status, dict) and status["schedule"] == "Mondays at 10:00 UTC" and status["queue"] == "payments"


def test_the_daily_summary_tells_each_party_once_a_day_with_counts_amounts_and_what_waits_on_them(
    parties: Parties, clock: time_machine.Coordinates
) -> None:
    # Given the buyer has a created, a funded and an in-progress transaction (one milestone to approve,
    # one to release), the seller delivers on the last two, and an idle user has only finished ones
    make_escrow(parties.buyer, parties.seller, amounts=("100.00",))
    make_escrow(parties.buyer, parties.seller, amounts=("50.00", "25.50"), status="funded")
    make_escrow(parties.buyer, parties.seller, status="in_progress", milestone_statuses=(M.SUBMITTED, M.APPROVED))
    idle = make_user("idle")
    make_escrow(idle, parties.seller, status="completed", milestone_statuses=(M.RELEASED, M.RELEASED))

    # When the job runs twice the same morning
    first, second = run("escrow_daily_summary"), run("escrow_daily_summary")
    # Then each party got one summary; the idle user none
    assert (first["users"], first["notifications_written"], second["notifications_written"]) == (2, 2, 0)
    assert sent("escrow_daily_summary") == [
        (parties.buyer.email, f"escrow-summary:{parties.buyer.pk}:2030-01-07"),
        (parties.seller.email, f"escrow-summary:{parties.seller.pk}:2030-01-07"),
    ]
    buyer_context = Notification.objects.get(user=parties.buyer).context
    assert buyer_context["lines"] == [
        {"role": "buyer", "status": "created", "count": 1, "amount": "100.00", "currency": "EUR"},
        {"role": "buyer", "status": "funded", "count": 1, "amount": "75.50", "currency": "EUR"},
        {"role": "buyer", "status": "in_progress", "count": 1, "amount": "100.00", "currency": "EUR"},
    ]
    assert (buyer_context["to_approve"], buyer_context["to_release"], buyer_context["to_deliver"]) == (1, 1, 0)
    seller_context = Notification.objects.get(user=parties.seller).context
    assert seller_context["to_deliver"] == 2 and {line["role"] for line in seller_context["lines"]} == {"seller"}

    # And the next day each gets the next one
    clock.shift(timedelta(days=1))
    assert run("escrow_daily_summary")["notifications_written"] == 2


def test_funding_reminders_go_to_buyers_of_old_unfunded_transactions_once_a_day(
    parties: Parties, clock: time_machine.Coordinates
) -> None:
    old = make_escrow(parties.buyer, parties.seller, created_at=MONDAY - timedelta(days=10))
    recent = make_escrow(parties.buyer, parties.seller, created_at=MONDAY - timedelta(days=3))
    make_escrow(parties.buyer, parties.seller, status="funded", created_at=MONDAY - timedelta(days=30))
    make_escrow(parties.buyer, parties.seller, status="cancelled", created_at=MONDAY - timedelta(days=30))

    first, second = run("escrow_funding_reminders"), run("escrow_funding_reminders")

    assert (first["transactions"], first["notifications_written"], second["notifications_written"]) == (1, 1, 0)
    assert first["older_than_days"] == 7
    assert sent("escrow_funding_reminder") == [(parties.buyer.email, f"escrow-funding-reminder:{old.pk}:2030-01-07")]
    context = Notification.objects.get().context
    assert (context["days_waiting"], context["created_on"], context["seller_name"]) == (10, "2029-12-28", "Sami")
    # A shorter threshold takes the recent one too; the old one was reminded today already
    assert run("escrow_funding_reminders", older_than_days=2)["notifications_written"] == 1
    clock.shift(timedelta(days=1))
    assert run("escrow_funding_reminders")["notifications_written"] == 1
    assert Notification.objects.filter(dedupe_group__startswith=f"escrow-funding-reminder:{recent.pk}:").count() == 1


def test_overdue_milestones_are_notified_to_sellers_once_a_week(
    parties: Parties, clock: time_machine.Coordinates
) -> None:
    late = make_escrow(
        parties.buyer,
        parties.seller,
        status="in_progress",
        funded_at=MONDAY - timedelta(days=20),
        milestone_statuses=(M.SUBMITTED, M.PENDING),
    )
    make_escrow(parties.buyer, parties.seller, status="funded", funded_at=MONDAY - timedelta(days=5))
    make_escrow(parties.buyer, parties.seller, status="disputed", funded_at=MONDAY - timedelta(days=40))
    pending = milestones_of(late)[1]

    first, again = run("escrow_overdue_milestones"), run("escrow_overdue_milestones")

    assert (first["milestones"], first["notifications_written"], again["notifications_written"]) == (1, 1, 0)
    assert sent("escrow_milestone_overdue") == [
        (parties.seller.email, f"escrow-milestone-overdue:{pending.pk}:2030-W02")
    ]
    assert Notification.objects.get().context["days_pending"] == 20
    clock.shift(timedelta(days=1))  # Tuesday, same ISO week
    assert run("escrow_overdue_milestones")["notifications_written"] == 0
    clock.shift(timedelta(days=6))  # the next Monday
    assert run("escrow_overdue_milestones")["notifications_written"] == 1
    assert run("escrow_overdue_milestones", older_than_days=1)["notifications_written"] == 2  # the 12-day one's two


@pytest.mark.parametrize("key", ["escrow_funding_reminders", "escrow_overdue_milestones"])
@pytest.mark.parametrize("bad", [0, 366, "x"])
def test_a_bad_threshold_is_refused_before_anything_runs(db: Any, key: str, bad: Any) -> None:
    with pytest.raises(InvalidJobParams) as refused:
        SchedulerService.trigger_manual_update(key, {"older_than_days": bad}, sync=True)
    assert "older_than_days" in refused.value.errors
    assert not JobRun.objects.exists()


def test_the_daily_summary_pages_through_users_in_chunks(parties: Parties) -> None:
    from payments.services.escrow_sweeps import escrow_daily_summaries_send

    for _ in range(5):
        make_escrow(make_user(), parties.seller)

    summary = escrow_daily_summaries_send(chunk_size=2)

    assert (summary["users"], summary["chunks"], summary["notifications_written"]) == (6, 3, 6)
    assert EscrowTransaction.objects.count() == 5
