"""Thin Celery shells over logistics.services: parse, call one service, return its summary."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.db import OperationalError

logger = logging.getLogger(__name__)

QUEUE = "logistics"


@shared_task(name="logistics.check_expired_driver_assignments")
def check_expired_driver_assignments(timeout_seconds: int | None = None) -> dict[str, int]:
    from logistics.services import stock_requests_expire_assignments

    return stock_requests_expire_assignments(timeout_seconds=timeout_seconds)


@shared_task(name="logistics.expire_assignment")
def expire_assignment(stock_request_id: int, offer_id: int) -> dict[str, int]:
    from logistics.services import assignment_offer_expire

    return assignment_offer_expire(stock_request_id=stock_request_id, offer_id=offer_id)


@shared_task(name="logistics.send_assignment_expired_notices")
def send_assignment_expired_notices(offers: list[list[int]]) -> dict[str, int]:
    """Fan out one chunk of the sweep: a notify_eic_assignment_expired per [offer_id, stock_request_id, driver_id]."""
    from logistics.services import assignment_expired_notices_send

    return assignment_expired_notices_send(offers=offers)


# A lost database connection is worth a retry; anything else is a bug to see in the results.
# Whatever happens, an offer left unnotified is sent again by the sweep a minute later.
@shared_task(
    name="logistics.notify_eic_assignment_expired",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def notify_eic_assignment_expired(stock_request_id: int, driver_id: int, offer_id: int | None = None) -> dict[str, int]:
    from logistics.services import eic_notify_assignment_expired

    return eic_notify_assignment_expired(stock_request_id=stock_request_id, driver_id=driver_id, offer_id=offer_id)


@worker_ready.connect
def resend_expiries_on_worker_ready(sender: Any = None, **kwargs: Any) -> dict[str, int] | None:
    """A worker that consumes the logistics queue has started: re-send the open offers' one-shot checks.

    The eta messages a dead worker held come back only after the broker's visibility timeout.
    Celery logs (and does not raise) an error here, so a worker still starts without its database.
    """
    from logistics.services import assignment_expiries_resend

    app = getattr(sender, "app", None)
    if app is None or QUEUE not in app.amqp.queues.consume_from:
        return None
    summary = assignment_expiries_resend()
    logger.info("worker ready: re-sent the expiry checks of %d open offers", summary["resent"])
    return summary
