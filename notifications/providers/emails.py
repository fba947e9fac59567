"""Email through Django's backends: SMTP, anymail (SendGrid, SES), console, locmem."""

from __future__ import annotations

import smtplib
import socket
from email.utils import make_msgid

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.utils import DNS_NAME

from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.providers.base import OutboundMessage, parse_retry_after


class DjangoEmailProvider:
    """Whatever settings.EMAIL_BACKEND is; EMAIL_PROVIDER chose it in settings."""

    @property
    def name(self) -> str:
        # "smtp", "locmem", "console", "sendgrid", "amazon_ses": the backend actually in use.
        return str(settings.EMAIL_BACKEND).rsplit(".", 2)[-2]

    def send(self, message: OutboundMessage) -> str:
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
            connection=get_connection(fail_silently=False),
        )
        try:
            email.send(fail_silently=False)
        except Exception as exc:
            raise classify_email_error(exc) from exc
        status = getattr(email, "anymail_status", None)
        if status is not None and status.message_id:
            return str(status.message_id)
        return str(headers.get("Message-ID", "")) or f"{self.name}:{message.reference}"


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
