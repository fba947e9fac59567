"""What a provider may raise: the delivery task retries the transient kind only."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider refused or could not take a message."""


class TransientProviderError(ProviderError):
    """Worth retrying: a timeout, a connection error, HTTP 5xx or 429.

    `retry_after` is the provider's own Retry-After in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying cannot help: an invalid number, a 4xx, an unregistered device.

    `deactivate_device` is set when the push token is dead and its device must stop
    receiving messages.
    """

    def __init__(self, message: str, *, deactivate_device: bool = False) -> None:
        super().__init__(message)
        self.deactivate_device = deactivate_device


class InvalidAddress(PermanentProviderError):
    """A malformed email address or a phone number that is not E.164."""
