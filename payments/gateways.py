"""Payment gateways for subscription charges: a small interface, and Razorpay over its HTTP API.

    gateway = gateway_get("razorpay")
    result = gateway.charge(ChargeRequest(amount=Decimal("499.00"), currency="INR",
                                          idempotency_key="sub_12_20250101", ...))

Every call has a timeout. A charge is two calls, as Razorpay's recurring flow has it: an
order for the amount (`create_order`, once per try; the caller stores its id on the charge
row before paying), then a payment against that order (`charge`). An order takes one
successful payment at most, so a call retried after a timeout, a 5xx or a killed worker
never takes money twice: before paying again, and when the gateway refuses a payment, the
adapter looks up the order's payments and answers with the one already made. The
charge's idempotency key goes along too (receipt, notes and header), for the gateway's
records. Outcomes:

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
    # The gateway order of this try (create_order's answer); empty until it exists.
    order_id: str = ""
    # Whether an earlier call of this try may have reached the gateway (a retry, a redelivery).
    retried: bool = False


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

    def create_order(self, request: ChargeRequest) -> str:
        """An order for the request's amount; its id. TransientGatewayError to retry."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Pay `request.order_id`; the payment already made on it when there is one."""
        ...

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
    """Razorpay's recurring payments: `POST /v1/orders`, then `POST /v1/payments/create/recurring`
    with the order and the saved token; `GET /v1/orders/{id}/payments` finds a payment made.

    Basic auth with the key id and secret. The idempotency key is the order's `receipt`
    and goes in the notes and an `X-Idempotency-Key` header. The payment's `id` (or
    `razorpay_payment_id`) and `status` say what happened (`captured`; `created` or
    `authorized` wait for the webhook; `failed` is a decline). A 400 with `error.reason`
    is a decline, unless the order turns out to hold a payment already (a retry of a call
    that did go through).
    """

    name = "razorpay"
    ORDER_PATH = "/v1/orders"
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

    def create_order(self, request: ChargeRequest) -> str:
        body = {
            "amount": to_minor_units(request.amount, request.currency),
            "currency": request.currency,
            # Razorpay's receipt holds 40 characters; our keys are shorter (sub_<id>_<yyyymmdd>[_r<n>]).
            "receipt": request.idempotency_key[:40],
            "payment_capture": True,
            "notes": {**request.notes, "idempotency_key": request.idempotency_key},
        }
        response = self._call("POST", self.ORDER_PATH, json=body, key=request.idempotency_key)
        self._raise_for_unusable(response)
        data = _json_object(response)
        if response.status_code >= 400 or not data.get("id"):
            raise GatewayConfigurationError(
                f"razorpay refused the order ({response.status_code}): {_error_text(data) or response.text[:200]}"
            )
        return str(data["id"])

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if not request.order_id:
            raise GatewayConfigurationError("a razorpay payment needs its order (create_order first)")
        if request.retried and (made := self._payment_made(request.order_id)) is not None:
            return made
        body = {
            "amount": to_minor_units(request.amount, request.currency),
            "currency": request.currency,
            "order_id": request.order_id,
            "customer_id": request.customer_id,
            "token": request.token_id,
            "recurring": "1",
            "description": request.description,
            "notes": {**request.notes, "idempotency_key": request.idempotency_key},
        }
        response = self._call("POST", self.CHARGE_PATH, json=body, key=request.idempotency_key)
        result = self._result(response)
        if result.status == "declined" and response.status_code >= 400:
            # Refused: perhaps because the order holds a payment from a call we never heard back from.
            made = self._payment_made(request.order_id)
            if made is not None:
                return made
        return result

    def _payment_made(self, order_id: str) -> ChargeResult | None:
        """The order's captured (or authorized, still settling) payment, if it has one."""
        response = self._call("GET", f"{self.ORDER_PATH}/{order_id}/payments")
        self._raise_for_unusable(response)
        items = _json_object(response).get("items")
        payments = [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []
        for payment in payments:
            if payment.get("status") == "captured" and payment.get("id"):
                return ChargeResult(status="captured", payment_id=str(payment["id"]))
        for payment in payments:
            if payment.get("status") in ("authorized", "created") and payment.get("id"):
                return ChargeResult(status="pending", payment_id=str(payment["id"]))
        return None

    def _call(self, method: str, path: str, *, json: Any = None, key: str = "") -> requests.Response:
        try:
            return _http().request(
                method,
                self.base_url + path,
                json=json,
                auth=(self.key_id, self.key_secret),
                headers={"X-Idempotency-Key": key} if key else None,
                timeout=self.timeout_seconds,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientGatewayError(f"razorpay unreachable: {exc.__class__.__name__}: {exc}") from exc
        except requests.RequestException as exc:
            raise GatewayConfigurationError(f"razorpay request failed: {exc}") from exc

    def _raise_for_unusable(self, response: requests.Response) -> None:
        code = response.status_code
        if code == 429 or code >= 500:
            raise TransientGatewayError(f"razorpay answered {code}: {response.text[:200]}")
        if code in (401, 403, 404):
            data = _json_object(response)
            raise GatewayConfigurationError(f"razorpay answered {code}: {_error_text(data) or response.text[:200]}")

    def _result(self, response: requests.Response) -> ChargeResult:
        self._raise_for_unusable(response)
        code = response.status_code
        data = _json_object(response)
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
