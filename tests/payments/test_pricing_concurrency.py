"""Two recomputes at once on PostgreSQL: threads with their own connections, committing for real."""

from __future__ import annotations

from collections import Counter

import pytest

from payments.models import Discount
from payments.services.pricing import discounts_expire_stale, discounts_recompute
from tests.support.concurrency import run_together
from tests.support.factories.pricing import active_discounts, default_policy, seed_batches

pytestmark = pytest.mark.django_db(transaction=True)

BATCHES = 20_000


@pytest.mark.parametrize("engine", ["sql", "python"])
def test_two_recomputes_at_once_over_20000_batches_leave_one_discount_per_batch_as_one_run_would(
    engine: str,
) -> None:
    default_policy()
    in_window = seed_batches(count=BATCHES, products=200)

    first, second = run_together(
        lambda: discounts_recompute(chunk_size=1000, engine=engine),
        lambda: discounts_recompute(chunk_size=1000, engine=engine),
    )

    together = active_discounts()  # refuses two active discounts for one batch
    assert len(together) == in_window
    assert first["discounts_created"] + second["discounts_created"] == in_window
    assert first["chunks"] > 0 and second["chunks"] > 0, "both runs walked the window"
    assert max(Counter(Discount.objects.values_list("batch_id", flat=True)).values()) == 1, "a discount was rewritten"
    Discount.objects.all().delete()
    discounts_recompute(engine=engine)
    assert active_discounts() == together


def test_a_recompute_and_the_cleanup_at_once_end_each_stale_discount_once() -> None:
    default_policy()
    seed_batches(count=5000, products=50)
    discounts_recompute()
    # A third of the batches sell out: both jobs want to end those discounts.
    from payments.models import Batch

    sold_out = set(Batch.objects.filter(id__in=list(active_discounts())[::3]).values_list("id", flat=True))
    Batch.objects.filter(id__in=sold_out).update(quantity=0)

    recompute, cleanup = run_together(
        lambda: discounts_recompute(chunk_size=500), lambda: discounts_expire_stale(chunk_size=200)
    )

    assert recompute["discounts_removed"] + cleanup["expired_batch_gone"] == len(sold_out)
    assert not sold_out & set(active_discounts())
    assert Discount.objects.filter(status="expired").count() == len(sold_out)
