from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from payments.models import ExchangeRate
from payments.selectors import ExchangeRateNotFound, exchange_rate_get, money_convert
from payments.services.rates import (
    MAX_FEED_BYTES,
    ExchangeRateFeedError,
    ExchangeRateFeedUnavailable,
    exchange_rates_parse,
    exchange_rates_update,
)

pytestmark = pytest.mark.django_db

FEED_PATH = "/stats/eurofxref/eurofxref-daily.xml"


@pytest.fixture
def feed(httpserver: HTTPServer, settings: Any) -> HTTPServer:
    settings.EXCHANGE_RATES_URL = httpserver.url_for(FEED_PATH)
    settings.EXCHANGE_RATES_TIMEOUT_SECONDS = 2
    return httpserver


def test_the_real_format_feed_parses_to_thirty_eur_rates_for_its_day(ecb_daily_xml: bytes) -> None:
    days = exchange_rates_parse(ecb_daily_xml)

    assert list(days) == [date(2026, 11, 20)]
    rates = days[date(2026, 11, 20)]
    assert len(rates) == 30
    assert rates["USD"] == Decimal("1.0542") and rates["IDR"] == Decimal("16742.62")


def test_fetching_the_feed_stores_every_rate_against_eur(feed: HTTPServer, ecb_daily_xml: bytes) -> None:
    feed.expect_request(FEED_PATH).respond_with_data(ecb_daily_xml, content_type="text/xml")

    summary = exchange_rates_update()

    assert summary == {"as_of": "2026-11-20", "days": 1, "currencies": 30, "created": 30, "updated": 0, "unchanged": 0}
    usd = ExchangeRate.objects.get(base="EUR", quote="USD", as_of=date(2026, 11, 20))
    assert usd.rate == Decimal("1.0542") and usd.source == "ecb"


def test_fetching_the_same_day_twice_changes_nothing(feed: HTTPServer, ecb_daily_xml: bytes) -> None:
    feed.expect_request(FEED_PATH).respond_with_data(ecb_daily_xml, content_type="text/xml")
    exchange_rates_update()
    before = list(ExchangeRate.objects.order_by("quote").values_list("id", "quote", "rate", "fetched_at"))

    summary = exchange_rates_update()

    assert (summary["created"], summary["updated"], summary["unchanged"]) == (0, 0, 30)
    assert list(ExchangeRate.objects.order_by("quote").values_list("id", "quote", "rate", "fetched_at")) == before


def test_a_corrected_rate_for_the_same_day_replaces_the_stored_one(feed: HTTPServer, ecb_daily_xml: bytes) -> None:
    feed.expect_ordered_request(FEED_PATH).respond_with_data(ecb_daily_xml, content_type="text/xml")
    corrected = ecb_daily_xml.replace(b"rate='1.0542'", b"rate='1.0550'")
    feed.expect_ordered_request(FEED_PATH).respond_with_data(corrected, content_type="text/xml")
    exchange_rates_update()

    summary = exchange_rates_update()

    assert (summary["created"], summary["updated"], summary["unchanged"]) == (0, 1, 29)
    assert ExchangeRate.objects.get(quote="USD").rate == Decimal("1.0550")


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Service temporarily unavailable</body></html>",
        b"not xml at all",
        b"<?xml version='1.0'?><gesmes:Envelope xmlns:gesmes='http://www.gesmes.org/xml/2002-08-01'>",
        b"<?xml version='1.0'?><gesmes:Envelope xmlns:gesmes='http://www.gesmes.org/xml/2002-08-01'/>",
    ],
    ids=["html", "text", "truncated", "no-rates"],
)
def test_a_feed_answering_garbage_writes_no_rates(feed: HTTPServer, body: bytes) -> None:
    feed.expect_request(FEED_PATH).respond_with_data(body, content_type="text/xml")

    with pytest.raises(ExchangeRateFeedError):
        exchange_rates_update()
    assert not ExchangeRate.objects.exists()


def test_a_rate_that_is_not_a_positive_number_rejects_the_whole_feed(feed: HTTPServer, ecb_daily_xml: bytes) -> None:
    feed.expect_request(FEED_PATH).respond_with_data(
        ecb_daily_xml.replace(b"rate='162.83'", b"rate='-1'"), content_type="text/xml"
    )

    with pytest.raises(ExchangeRateFeedError, match="Bad rate '-1' for JPY"):
        exchange_rates_update()
    assert not ExchangeRate.objects.exists()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1e30", "out of range"),  # more digits than NUMERIC(20, 10) and Decimal's precision hold
        ("1E+999999", "out of range"),
        ("10000000000", "less than 10,000,000,000"),
        ("0.00000000004", "more than 0"),  # rounds to 0 at 10 places
    ],
    ids=["1e30", "huge-exponent", "1e10", "rounds-to-zero"],
)
def test_a_rate_the_database_cannot_hold_rejects_the_whole_feed_with_the_reason(
    feed: HTTPServer, ecb_daily_xml: bytes, raw: str, reason: str
) -> None:
    feed.expect_request(FEED_PATH).respond_with_data(
        ecb_daily_xml.replace(b"rate='162.83'", f"rate='{raw}'".encode()), content_type="text/xml"
    )

    with pytest.raises(ExchangeRateFeedError, match=rf"Rate '{re.escape(raw)}' for JPY on 2026-11-20 .*{reason}"):
        exchange_rates_update()
    assert not ExchangeRate.objects.exists()


def test_the_largest_and_smallest_storable_rates_are_accepted(feed: HTTPServer, ecb_daily_xml: bytes) -> None:
    body = ecb_daily_xml.replace(b"rate='162.83'", b"rate='9999999999.9999999999'").replace(
        b"rate='1.0542'", b"rate='0.00000000006'"
    )
    feed.expect_request(FEED_PATH).respond_with_data(body, content_type="text/xml")

    exchange_rates_update()

    assert ExchangeRate.objects.get(quote="JPY").rate == Decimal("9999999999.9999999999")
    assert ExchangeRate.objects.get(quote="USD").rate == Decimal("0.0000000001")  # rounded from 6e-11


def test_a_feed_larger_than_the_limit_is_refused_without_reading_it_all(feed: HTTPServer) -> None:
    # Given a server streaming 200 MB of XML-looking bytes, chunk by chunk, with no length announced
    from werkzeug import Response

    chunk = b"<!-- padding -->" * 4096  # 64 kB
    sent = []

    def endless(_request: Any) -> Response:
        def body() -> Any:
            for _ in range(3200):
                sent.append(1)
                yield chunk

        return Response(body(), content_type="text/xml")

    feed.expect_request(FEED_PATH).respond_with_handler(endless)

    # When the feed is fetched
    with pytest.raises(ExchangeRateFeedError, match=rf"more than {MAX_FEED_BYTES} bytes.*stopped reading"):
        exchange_rates_update()

    # Then the client stopped soon after the limit, not after 200 MB: what the server got out
    # is the 2 MB read plus what loopback socket buffers absorbed (a few MB, more on a busy machine)
    assert len(sent) < 10 * MAX_FEED_BYTES // len(chunk)
    assert not ExchangeRate.objects.exists()


def test_a_feed_exactly_at_the_limit_is_read(feed: HTTPServer, ecb_daily_xml: bytes) -> None:
    padded = ecb_daily_xml + b" " * (MAX_FEED_BYTES - len(ecb_daily_xml))
    feed.expect_request(FEED_PATH).respond_with_data(padded, content_type="text/xml")

    assert exchange_rates_update()["created"] == 30


def test_an_entity_expansion_attack_is_refused_by_the_parser(feed: HTTPServer) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b'<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01">&lol2;</gesmes:Envelope>'
    )
    feed.expect_request(FEED_PATH).respond_with_data(bomb, content_type="text/xml")

    with pytest.raises(ExchangeRateFeedError, match="safe, well-formed"):
        exchange_rates_update()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_server_error_is_reported_as_worth_retrying(feed: HTTPServer, status: int) -> None:
    feed.expect_request(FEED_PATH).respond_with_data("busy", status=status)

    with pytest.raises(ExchangeRateFeedUnavailable, match=f"HTTP {status}"):
        exchange_rates_update()
    assert not ExchangeRate.objects.exists()


def test_a_missing_feed_is_a_permanent_error(feed: HTTPServer) -> None:
    feed.expect_request(FEED_PATH).respond_with_data("gone", status=404)

    with pytest.raises(ExchangeRateFeedError, match="HTTP 404"):
        exchange_rates_update()


def test_an_unreachable_feed_is_reported_as_worth_retrying(settings: Any) -> None:
    settings.EXCHANGE_RATES_URL = "http://127.0.0.1:9/eurofxref-daily.xml"  # discard port: nothing listens

    with pytest.raises(ExchangeRateFeedUnavailable, match="Could not reach"):
        exchange_rates_update()


def test_a_feed_that_never_answers_times_out(feed: HTTPServer, ecb_daily_xml: bytes, settings: Any) -> None:
    import threading

    from werkzeug import Response

    settings.EXCHANGE_RATES_TIMEOUT_SECONDS = 1
    released = threading.Event()

    def hang(_request: Any) -> Response:
        released.wait(timeout=30)  # answers only after the client gave up
        return Response(ecb_daily_xml)

    feed.expect_request(FEED_PATH).respond_with_handler(hang)

    try:
        with pytest.raises(ExchangeRateFeedUnavailable, match="timed out"):
            exchange_rates_update()
    finally:
        released.set()
    assert not ExchangeRate.objects.exists()


# Conversion -------------------------------------------------------------------------


def _rate(base: str, quote: str, rate: str, on: date) -> None:
    ExchangeRate.objects.create(base=base, quote=quote, rate=Decimal(rate), as_of=on)


def test_conversion_uses_the_newest_rate_on_or_before_the_date() -> None:
    _rate("EUR", "USD", "1.0000", date(2026, 11, 18))
    _rate("EUR", "USD", "1.1000", date(2026, 11, 20))
    _rate("EUR", "USD", "9.9999", date(2026, 11, 23))

    assert exchange_rate_get(base="EUR", quote="USD", on=date(2026, 11, 19)) == Decimal("1.0000")
    assert exchange_rate_get(base="EUR", quote="USD", on=date(2026, 11, 22)) == Decimal("1.1000")
    assert money_convert(amount=Decimal("100"), from_currency="EUR", to_currency="USD", on=date(2026, 11, 21)) == (
        Decimal("110.00")
    )
    with pytest.raises(ExchangeRateNotFound, match="EUR->USD"):
        exchange_rate_get(base="EUR", quote="USD", on=date(2026, 11, 17))


def test_conversion_inverts_a_eur_rate_and_crosses_through_eur_for_other_pairs() -> None:
    on = date(2026, 11, 20)
    _rate("EUR", "USD", "1.25", on)
    _rate("EUR", "GBP", "0.80", on)

    assert money_convert(amount=Decimal("125"), from_currency="USD", to_currency="EUR", on=on) == Decimal("100.00")
    # 1 USD = 0.80 / 1.25 GBP = 0.64 GBP; 10 GBP = 15.625 USD, rounded half-even
    assert exchange_rate_get(base="USD", quote="GBP", on=on) == Decimal("0.64")
    assert money_convert(amount=Decimal("10"), from_currency="gbp", to_currency="usd", on=on) == Decimal("15.62")
    assert exchange_rate_get(base="JPY", quote="JPY", on=on) == 1
    with pytest.raises(ExchangeRateNotFound):
        exchange_rate_get(base="USD", quote="JPY", on=on)


def test_a_cross_rate_takes_both_legs_from_the_newest_day_that_has_both() -> None:
    # Given USD published on the 18th and 20th, GBP on the 18th and 19th only
    _rate("EUR", "USD", "1.25", date(2026, 11, 18))
    _rate("EUR", "GBP", "0.80", date(2026, 11, 18))
    _rate("EUR", "GBP", "0.90", date(2026, 11, 19))
    _rate("EUR", "USD", "1.50", date(2026, 11, 20))

    # Then on the 20th (and the 19th) the cross uses the 18th for both legs, never 0.90 / 1.50
    assert exchange_rate_get(base="USD", quote="GBP", on=date(2026, 11, 20)) == Decimal("0.64")
    assert exchange_rate_get(base="USD", quote="GBP", on=date(2026, 11, 19)) == Decimal("0.64")
    # And once a day has both, that day is used
    _rate("EUR", "GBP", "1.20", date(2026, 11, 20))
    assert exchange_rate_get(base="USD", quote="GBP", on=date(2026, 11, 20)) == Decimal("0.8")


def test_a_cross_rate_whose_legs_never_share_a_day_is_refused_with_the_reason() -> None:
    _rate("EUR", "USD", "1.25", date(2026, 11, 18))
    _rate("EUR", "GBP", "0.80", date(2026, 11, 19))

    with pytest.raises(ExchangeRateNotFound, match="No USD->GBP rate on or before 2026-11-20: no day has both"):
        exchange_rate_get(base="USD", quote="GBP", on=date(2026, 11, 20))
