"""Escrow funding: the buyer pays a created transaction through the gateway, once per idempotency key."""

from __future__ import annotations

import hashlib
import logging
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from payments.models import EscrowFunding, EscrowTransaction
from payments.services.escrow import (
    Caller,
    EscrowInvalid,
    EscrowStateConflict,
    notice_record,
    party_require,
    transaction_lock,
    transaction_move,
    transaction_refusal,
)

logger = logging.getLogger(__name__)

Status = EscrowTransaction.Status

GATEWAY_NAME = "stub"


def escrow_gateway_charge(*, idempotency_key: str, amount: Decimal, currency: str, payer_id: int) -> str:
    """The payment gateway's charge call: a documented stub (docs/escrow.md, "Funding").

    It stands where a real gateway's "create charge" request goes, with the contract such
    APIs share: the idempotency key goes with the request, so a retried request with the
    same key is the same charge, and the answer is the gateway's reference. This stub
    takes no money; it answers a reference derived from the key, so the same key always
    gets the same reference. A real gateway is called here, outside any database
    transaction and with a timeout, and its refusals are recorded on the funding row.
    """
    digest = hashlib.sha256(f"{idempotency_key}|{amount}|{currency}|{payer_id}".encode()).hexdigest()
    return f"{GATEWAY_NAME}_ch_{digest[:24]}"


def escrow_fund(*, transaction_id: int, user: Caller, idempotency_key: str) -> EscrowTransaction:
    """The buyer funds a created transaction through the gateway, once per idempotency key.

    1. In a short transaction: lock, check, record the attempt (`EscrowFunding` initiated).
    2. Outside any transaction: the gateway charge, with the key.
    3. In a short transaction: the attempt succeeded; the transaction moves created → funded
       and the seller is told (`funded`).

    A repeat with the same key returns the funded transaction without charging again; a
    repeat after a crash between 2 and 3 calls the gateway again with the same key (the
    same charge) and completes. A charge that lands when the transaction is no longer
    awaiting funding (cancelled meanwhile) is kept with `needs_refund` and refused (409).
    """
    key = (idempotency_key or "").strip()
    if not 1 <= len(key) <= 255:
        raise EscrowInvalid({"idempotency_key": ["Send an Idempotency-Key header of 1 to 255 characters."]})
    with transaction.atomic():
        escrow = transaction_lock(transaction_id, user)
        party_require(escrow, user, "buyer", "fund it")
        funding = EscrowFunding.objects.filter(idempotency_key=key).first()
        if funding is not None and funding.transaction_id != escrow.pk:
            raise EscrowStateConflict("This Idempotency-Key was already used for another transaction; use a new one.")
        if funding is not None and funding.status == EscrowFunding.Status.SUCCEEDED:
            return escrow
        if funding is not None and funding.status == EscrowFunding.Status.FAILED:
            raise EscrowStateConflict(
                f"The funding with this Idempotency-Key failed ({funding.error or 'no reason given'}); "
                "use a new key to try again."
            )
        if funding is None:
            if escrow.status != Status.CREATED:
                raise transaction_refusal(escrow, "fund", Status.FUNDED)
            other = EscrowFunding.objects.filter(transaction=escrow, status=EscrowFunding.Status.INITIATED).first()
            if other is not None:
                raise EscrowStateConflict(
                    f"A funding of escrow transaction {escrow.pk} is already in progress "
                    f"(key {other.idempotency_key!r}); repeat that request or wait for it."
                )
            funding = EscrowFunding.objects.create(
                transaction=escrow,
                idempotency_key=key,
                amount=escrow.amount,
                currency=escrow.currency,
                gateway=GATEWAY_NAME,
            )
    reference = escrow_gateway_charge(
        idempotency_key=key, amount=funding.amount, currency=funding.currency, payer_id=escrow.buyer_id
    )
    with transaction.atomic():
        escrow = transaction_lock(transaction_id, user)
        now = timezone.now()
        landed = escrow.status == Status.CREATED
        EscrowFunding.objects.filter(pk=funding.pk, status=EscrowFunding.Status.INITIATED).update(
            status=EscrowFunding.Status.SUCCEEDED,
            gateway_reference=reference,
            completed_at=now,
            needs_refund=not landed,
        )
        if landed:
            transaction_move(escrow, Status.FUNDED, action="fund", now=now, funded_at=now)
            notice_record(escrow, "funded")
            return escrow
        refusal = transaction_refusal(escrow, "fund", Status.FUNDED)
    logger.warning("escrow %s: charge %s landed on a %s transaction; needs refund", escrow.pk, reference, escrow.status)
    raise refusal
