"""The application's error vocabulary, and its three translations: HTTP, CLI and admin.

Services raise these; nothing else builds an error response by hand. Each error has a
human `detail` (shown as is to the caller) and optional field `errors` (for `Invalid`).

| error              | HTTP | CLI exit | admin message |
| ------------------ | ---- | -------- | ------------- |
| `Invalid`          | 400  | 2        | error         |
| `PermissionDenied` | 403  | 1        | error         |
| `NotFound`         | 404  | 2        | warning       |
| `Conflict`         | 409  | 1        | warning       |
| `Unavailable`      | 503  | 1        | error         |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from django.core.management.base import CommandError
    from django.http import HttpRequest

FieldErrors = dict[str, list[str]]


def _reasons(reasons: object) -> list[str]:
    """A field's reasons as text. DRF gives a list field's errors per item: {1: ["A valid integer is required."]}."""
    if isinstance(reasons, str):
        return [reasons]
    if isinstance(reasons, Mapping):
        return [f"item {index}: {text}" for index, inner in reasons.items() for text in _reasons(inner)]
    if isinstance(reasons, Sequence):
        return [text for r in reasons for text in _reasons(r)]
    return [str(reasons)]


class AppError(Exception):
    """Base of every error a caller is meant to read. Never raised itself."""

    status_code: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    admin_level: ClassVar[str] = "error"
    default_detail: ClassVar[str] = "The request could not be completed."

    def __init__(self, detail: str | None = None, *, errors: Mapping[str, Sequence[str] | str] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.errors: FieldErrors = {name: _reasons(reasons) for name, reasons in (errors or {}).items()}
        super().__init__(self.detail)

    def as_body(self) -> dict[str, object]:
        """The JSON body of every API error: `{"detail": ..., "errors": {...}}`."""
        return {"detail": self.detail, "errors": self.errors}

    def as_text(self) -> str:
        """One line for a terminal or an admin message: the detail and each field's reasons."""
        fields = "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in self.errors.items())
        return f"{self.detail} ({fields})" if fields and fields not in self.detail else self.detail


class Invalid(AppError):
    """Bad input: `errors` names each field and its reasons. Nothing was changed."""

    status_code = 400
    exit_code = 2
    default_detail = "Invalid input."

    def __init__(self, errors: Mapping[str, Sequence[str] | str], detail: str | None = None) -> None:
        super().__init__(detail, errors=errors)
        if detail is None:
            self.detail = "Invalid input: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items())
            self.args = (self.detail,)


class PermissionDenied(AppError):
    status_code = 403
    default_detail = "You do not have permission to perform this action."


class NotFound(AppError):
    """The thing does not exist, or is not the caller's to see (never reveal which)."""

    status_code = 404
    exit_code = 2
    admin_level = "warning"
    default_detail = "Not found."


class Conflict(AppError):
    """The state does not allow it now (an expired offer, a cancelled order): the reason is the detail."""

    status_code = 409
    admin_level = "warning"
    default_detail = "The current state does not allow this."


class Unavailable(AppError):
    """A service we depend on (the broker, a provider) cannot be reached; retrying later may work."""

    status_code = 503
    default_detail = "A service this needs is unavailable; try again later."


def command_error(exc: AppError) -> CommandError:
    """The CLI translation: `raise command_error(exc) from exc` inside a management command."""
    from django.core.management.base import CommandError

    return CommandError(exc.as_text(), returncode=exc.exit_code)


def admin_message(request: HttpRequest, exc: AppError) -> None:
    """The admin translation: the error as a message on the next page, at its level."""
    from django.contrib import messages

    level = messages.WARNING if exc.admin_level == "warning" else messages.ERROR
    messages.add_message(request, level, exc.as_text())
