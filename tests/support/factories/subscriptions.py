"""Subscriptions test data, and a Razorpay stand-in that counts charges per idempotency key.

The stand-in answers `POST /v1/payments/create/recurring` as the adapter expects: one
payment per idempotency key however often the key is sent (a retried call gets the payment
already made), scripted failures first (`script=[500, 500]`), declines for chosen
subscriptions. Served by pytest-httpserver in the tests (`stand_in.install(httpserver)`) or
by a plain threaded HTTP server in the benchmark (`serve(stand_in)`).
"""

from __future__ import annotations

import json
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
    # Statuses to answer first, one per call, whatever the key (e.g. [500, 500]).
    script: deque[int] = field(default_factory=deque)
    # Subscriptions (notes.subscription_id, as text) whose charges are declined.
    decline: set[str] = field(default_factory=set)
    # Answer "created" (the webhook will tell) instead of "captured".
    pending: bool = False
    # Called with the key before answering (a test may block here to kill the caller mid-call).
    on_call: Callable[[str], None] | None = None
    calls: list[str] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: count(1))

    def answer(self, *, idempotency_key: str, body: dict[str, Any], authorized: bool) -> tuple[int, dict[str, Any]]:
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
            if idempotency_key in self.payments:
                return 200, self.payments[idempotency_key]
            notes = body.get("notes") or {}
            payment_id = f"pay_{next(self._ids):08d}"
            if str(notes.get("subscription_id")) in self.decline:
                declined = {"id": payment_id, "status": "failed", "error_description": "Card declined by the bank"}
                self.payments[idempotency_key] = declined
                return 200, declined
            payment = {
                "id": payment_id,
                "entity": "payment",
                "status": "created" if self.pending else "captured",
                "amount": body.get("amount"),
                "currency": body.get("currency"),
                "receipt": body.get("receipt"),
                "notes": notes,
            }
            self.payments[idempotency_key] = payment
            return 200, payment

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
            status, data = self.answer(
                idempotency_key=request.headers.get("X-Idempotency-Key", ""),
                body=request.get_json(silent=True) or {},
                authorized=request.authorization is not None and bool(request.authorization.username),
            )
            return Response(json.dumps(data), status=status, content_type="application/json")

        httpserver.expect_request(CHARGE_PATH, method="POST").respond_with_handler(handler)


@contextmanager
def serve(stand_in: GatewayStandIn, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `stand_in` from a threaded stdlib HTTP server (no request log: the benchmark sends 100,000); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = {}
            status, data = stand_in.answer(
                idempotency_key=self.headers.get("X-Idempotency-Key", ""),
                body=body if isinstance(body, dict) else {},
                authorized=bool(self.headers.get("Authorization")),
            )
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
