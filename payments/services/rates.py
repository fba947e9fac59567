"""Daily reference exchange rates: fetch the ECB feed, parse it safely, store it idempotently."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import requests
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from django.conf import settings
from django.db import transaction

from payments.models import ExchangeRate
from payments.selectors import ECB_BASE

GESMES_NS = "http://www.gesmes.org/xml/2002-08-01"
ECB_NS = "http://www.ecb.int/vocabulary/2002-08-01/eurofxref"
SOURCE = "ecb"
# The daily feed is ~2 kB and the 90-day history ~100 kB: anything far larger is not the feed.
MAX_FEED_BYTES = 2 * 1024 * 1024
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_QUANTUM = Decimal("1e-10")
# ExchangeRate.rate is NUMERIC(20, 10): at most ten digits before the point.
_MAX_RATE = Decimal("1e10")
_READ_CHUNK = 64 * 1024


class ExchangeRateFeedError(Exception):
    """The feed answered something unusable (HTTP 4xx, not the ECB format): retrying will not help."""


class ExchangeRateFeedUnavailable(Exception):
    """The feed could not be reached or answered 5xx/429: worth retrying later."""


def exchange_rates_fetch(*, url: str | None = None) -> bytes:
    """The feed's body. Read as a stream and abandoned past MAX_FEED_BYTES, so a huge answer costs no memory."""
    url = url or settings.EXCHANGE_RATES_URL
    try:
        with requests.get(
            url,
            timeout=settings.EXCHANGE_RATES_TIMEOUT_SECONDS,
            headers={"Accept": "application/xml, text/xml"},
            stream=True,
        ) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise ExchangeRateFeedUnavailable(f"{url} answered HTTP {response.status_code}.")
            if response.status_code != 200:
                raise ExchangeRateFeedError(f"{url} answered HTTP {response.status_code}.")
            body = bytearray()
            for chunk in response.iter_content(chunk_size=_READ_CHUNK):
                body += chunk
                if len(body) > MAX_FEED_BYTES:
                    raise ExchangeRateFeedError(
                        f"{url} answered more than {MAX_FEED_BYTES} bytes, far more than a rates feed; stopped reading."
                    )
            return bytes(body)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise ExchangeRateFeedUnavailable(f"Could not reach {url}: {exc}") from exc


def exchange_rates_parse(content: bytes) -> dict[date, dict[str, Decimal]]:
    """{day: {currency: rate}} from an ECB eurofxref document (one day or a history)."""
    try:
        root: Element = fromstring(content)
    except (ParseError, DefusedXmlException) as exc:
        raise ExchangeRateFeedError(f"The feed is not a safe, well-formed XML document: {exc}") from exc
    if root.tag != f"{{{GESMES_NS}}}Envelope":
        raise ExchangeRateFeedError(f"The feed's root element is {root.tag!r}, not a gesmes:Envelope.")
    days: dict[date, dict[str, Decimal]] = {}
    for day_cube in root.iter(f"{{{ECB_NS}}}Cube"):
        when = day_cube.get("time")
        if when is None:
            continue
        try:
            day = date.fromisoformat(when)
        except ValueError as exc:
            raise ExchangeRateFeedError(f"Bad date {when!r} in the feed.") from exc
        rates: dict[str, Decimal] = {}
        for cube in day_cube.findall(f"{{{ECB_NS}}}Cube"):
            currency, raw = cube.get("currency", ""), cube.get("rate", "")
            if not _CURRENCY.match(currency):
                raise ExchangeRateFeedError(f"Bad currency code {currency!r} on {day}.")
            try:
                rate = Decimal(raw)
            except InvalidOperation as exc:
                raise ExchangeRateFeedError(f"Bad rate {raw!r} for {currency} on {day}.") from exc
            if not rate.is_finite() or rate <= 0:
                raise ExchangeRateFeedError(f"Bad rate {raw!r} for {currency} on {day}.")
            try:
                rate = rate.quantize(_QUANTUM)
            except InvalidOperation as exc:
                raise ExchangeRateFeedError(f"Rate {raw!r} for {currency} on {day} is out of range.") from exc
            if not 0 < rate < _MAX_RATE:
                raise ExchangeRateFeedError(
                    f"Rate {raw!r} for {currency} on {day} is out of range: it must round to more than 0 "
                    f"and less than {_MAX_RATE:,.0f} at 10 decimal places."
                )
            rates[currency] = rate
        if rates:
            days[day] = rates
    if not days:
        raise ExchangeRateFeedError("The feed holds no rates.")
    return days


def exchange_rates_store(*, rates_by_day: dict[date, dict[str, Decimal]], source: str = SOURCE) -> dict[str, int]:
    """Insert new rates, correct changed ones, leave equal ones alone: a re-run changes nothing."""
    created = updated = unchanged = 0
    with transaction.atomic():
        for day, rates in sorted(rates_by_day.items()):
            stored = {r.quote: r for r in ExchangeRate.objects.filter(base=ECB_BASE, as_of=day, quote__in=list(rates))}
            new = [
                ExchangeRate(base=ECB_BASE, quote=q, rate=rate, as_of=day, source=source)
                for q, rate in rates.items()
                if q not in stored
            ]
            changed = []
            for quote, rate in rates.items():
                row = stored.get(quote)
                if row is None:
                    continue
                if row.rate != rate:
                    row.rate, row.source = rate, source
                    changed.append(row)
                else:
                    unchanged += 1
            # ignore_conflicts: a second worker storing the same day at the same moment is not an error.
            ExchangeRate.objects.bulk_create(new, ignore_conflicts=True)
            ExchangeRate.objects.bulk_update(changed, ["rate", "source"])
            created += len(new)
            updated += len(changed)
    return {"created": created, "updated": updated, "unchanged": unchanged}


def exchange_rates_update() -> dict[str, Any]:
    """Fetch the configured feed and store its rates. Raises before writing anything when the feed is bad."""
    rates_by_day = exchange_rates_parse(exchange_rates_fetch())
    counts = exchange_rates_store(rates_by_day=rates_by_day)
    newest = max(rates_by_day)
    return {
        "as_of": newest.isoformat(),
        "days": len(rates_by_day),
        "currencies": len(rates_by_day[newest]),
        **counts,
    }
