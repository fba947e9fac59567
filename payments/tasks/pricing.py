"""Pricing tasks: thin shells over payments.services.pricing."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="payments.recompute_all_discounts")
def recompute_all_discounts(days_threshold: int | None = None) -> dict[str, Any]:
    """Recompute the discounts of batches expiring within `days_threshold` days (default 30, 1-365)."""
    from payments.services.pricing import discounts_recompute

    return discounts_recompute(days_threshold=days_threshold)


@shared_task(name="payments.update_price_history")
def update_price_history() -> dict[str, Any]:
    """Snapshot the effective price of every active batch for the current 6-hour slot (once per slot)."""
    from payments.services.pricing import price_history_snapshot

    return price_history_snapshot()
