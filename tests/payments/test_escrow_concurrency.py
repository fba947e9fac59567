"""Two escrow sweeps at once on PostgreSQL, each thread on its own connection: every message is written once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

import notifications.tasks  # noqa: F401  (registers notifications.deliver, which the sweeps record intents for)
from notifications.models import Notification
from payments.models import EscrowTransaction
from payments.services.escrow_sweeps import escrow_daily_summaries_send, escrow_funding_reminders_send
from tests.support.broker import BrokerProbe
from tests.support.factories.escrow import seed_unfunded
from tests.support.outbox import delivery_ids

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_broker(broker: BrokerProbe) -> None:
    """The runs publish their delivery messages after each commit; the broker fixture drops them afterwards."""


def at_once(fn: Callable[[], dict[str, Any]], runs: int = 2) -> list[dict[str, Any]]:
    """Start `runs` calls of `fn` together, each in its own thread (so its own database connection)."""
    barrier = threading.Barrier(runs)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == runs, "a run did not finish"
    return results


def test_two_funding_reminder_runs_at_once_over_5000_transactions_remind_each_buyer_once() -> None:
    # Given 5,000 transactions unfunded for 10 days, each with its own buyer
    escrows = seed_unfunded(count=5000, age_days=10)
    # When two runs start at the same moment, chunks of 500 so they interleave
    results = at_once(lambda: escrow_funding_reminders_send(chunk_size=500))
    # Then each buyer has exactly one reminder, with one delivery intent each
    rows = Notification.objects.filter(template_key="escrow_funding_reminder")
    per_buyer = Counter(rows.values_list("user_id", flat=True))
    assert len(per_buyer) == 5000 and set(per_buyer.values()) == {1}
    assert {group.split(":")[1] for group in rows.values_list("dedupe_group", flat=True)} == {
        str(e.pk) for e in escrows
    }
    assert len(delivery_ids()) == 5000
    # And the two runs shared the work: together they covered every transaction at least once
    assert sum(r["transactions"] for r in results) >= 5000
    assert EscrowTransaction.objects.filter(status="created").count() == 5000


def test_two_daily_summary_runs_at_once_write_one_summary_per_user() -> None:
    seed_unfunded(count=3000, age_days=1)

    at_once(lambda: escrow_daily_summaries_send(chunk_size=500))

    per_user = Counter(
        Notification.objects.filter(template_key="escrow_daily_summary").values_list("user_id", flat=True)
    )
    # 3,000 buyers and their one seller
    assert len(per_user) == 3001 and set(per_user.values()) == {1}
