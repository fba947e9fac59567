"""Writes for driver assignment: offers and the driver's answer (offers.py), and expiry (expiry.py).

Every deadline is on the database's clock (`Now()`), so the web, worker and beat hosts
never disagree about whether an offer is still open. Errors are core.errors' vocabulary.
"""

from __future__ import annotations

from logistics.services.expiry import (
    EXPIRY_CHUNK_SIZE,
    MAX_CHUNKS_PER_RUN,
    assignment_offer_expire,
    eic_notify_assignment_expired,
    eic_notify_assignments_expired,
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
    "assignment_offer_expire",
    "assignment_timeout_seconds",
    "eic_notify_assignment_expired",
    "eic_notify_assignments_expired",
    "offer_accept",
    "offer_reject",
    "stock_request_cancel",
    "stock_request_offer",
    "stock_requests_expire_assignments",
]
