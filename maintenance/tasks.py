from __future__ import annotations

from celery import shared_task


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
