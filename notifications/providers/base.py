"""One small interface for every channel's providers."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from notifications.exceptions import PermanentProviderError, TransientProviderError


@dataclass(frozen=True)
class OutboundMessage:
    channel: str
    to: str
    body: str
    subject: str = ""
    data: dict[str, str] = field(default_factory=dict)
    # The outbox row's dedupe key: a provider with an idempotency or collapse key uses it.
    reference: str = ""


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; return the provider's message id.

        Raise TransientProviderError when a retry may succeed, PermanentProviderError
        when it cannot.
        """
        ...


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def http_post(url: str, *, timeout: float, **kwargs: Any) -> requests.Response:
    """POST, turning network failures and 5xx/429 into TransientProviderError."""
    try:
        response = requests.post(url, timeout=timeout, **kwargs)
    except requests.Timeout as exc:
        raise TransientProviderError(f"timeout after {timeout}s posting to {url}: {exc}") from exc
    except requests.ConnectionError as exc:
        raise TransientProviderError(f"connection error posting to {url}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientProviderError(
            f"HTTP {response.status_code} from {url}: {response.text[:500]}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return response


def permanent_http_error(response: requests.Response, detail: str = "", **kwargs: Any) -> PermanentProviderError:
    text = detail or response.text[:500]
    return PermanentProviderError(f"HTTP {response.status_code} from {response.url}: {text}", **kwargs)
