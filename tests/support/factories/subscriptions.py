"""Subscriptions test data, and a Razorpay stand-in that counts what it was asked and what it took.

The stand-in answers Razorpay's recurring flow as its documentation describes it:
`POST /v1/orders` makes an order; `POST /v1/payments/create/recurring` pays one, and an
order takes one successful payment at most (a second is refused with a 400, as Razorpay
does); `GET /v1/orders/{id}/payments` lists an order's payments. It does not deduplicate by
the idempotency header (Razorpay does not document one): the orders are what keeps a retry
from taking money twice. Scripted failures come first on payment calls (`script=[500, 500]`),
and chosen subscriptions are declined. Served by pytest-httpserver in the tests
(`stand_in.install(httpserver)`) or by a plain threaded HTTP server in the benchmark
(`serve(stand_in)`).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

from core.models import User
from payments.gateways import RazorpayGateway, webhook_signature
from payments.models import Plan, Product, Subscription
from payments.models.subscriptions import utc_today
from tests.support.factories.payments import make_product

CHARGE_PATH = RazorpayGateway.CHARGE_PATH
ORDER_PATH = RazorpayGateway.ORDER_PATH
_users = count(1)


def make_plan(
    *,
    product: Product | None = None,
    price: str = "9.99",
    quantity: int = 1,
    interval: str = Plan.Interval.WEEKLY,
    interval_days: int | None = None,
    stock: int = 1000,
) -> Plan:
    product = product or make_product(stock=stock, currency="EUR")
    return Plan.objects.create(
        name=f"Plan {product.sku}",
        product=product,
        quantity=quantity,
        price=Decimal(price),
        currency=product.currency,
        interval=interval,
        interval_days=interval_days,
    )


def make_subscriber(*, phone: str = "+14155552671") -> User:
    n = next(_users)
    return User.objects.create_user(username=f"subscriber-{n}", email=f"subscriber-{n}@example.com", phone_number=phone)


def make_subscription(
    *,
    plan: Plan | None = None,
    user: User | None = None,
    next_charge_date: date | None = None,
    status: str = Subscription.Status.ACTIVE,
) -> Subscription:
    return Subscription.objects.create(
        user=user or make_subscriber(),
        plan=plan or make_plan(),
        status=status,
        next_charge_date=next_charge_date or utc_today(),
        gateway_customer_id="cust_test",
        gateway_token_id="token_test",
    )


def seed_due_subscriptions(
    plans: list[Plan], *, count: int, next_charge_date: date | None = None, prefix: str = "bulk"
) -> list[Subscription]:
    """`count` active subscriptions due on `next_charge_date` (today), spread over `plans`, set-based."""
    due = next_charge_date or utc_today()
    users = User.objects.bulk_create(
        [User(username=f"{prefix}-{i}", email=f"{prefix}-{i}@example.com") for i in range(count)], batch_size=2000
    )
    return Subscription.objects.bulk_create(
        [
            Subscription(
                user=u,
                plan=plans[i % len(plans)],
                next_charge_date=due,
                started_on=due - timedelta(days=7),
                gateway_customer_id=f"cust_{i}",
                gateway_token_id=f"token_{i}",
            )
            for i, u in enumerate(users)
        ],
        batch_size=2000,
    )


def signed(body: dict[str, Any], secret: str) -> tuple[bytes, str]:
    raw = json.dumps(body).encode()
    return raw, webhook_signature(secret, raw)


def payment_event(event: str, payment_id: str, *, amount: int, currency: str = "EUR") -> dict[str, Any]:
    status = "captured" if event == "payment.captured" else "failed"
    return {
        "entity": "event",
        "event": event,
        "payload": {
            "payment": {
                "entity": {
                    "id": payment_id,
                    "status": status,
                    "amount": amount,
                    "currency": currency,
                    "error_description": "" if status == "captured" else "Card declined by the bank",
                }
            }
        },
    }


@dataclass
class GatewayStandIn:
    """What the gateway saw and took. Thread-safe: the servers answer requests concurrently."""

    delay_seconds: float = 0.0
    # Statuses to answer first, one per payment call, whatever the order (e.g. [500, 500]).
    script: deque[int] = field(default_factory=deque)
    # Subscriptions (notes.subscription_id, as text) whose charges are declined.
    decline: set[str] = field(default_factory=set)
    # Answer "created" (the webhook will tell) instead of "captured".
    pending: bool = False
    # Called with the key before a payment call is answered (a test may block here to kill the caller mid-call).
    on_call: Callable[[str], None] | None = None
    # The idempotency key of each payment call, in order; the key of each order made.
    calls: list[str] = field(default_factory=list)
    orders_made: list[str] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: count(1))

    def order(self, *, body: dict[str, Any], authorized: bool) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if not authorized:
                return 401, {"error": {"code": "BAD_REQUEST_ERROR", "description": "Authentication failed"}}
            order_id = f"order_{next(self._ids):08d}"
            notes = body.get("notes") or {}
            self.orders_made.append(str(notes.get("idempotency_key", "")))
            self.orders[order_id] = {
                "id": order_id,
                "entity": "order",
                "amount": body.get("amount"),
                "currency": body.get("currency"),
                "receipt": body.get("receipt"),
                "notes": notes,
                "status": "created",
                "payments": [],
            }
            return 200, {k: v for k, v in self.orders[order_id].items() if k != "payments"}

    def answer(self, *, idempotency_key: str, body: dict[str, Any], authorized: bool) -> tuple[int, dict[str, Any]]:
        """A payment call."""
        if self.on_call is not None:
            self.on_call(idempotency_key)
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        with self.lock:
            self.calls.append(idempotency_key)
            if not authorized:
                return 401, {"error": {"code": "BAD_REQUEST_ERROR", "description": "Authentication failed"}}
            if self.script:
                status = self.script.popleft()
                return status, {"error": {"code": "SERVER_ERROR", "description": f"scripted {status}"}}
            order = self.orders.get(str(body.get("order_id")))
            if order is None:
                return 400, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}}
            if any(self.payments[p]["status"] in ("captured", "created", "authorized") for p in order["payments"]):
                return 400, {
                    "error": {
                        "code": "BAD_REQUEST_ERROR",
                        "description": "Order has already been paid or has a payment in progress",
                        "reason": "order_already_paid",
                    }
                }
            notes = body.get("notes") or {}
            payment_id = f"pay_{next(self._ids):08d}"
            payment: dict[str, Any] = {
                "id": payment_id,
                "entity": "payment",
                "order_id": order["id"],
                "status": "created" if self.pending else "captured",
                "amount": body.get("amount"),
                "currency": body.get("currency"),
                "notes": notes,
            }
            if str(notes.get("subscription_id")) in self.decline:
                payment.update(status="failed", error_description="Card declined by the bank")
            order["payments"].append(payment_id)
            order["status"] = "paid" if payment["status"] == "captured" else "attempted"
            self.payments[payment_id] = payment
            return 200, payment

    def order_payments(self, order_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            order = self.orders.get(order_id)
            if order is None:
                return 400, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}}
            items = [self.payments[p] for p in order["payments"]]
            return 200, {"entity": "collection", "count": len(items), "items": items}

    def route(self, method: str, path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        authorized = _basic_auth_user(headers.get("Authorization", "")) != ""
        if method == "POST" and path == ORDER_PATH:
            return self.order(body=body, authorized=authorized)
        if method == "POST" and path == CHARGE_PATH:
            return self.answer(idempotency_key=headers.get("X-Idempotency-Key", ""), body=body, authorized=authorized)
        if method == "GET" and path.startswith(ORDER_PATH + "/") and path.endswith("/payments"):
            return self.order_payments(path.split("/")[3])
        return 404, {"error": {"code": "NOT_FOUND", "description": f"{method} {path}"}}

    # What the tests assert ------------------------------------------------------------------

    def captured(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: p for k, p in self.payments.items() if p.get("status") in ("captured", "created")}

    def charges_per_period(self) -> Counter[tuple[str, str]]:
        """How many payments the gateway took per (subscription id, period): 1 each means exactly once."""
        return Counter(
            (str(p["notes"]["subscription_id"]), str(p["notes"]["period_start"])) for p in self.captured().values()
        )

    def calls_per_key(self) -> Counter[str]:
        with self.lock:
            return Counter(self.calls)

    # Serving it -----------------------------------------------------------------------------

    def install(self, httpserver: Any) -> None:
        """Serve it from a pytest-httpserver HTTPServer."""
        from werkzeug import Request, Response

        def handler(request: Request) -> Response:
            status, data = self.route(
                request.method, request.path, request.headers, request.get_json(silent=True) or {}
            )
            return Response(json.dumps(data), status=status, content_type="application/json")

        httpserver.expect_request(re.compile(r"^/v1/(orders|payments)(/.*)?$")).respond_with_handler(handler)


def _basic_auth_user(header: str) -> str:
    """The user name of an HTTP basic Authorization header ("" when there is none): Razorpay's key id."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(encoded).decode().partition(":")[0]
    except ValueError:
        return ""


@contextmanager
def serve(stand_in: GatewayStandIn, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `stand_in` from a threaded stdlib HTTP server (no request log: the benchmark sends 100,000); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._answer("POST")

        def do_GET(self) -> None:
            self._answer("GET")

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = {}
            status, data = stand_in.route(method, self.path, self.headers, body if isinstance(body, dict) else {})
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="gateway-stand-in", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def keys_of(subscriptions: Iterable[Subscription], period: date) -> set[str]:
    return {f"sub_{s.pk}_{period:%Y%m%d}" for s in subscriptions}
