"""Thin Celery shells over logistics.services: parse, call one service, return its summary."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

logger = logging.getLogger(__name__)


@shared_task(name="logistics.check_expired_driver_assignments")
def check_expired_driver_assignments(timeout_seconds: int | None = None) -> dict[str, int]:
    from logistics.services import stock_requests_expire_assignments

    return stock_requests_expire_assignments(timeout_seconds=timeout_seconds)


@shared_task(name="logistics.expire_assignment")
def expire_assignment(stock_request_id: int, offer_id: int) -> dict[str, int]:
    from logistics.services import assignment_offer_expire

    return assignment_offer_expire(stock_request_id=stock_request_id, offer_id=offer_id)


# A lost database connection is worth a retry; anything else is a bug to see in the results.
# The intent stays in the core outbox until published, and a repeat writes nothing twice.
@shared_task(
    name="logistics.notify_eic_assignment_expired",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def notify_eic_assignment_expired(stock_request_id: int, driver_id: int, offer_id: int) -> dict[str, int]:
    from logistics.services import eic_notify_assignment_expired

    return eic_notify_assignment_expired(stock_request_id=stock_request_id, driver_id=driver_id, offer_id=offer_id)


@shared_task(
    name="logistics.notify_eic_assignments_expired",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def notify_eic_assignments_expired(offer_ids: list[int]) -> dict[str, int]:
    """The sweep's notices: one message per chunk of expired offers."""
    from logistics.services import eic_notify_assignments_expired

    return eic_notify_assignments_expired(offer_ids=offer_ids)
