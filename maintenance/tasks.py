from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="maintenance.cleanup_expired_discounts")
def cleanup_expired_discounts() -> dict[str, int]:
    """Mark discounts past their validity, or whose batch is gone, expired (chunked, idempotent)."""
    from payments.services.pricing import discounts_expire_stale

    return discounts_expire_stale()


@shared_task(name="maintenance.cleanup_expired_carts")
def cleanup_expired_carts(days_old: int | None = None) -> dict[str, Any]:
    """Delete carts not updated for `days_old` days (CART_EXPIRY_DAYS), with their items, in chunks."""
    from payments.services.carts import carts_delete_expired

    return carts_delete_expired(days_old=days_old)


@shared_task(name="maintenance.cleanup_expired_tokens")
def cleanup_expired_tokens() -> dict[str, int]:
    from core.tokens import tokens_cleanup_expired

    return tokens_cleanup_expired()


@shared_task(name="maintenance.cleanup_old_audit_logs")
def cleanup_old_audit_logs(older_than_days: int | None = None) -> dict[str, int]:
    from maintenance.services import audit_logs_delete_old

    return audit_logs_delete_old(older_than_days=older_than_days)


@shared_task(name="maintenance.cleanup_abandoned_sessions")
def cleanup_abandoned_sessions() -> dict[str, int]:
    from maintenance.services import sessions_delete_expired

    return sessions_delete_expired()
