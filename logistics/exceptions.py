"""The errors logistics services raise; the API turns each into a response with the message."""

from __future__ import annotations


class LogisticsError(Exception):
    """Base of the errors the API turns into responses; the message is shown to the caller."""


class NotFound(LogisticsError):
    pass


class Conflict(LogisticsError):
    pass


class InvalidInput(LogisticsError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
