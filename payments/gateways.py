"""Payment gateways for subscription charges: a small interface, and Razorpay over its HTTP API.

    gateway = gateway_get("razorpay")
    result = gateway.charge(ChargeRequest(amount=Decimal("499.00"), currency="INR",
                                          idempotency_key="sub_12_20250101", ...))

Every call has a timeout and carries the charge's idempotency key (header and receipt), so
a call retried after a timeout or a 5xx never takes money twice: the gateway answers a
repeated key with the payment it already made. Outcomes:

- `ChargeResult(status="captured")`: the money is taken;
- `ChargeResult(status="pending")`: the gateway took the request and will say how it ended
  with a webhook (payment.captured / payment.failed);
- `ChargeResult(status="declined")`: no money taken (card declined, mandate revoked...);
- `TransientGatewayError`: timeout, connection error, 5xx or 429; retry with the same key;
- `GatewayConfigurationError`: our credentials or request are wrong (401, 403, 404); not
  the customer's fault, so it is not counted as a declined day.

Another gateway implements `PaymentGateway` and is added to `GATEWAYS`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

import requests
from django.conf import settings

from payments.models.pricing import minor_units

logger = logging.getLogger(__name__)

ChargeStatus = Literal["captured", "pending", "declined"]


class GatewayError(Exception):
    """Base of the gateway's errors."""


class TransientGatewayError(GatewayError):
    """Worth retrying with the same idempotency key: a timeout, a connection error, a 5xx or a 429."""


class GatewayConfigurationError(GatewayError):
    """Our side is wrong (credentials, URL, request): retrying will not help and the customer is not to blame."""


class InvalidSignature(GatewayError):
    """A webhook whose signature does not match its body under the webhook secret."""


@dataclass(frozen=True)
class ChargeRequest:
    amount: Decimal
    currency: str
    idempotency_key: str
    customer_id: str = ""
    token_id: str = ""
    description: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChargeResult:
    status: ChargeStatus
    payment_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PaymentEvent:
    """A verified webhook event about one payment."""

    event: str
    payment_id: str
    status: str
    amount_minor: int | None = None
    currency: str = ""
    reason: str = ""


class PaymentGateway(Protocol):
    name: str

    def charge(self, request: ChargeRequest) -> ChargeResult: ...

    def parse_webhook(self, *, body: bytes, signature: str) -> PaymentEvent | None:
        """The event in a verified webhook body (None when it is not about a payment); InvalidSignature otherwise."""
        ...


def to_minor_units(amount: Decimal, currency: str) -> int:
    """An amount in the currency's smallest unit (paise, cents; yen as is), as gateways want it."""
    minor = amount.scaleb(minor_units(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} {currency} has more decimal places than {currency} allows")
    return int(minor)


# One HTTP session per process: its connection pool keeps the TLS connection to the gateway.
_session: requests.Session | None = None


def _http() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
    return _session


class RazorpayGateway:
    """Razorpay's recurring-payment API: `POST /v1/payments/create/recurring` with a saved token.

    Basic auth with the key id and secret. The idempotency key goes in the
    `X-Idempotency-Key` header and as the `receipt`; the answer's `id` (or
    `razorpay_payment_id`) and `status` say what happened (`captured`; `created` or
    `authorized` wait for the webhook; `failed` is a decline). A 400 with
    `error.reason` is a decline.
    """

    name = "razorpay"
    CHARGE_PATH = "/v1/payments/create/recurring"
    SIGNATURE_HEADER = "X-Razorpay-Signature"

    def __init__(
        self, *, base_url: str, key_id: str, key_secret: str, webhook_secret: str, timeout_seconds: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key_id = key_id
        self.key_secret = key_secret
        self.webhook_secret = webhook_secret
        self.timeout_seconds = timeout_seconds

    @classmethod
    def from_settings(cls) -> RazorpayGateway:
        return cls(
            base_url=settings.RAZORPAY_BASE_URL,
            key_id=settings.RAZORPAY_KEY_ID,
            key_secret=settings.RAZORPAY_KEY_SECRET,
            webhook_secret=settings.RAZORPAY_WEBHOOK_SECRET,
            timeout_seconds=settings.RAZORPAY_TIMEOUT_SECONDS,
        )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        body = {
            "amount": to_minor_units(request.amount, request.currency),
            "currency": request.currency,
            "customer_id": request.customer_id,
            "token": request.token_id,
            "recurring": "1",
            # Razorpay's receipt holds 40 characters; our keys are shorter (sub_<id>_<yyyymmdd>[_r<n>]).
            "receipt": request.idempotency_key[:40],
            "description": request.description,
            "notes": {**request.notes, "idempotency_key": request.idempotency_key},
        }
        try:
            response = _http().post(
                self.base_url + self.CHARGE_PATH,
                json=body,
                auth=(self.key_id, self.key_secret),
                headers={"X-Idempotency-Key": request.idempotency_key},
                timeout=self.timeout_seconds,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientGatewayError(f"razorpay unreachable: {exc.__class__.__name__}: {exc}") from exc
        except requests.RequestException as exc:
            raise GatewayConfigurationError(f"razorpay request failed: {exc}") from exc
        return self._result(response)

    def _result(self, response: requests.Response) -> ChargeResult:
        code = response.status_code
        if code == 429 or code >= 500:
            raise TransientGatewayError(f"razorpay answered {code}: {response.text[:200]}")
        data = _json_object(response)
        if code in (401, 403, 404):
            raise GatewayConfigurationError(f"razorpay answered {code}: {_error_text(data) or response.text[:200]}")
        if 400 <= code < 500:
            # Razorpay reports a declined payment as a 400 with the error's reason (payment_failed, ...).
            return ChargeResult(
                status="declined",
                payment_id=str(_error_field(data, "metadata", "payment_id")),
                reason=_error_text(data),
            )
        payment_id = str(data.get("id") or data.get("razorpay_payment_id") or "")
        if not payment_id:
            raise TransientGatewayError(f"razorpay answered {code} without a payment id")
        status = str(data.get("status") or "created")
        if status == "captured":
            return ChargeResult(status="captured", payment_id=payment_id)
        if status == "failed":
            return ChargeResult(status="declined", payment_id=payment_id, reason=_error_text(data) or "payment failed")
        return ChargeResult(status="pending", payment_id=payment_id)

    def parse_webhook(self, *, body: bytes, signature: str) -> PaymentEvent | None:
        if not self.webhook_secret:
            logger.warning("razorpay webhook refused: RAZORPAY_WEBHOOK_SECRET is not set")
            raise InvalidSignature("The webhook secret is not configured.")
        expected = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(expected, signature.strip()):
            raise InvalidSignature("The webhook signature does not match.")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise InvalidSignature("The webhook body is not JSON.") from exc
        if not isinstance(data, dict):
            return None
        event = str(data.get("event") or "")
        entity = _dig(data, "payload", "payment", "entity")
        if not event.startswith("payment.") or not isinstance(entity, dict) or not entity.get("id"):
            return None
        amount = entity.get("amount")
        return PaymentEvent(
            event=event,
            payment_id=str(entity["id"]),
            status=str(entity.get("status") or ""),
            amount_minor=int(amount) if isinstance(amount, int) else None,
            currency=str(entity.get("currency") or ""),
            reason=str(entity.get("error_description") or entity.get("error_reason") or ""),
        )


def webhook_signature(secret: str, body: bytes) -> str:
    """What the gateway puts in X-Razorpay-Signature: hex HMAC-SHA256 of the raw body (tests and docs use it)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


GATEWAYS: dict[str, Callable[[], PaymentGateway]] = {"razorpay": RazorpayGateway.from_settings}


def gateway_get(name: str = "razorpay") -> PaymentGateway:
    try:
        factory = GATEWAYS[name]
    except KeyError:
        raise GatewayConfigurationError(f"Unknown payment gateway {name!r}; one of {', '.join(GATEWAYS)}.") from None
    return factory()


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _error_field(data: dict[str, Any], *path: str) -> str:
    value = _dig(data, "error", *path)
    return str(value) if value else ""


def _error_text(data: dict[str, Any]) -> str:
    parts = [_error_field(data, "code"), _error_field(data, "reason"), _error_field(data, "description")]
    return ": ".join(p for p in parts if p)
