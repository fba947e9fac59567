"""Writes for driver assignment: offers and the driver's answer (offers.py), and expiry (expiry.py).

Every deadline is on the database's clock (`Now()`), so the web, worker and beat hosts
never disagree about whether an offer is still open.
"""

from __future__ import annotations

from logistics.exceptions import Conflict, InvalidInput, LogisticsError, NotFound
from logistics.services.expiry import (
    EXPIRY_CHUNK_SIZE,
    MAX_CHUNKS_PER_RUN,
    NOTICE_GRACE_SECONDS,
    NOTICES_INLINE_MAX,
    assignment_expired_notices_send,
    assignment_expiries_resend,
    assignment_offer_expire,
    eic_notify_assignment_expired,
    stock_requests_expire_assignments,
)
from logistics.services.offers import (
    assignment_timeout_seconds,
    offer_accept,
    offer_reject,
    stock_request_cancel,
    stock_request_offer,
)

__all__ = [
    "EXPIRY_CHUNK_SIZE",
    "MAX_CHUNKS_PER_RUN",
    "NOTICES_INLINE_MAX",
    "NOTICE_GRACE_SECONDS",
    "Conflict",
    "InvalidInput",
    "LogisticsError",
    "NotFound",
    "assignment_expired_notices_send",
    "assignment_expiries_resend",
    "assignment_offer_expire",
    "assignment_timeout_seconds",
    "eic_notify_assignment_expired",
    "offer_accept",
    "offer_reject",
    "stock_request_cancel",
    "stock_request_offer",
    "stock_requests_expire_assignments",
]
