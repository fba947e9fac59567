"""Reads: querysets and lookups, no writes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from django.db.models import Count, Q, QuerySet

from payments.models import ExchangeRate, Order

ECB_BASE = "EUR"


class ExchangeRateNotFound(LookupError):
    pass


def order_get(*, order_id: uuid.UUID | str) -> Order | None:
    try:
        pk = uuid.UUID(str(order_id))
    except ValueError:
        return None
    return Order.objects.filter(pk=pk).first()


def orders_expired_count(*, cutoff: datetime) -> int:
    """How many unpaid orders were created before `cutoff` (the sweep's progress total)."""
    return Order.objects.filter(status=Order.Status.PENDING_PAYMENT, created_at__lt=cutoff).count()


def orders_expired_page(
    *, cutoff: datetime, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[tuple[datetime, uuid.UUID]]:
    """The next `limit` unpaid orders created before `cutoff`, as (created_at, id), oldest first.

    Keyset pagination over the partial index `order_pending_by_age`: each page starts
    where the last one ended, so rows another worker holds (and skips) are never
    revisited, and `created_at >= last` bounds the index scan instead of walking the
    entries of orders already cancelled.
    """
    qs = Order.objects.filter(status=Order.Status.PENDING_PAYMENT, created_at__lt=cutoff)
    if after is not None:
        last_created, last_id = after
        qs = qs.filter(created_at__gte=last_created).filter(
            Q(created_at__gt=last_created) | Q(created_at=last_created, id__gt=last_id)
        )
    return list(qs.order_by("created_at", "id").values_list("created_at", "id")[:limit])


def orders_in_key_range(
    *, after: tuple[datetime, uuid.UUID] | None, last: tuple[datetime, uuid.UUID]
) -> QuerySet[Order]:
    """Orders whose (created_at, id) lies in (after, last]: one page of the sweep, as a filter rather than a list of ids."""
    last_created, last_id = last
    qs = Order.objects.filter(created_at__lte=last_created).filter(
        Q(created_at__lt=last_created) | Q(created_at=last_created, id__lte=last_id)
    )
    if after is not None:
        after_created, after_id = after
        qs = qs.filter(created_at__gte=after_created).filter(
            Q(created_at__gt=after_created) | Q(created_at=after_created, id__gt=after_id)
        )
    return qs


def _newest_rate(base: str, quote: str, on: date) -> ExchangeRate | None:
    return ExchangeRate.objects.filter(base=base, quote=quote, as_of__lte=on).order_by("-as_of").first()


def _cross_legs(base: str, quote: str, on: date) -> tuple[Decimal, Decimal] | None:
    """(EUR->base, EUR->quote) from the newest day on or before `on` that has both, so a cross never mixes days."""
    day = (
        ExchangeRate.objects.filter(base=ECB_BASE, quote__in=[base, quote], as_of__lte=on)
        .values("as_of")
        .annotate(legs=Count("quote", distinct=True))
        .filter(legs=2)
        .order_by("-as_of")
        .values_list("as_of", flat=True)
        .first()
    )
    if day is None:
        return None
    rates = dict(
        ExchangeRate.objects.filter(base=ECB_BASE, quote__in=[base, quote], as_of=day).values_list("quote", "rate")
    )
    return rates[base], rates[quote]


def exchange_rate_get(*, base: str, quote: str, on: date) -> Decimal:
    """How many `quote` one `base` buys, from the newest rates published on or before `on`.

    Uses a direct rate, else the inverse of the opposite rate, else a cross through
    EUR (the ECB quotes every currency against EUR only) with both legs from the same day.
    """
    base, quote = base.upper(), quote.upper()
    if base == quote:
        return Decimal(1)
    direct = _newest_rate(base, quote, on)
    if direct is not None:
        return direct.rate
    inverse = _newest_rate(quote, base, on)
    if inverse is not None:
        return Decimal(1) / inverse.rate
    if ECB_BASE not in (base, quote):
        legs = _cross_legs(base, quote, on)
        if legs is not None:
            eur_to_base, eur_to_quote = legs
            return eur_to_quote / eur_to_base
        raise ExchangeRateNotFound(
            f"No {base}->{quote} rate on or before {on.isoformat()}: no day has both {ECB_BASE}->{base} "
            f"and {ECB_BASE}->{quote}."
        )
    raise ExchangeRateNotFound(f"No {base}->{quote} rate on or before {on.isoformat()}.")


def money_convert(
    *, amount: Decimal, from_currency: str, to_currency: str, on: date, places: Decimal = Decimal("0.01")
) -> Decimal:
    """`amount` in `from_currency` expressed in `to_currency`, rounded half-even to `places`."""
    rate = exchange_rate_get(base=from_currency, quote=to_currency, on=on)
    return (amount * rate).quantize(places, rounding=ROUND_HALF_EVEN)
