"""One small interface for every channel's providers, and what they share per process.

A provider sends one message (`send`) and may send many at once (`send_many`, one outcome
per message, in order). `send_all` is how delivery calls them: a provider's own batch API
when it has one, else its `send` run concurrently on the process's I/O pool. HTTP providers
share one keep-alive session per process.
"""

from __future__ import annotations

import email.utils
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

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


# What sending one message ended in: the provider's message id, or the exception it raised.
Outcome = str | BaseException


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; return the provider's message id.

        Raise TransientProviderError when a retry may succeed, PermanentProviderError
        when it cannot.
        """
        ...


class BatchProvider(Provider, Protocol):
    def send_many(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        """Deliver `messages` (one batch API call, or one connection); one outcome per message, in order."""
        ...


def send_all(provider: Provider, messages: Sequence[OutboundMessage]) -> list[Outcome]:
    """Send `messages` through `provider`: its batch API when it has one, else concurrently on the I/O pool."""
    send_many = getattr(provider, "send_many", None)
    if send_many is not None:
        outcomes: list[Outcome] = send_many(messages)
        return outcomes
    if len(messages) <= 1:
        return [_outcome(provider.send, m) for m in messages]
    futures = [io_pool().submit(_outcome, provider.send, m) for m in messages]
    return [f.result() for f in futures]


def _outcome(send: Any, message: OutboundMessage) -> Outcome:
    try:
        return str(send(message))
    except Exception as exc:  # recorded per message by delivery; one failure must not sink the batch
        return exc


_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None
_session: tuple[int, requests.Session] | None = None


def io_pool() -> ThreadPoolExecutor:
    """This process's threads for provider calls: NOTIFICATIONS_SEND_CONCURRENCY of them (made anew after a fork)."""
    global _pool
    pid = os.getpid()
    with _lock:
        if _pool is None or _pool[0] != pid:
            size = int(settings.NOTIFICATIONS_SEND_CONCURRENCY)
            _pool = (pid, ThreadPoolExecutor(max_workers=size, thread_name_prefix="notifications-send"))
        return _pool[1]


def http_session() -> requests.Session:
    """One keep-alive session per process, its pool as large as the I/O pool, so every send thread reuses a connection."""
    global _session
    pid = os.getpid()
    with _lock:
        if _session is None or _session[0] != pid:
            session = requests.Session()
            size = int(settings.NOTIFICATIONS_SEND_CONCURRENCY)
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _session = (pid, session)
        return _session[1]


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
        response = http_session().post(url, timeout=timeout, **kwargs)
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
