"""Email through Django's backends: SMTP, anymail (SendGrid, SES), console, locmem.

A batch goes out the cheapest way the backend has: SendGrid takes it in one API call (a
personalization per recipient, each with its own subject, body and reference header through
substitutions); SES takes it in one SendBulkEmail call when NOTIFICATIONS_SES_TEMPLATE names a
stored template whose subject and text are `{{subject}}` and `{{body}}`; otherwise SES sends
one call per message, concurrently, and SMTP sends them one after another over one
connection. Each message's outcome is mapped back to its row.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Sequence
from email.utils import make_msgid
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.utils import DNS_NAME

from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.providers.base import OutboundMessage, Outcome, io_pool, parse_retry_after

SENDGRID = "anymail.backends.sendgrid.EmailBackend"
SES = "anymail.backends.amazon_ses.EmailBackend"
# A SendGrid personalization's substitutions are replaced in the subject and the content.
_SUBJECT, _BODY = ":notification_subject", ":notification_body"
# What anymail reports per recipient when the ESP took the message.
_ACCEPTED = {"queued", "sent", "scheduled"}


class DjangoEmailProvider:
    """Whatever settings.EMAIL_BACKEND is; EMAIL_PROVIDER chose it in settings."""

    @property
    def name(self) -> str:
        # "smtp", "locmem", "console", "sendgrid", "amazon_ses": the backend actually in use.
        return str(settings.EMAIL_BACKEND).rsplit(".", 2)[-2]

    def send_many(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        """One outcome per message, in order; see the module doc for how each backend takes a batch."""
        backend = str(settings.EMAIL_BACKEND)
        if len(messages) > 1 and backend == SENDGRID:
            return _in_rounds(messages, self._send_sendgrid_round)
        if len(messages) > 1 and backend == SES and settings.NOTIFICATIONS_SES_TEMPLATE:
            return _in_rounds(messages, self._send_ses_round)
        if backend.startswith("anymail."):
            futures = [io_pool().submit(_attempt, self.send, m) for m in messages]
            return [f.result() for f in futures]
        # SMTP, console, locmem: one connection for the whole batch.
        connection = get_connection(fail_silently=False)
        try:
            connection.open()
        except Exception as exc:
            error = classify_email_error(exc)
            return [error for _ in messages]
        try:
            return [_attempt(self.send, m, connection) for m in messages]
        finally:
            connection.close()

    def _send_sendgrid_round(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        email = EmailMessage(
            subject=_SUBJECT,
            body=_BODY,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[m.to for m in messages],
            connection=get_connection(fail_silently=False),
        )
        email.merge_data = {m.to: {_SUBJECT[1:]: m.subject, _BODY[1:]: m.body} for m in messages}  # type: ignore[attr-defined]
        email.merge_headers = {m.to: {"X-Notification-Reference": m.reference} for m in messages if m.reference}  # type: ignore[attr-defined]
        email.esp_extra = {"merge_field_format": ":{}"}  # type: ignore[attr-defined]
        return _batch_outcomes(email, messages)

    def _send_ses_round(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        email = EmailMessage(
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[m.to for m in messages],
            connection=get_connection(fail_silently=False),
        )
        email.template_id = settings.NOTIFICATIONS_SES_TEMPLATE  # type: ignore[attr-defined]
        email.merge_data = {m.to: {"subject": m.subject, "body": m.body} for m in messages}  # type: ignore[attr-defined]
        email.merge_headers = {m.to: {"X-Notification-Reference": m.reference} for m in messages if m.reference}  # type: ignore[attr-defined]
        outcomes = _batch_outcomes(email, messages)
        # anymail reports every refused SES entry as "failed"; SES's own status says whether to retry.
        status = getattr(email, "anymail_status", None)
        results = (getattr(status, "esp_response", None) or {}).get("BulkEmailEntryResults") or []
        for i, result in enumerate(results[: len(outcomes)]):
            code = str(result.get("Status", ""))
            if code in SES_BULK_PERMANENT:
                outcomes[i] = PermanentProviderError(f"SES {code}: {result.get('Error', '')}".strip())
            elif code != "SUCCESS":
                outcomes[i] = TransientProviderError(f"SES {code}: {result.get('Error', '')}".strip())
        return outcomes

    def send(self, message: OutboundMessage, connection: Any = None) -> str:
        headers = {"X-Notification-Reference": message.reference} if message.reference else {}
        if not settings.EMAIL_BACKEND.startswith("anymail."):
            # Our own Message-ID, so the row records the id the recipient's server sees (anymail has its own).
            headers["Message-ID"] = make_msgid(domain=DNS_NAME)
        email = EmailMessage(
            subject=message.subject,
            body=message.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[message.to],
            headers=headers,
            connection=connection or get_connection(fail_silently=False),
        )
        try:
            email.send(fail_silently=False)
        except Exception as exc:
            raise classify_email_error(exc) from exc
        status = getattr(email, "anymail_status", None)
        if status is not None and status.message_id:
            return str(status.message_id)
        return str(headers.get("Message-ID", "")) or f"{self.name}:{message.reference}"


def _attempt(send: Any, message: OutboundMessage, *args: Any) -> Outcome:
    try:
        return str(send(message, *args))
    except Exception as exc:  # each message's own outcome; one failure must not sink the batch
        return exc


def _in_rounds(messages: Sequence[OutboundMessage], send_round: Any) -> list[Outcome]:
    """Batch calls in which each address appears once (an ESP's per-recipient data is keyed by address)."""
    outcomes: list[Outcome | None] = [None] * len(messages)
    left = list(range(len(messages)))
    while left:
        seen: set[str] = set()
        this_round: list[int] = []
        later: list[int] = []
        for i in left:
            address = messages[i].to.lower()
            (later if address in seen else this_round).append(i)
            seen.add(address)
        for i, outcome in zip(this_round, send_round([messages[i] for i in this_round]), strict=True):
            outcomes[i] = outcome
        left = later
    return [o if o is not None else RuntimeError("no outcome") for o in outcomes]


def _batch_outcomes(email: EmailMessage, messages: Sequence[OutboundMessage]) -> list[Outcome]:
    """Send one batch call; each recipient's status from anymail, or the call's error for all of them."""
    try:
        email.send(fail_silently=False)
    except Exception as exc:
        error = classify_email_error(exc)
        return [error for _ in messages]
    recipients = getattr(email, "anymail_status").recipients  # noqa: B009  (set by anymail on send)
    outcomes: list[Outcome] = []
    for message in messages:
        status = recipients.get(message.to) or recipients.get(message.to.lower())
        if status is None:
            outcomes.append(TransientProviderError(f"the ESP reported nothing for {message.to}"))
        elif status.status in _ACCEPTED:
            outcomes.append(str(status.message_id or f"{email.__class__.__name__}:{message.reference}"))
        elif status.status in ("rejected", "invalid"):
            outcomes.append(PermanentProviderError(f"recipient {status.status} by the ESP"))
        else:
            outcomes.append(TransientProviderError(f"the ESP reported {status.status} for {message.to}"))
    return outcomes


# SendBulkEmail entry statuses that no retry can fix.
SES_BULK_PERMANENT = {
    "MESSAGE_REJECTED",
    "MAIL_FROM_DOMAIN_NOT_VERIFIED",
    "CONFIGURATION_SET_DOES_NOT_EXIST",
    "TEMPLATE_DOES_NOT_EXIST",
    "INVALID_PARAMETER",
    "INVALID_SENDING_POOL_NAME",
}

# SES error codes that say "try again later" (HTTP status aside): throttling and AWS-side failures.
SES_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",  # SES v2's throttling, HTTP 429
    "ServiceUnavailable",
    "InternalFailure",
    "RequestTimeout",
}


def classify_email_error(exc: Exception) -> Exception:
    """Map a backend's exception to transient or permanent; unknown errors stay as they are."""
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused, AnymailRequestsAPIError

    if isinstance(exc, AnymailRecipientsRefused):
        return PermanentProviderError(f"recipient refused: {exc}")
    if isinstance(exc, AnymailRequestsAPIError):
        status = exc.status_code
        if status is None or status == 429 or status >= 500:
            response = getattr(exc, "response", None)
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
            return TransientProviderError(f"email API error: {exc}", retry_after=retry_after)
        return PermanentProviderError(f"email API error: {exc}")
    if isinstance(exc, AnymailAPIError):
        # The SES backend wraps boto's exception; only its cause tells a timeout from a rejection.
        if _is_transient_botocore_error(exc.__cause__):
            return TransientProviderError(f"email API error: {exc}")
        return PermanentProviderError(f"email API error: {exc}")
    # smtplib.SMTPException subclasses OSError: it must be classified before the network errors.
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(400 <= code < 500 for code in codes):
            return TransientProviderError(f"SMTP recipient temporarily refused: {exc.recipients}")
        return PermanentProviderError(f"SMTP recipient refused: {exc.recipients}")
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)):
        return TransientProviderError(f"SMTP connection failed: {exc!r}")
    if isinstance(exc, smtplib.SMTPResponseException):
        if 400 <= exc.smtp_code < 500:
            return TransientProviderError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        return PermanentProviderError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
    if isinstance(exc, smtplib.SMTPException):
        return PermanentProviderError(f"SMTP error: {exc!r}")
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError, OSError)):
        return TransientProviderError(f"email connection error: {exc!r}")
    return exc


def _is_transient_botocore_error(cause: BaseException | None) -> bool:
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 comes with anymail[amazon-ses]
        return False
    # ConnectionError covers EndpointConnectionError and ConnectTimeoutError; HTTPClientError
    # covers ReadTimeoutError and a connection closed mid-response.
    if isinstance(cause, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {}) or {}
        status = (cause.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0
        return int(status) >= 500 or int(status) == 429 or error.get("Code") in SES_TRANSIENT_CODES
    return False
