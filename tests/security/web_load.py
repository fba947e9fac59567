"""A bounded load generator against `make run`'s web process, on loopback only.

The web process is the Procfile's `web` line (Django's runserver, without its autoreloader),
on a spare port, on a fresh SQLite database, started here and ended by its PID (its process
group). A thread pool sends a fixed mix of requests as
the personas would (anonymous price lookups, carts read and written, escrow lists, a
driver's offers, staff's job list, a bad webhook signature, unknown ids), each on a
keep-alive session, and records each answer's status and latency.

    python -m tests.benchmarks web_load          # 10,000 requests (make bench)
    tests/security/test_load.py                  # 1,000 requests (make test)
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # loopback only: the generator never sends anywhere else

_SEED = """
import json, django
django.setup()
from rest_framework.authtoken.models import Token
from core.models import User
from logistics.models import Driver
from payments.models import EscrowTransaction, Product

def user(name, **extra):
    u = User.objects.create_user(username=name, password=name + "-pw-1", email=name + "@example.com", **extra)
    return u, Token.objects.create(user=u).key

customer, customer_token = user("load-customer")
buyer, buyer_token = user("load-buyer")
seller, _ = user("load-seller")
staff, staff_token = user("load-staff", is_staff=True)
driver_user, driver_token = user("load-driver")
Driver.objects.create(user=driver_user, name="Load driver", phone="+14155550199")
products = [
    Product.objects.create(sku=f"LOAD-{i}", name=f"Load {i}", price="10.00", currency="EUR", stock=10**6)
    for i in range(20)
]
for i in range(30):
    EscrowTransaction.objects.create(buyer=buyer, seller=seller, title=f"Load {i}", amount="100.00", currency="EUR")
print(json.dumps({
    "tokens": {"customer": customer_token, "buyer": buyer_token, "staff": staff_token, "driver": driver_token},
    "products": [p.pk for p in products],
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def procfile_web_command(port: int) -> list[str]:
    """The Procfile's `web` line, listening on `port` instead of 8000, without the autoreloader.

    runserver restarts itself when any source file changes; in a tree others edit while the
    load runs, a restart would drop the connections in flight and count as lost requests.
    """
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web":
            argv = [a.replace(f"{HOST}:8000", f"{HOST}:{port}") for a in shlex.split(command)]
            return [*argv, "--noreload"] if "runserver" in argv else argv
    raise RuntimeError("the Procfile has no web line")


@dataclass
class Server:
    url: str
    seed: dict[str, Any]
    process: subprocess.Popen[bytes]


def _web_env(database: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_READ_DOT_ENV="false",
        DATABASE_URL=f"sqlite:///{database}",
        # The generator is one client address: the per-IP throttles would answer it 429 after
        # 60 requests a minute. They are tested on their own (tests/security/test_limits.py).
        API_THROTTLE_ANON_RATE="1000000/min",
        API_THROTTLE_USER_RATE="1000000/min",
        API_THROTTLE_WEBHOOK_RATE="1000000/min",
        RAZORPAY_WEBHOOK_SECRET="load-test-webhook-secret",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextmanager
def web_process(extra_env: dict[str, str] | None = None, startup_timeout: float = 60) -> Iterator[Server]:
    """Migrate a fresh SQLite database, seed it, start the Procfile's web process; stop it by PID."""
    with tempfile.TemporaryDirectory(prefix="web-load-") as tmp:
        env = _web_env(Path(tmp) / "load.sqlite3", extra_env or {})
        python = sys.executable
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300
        )
        seeded = subprocess.run(
            [python, "-c", _SEED], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True, text=True
        )
        seed = json.loads(seeded.stdout.strip().splitlines()[-1])
        port = free_port()
        log = open(Path(tmp) / "web.log", "wb")  # noqa: SIM115 - closed below, after the process
        process = subprocess.Popen(
            procfile_web_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://{HOST}:{port}"
        try:
            _wait_until_serving(url, process, startup_timeout, Path(tmp) / "web.log")
            yield Server(url=url, seed=seed, process=process)
        finally:
            # Our own process group (start_new_session): the server and anything it started.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
            log.close()


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web process ended with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            requests.get(url + "/api/v1/products/0/price/", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"the web process did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")


@dataclass(frozen=True)
class Call:
    label: str
    method: str
    path: str
    persona: str | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def request_mix(seed: dict[str, Any]) -> list[Call]:
    """One round of the mix; rounds repeat, with the product id cycling."""
    calls = []
    for i, product in enumerate(seed["products"][:10]):
        calls += [
            Call("price (anonymous)", "GET", f"/api/v1/products/{product}/price/"),
            Call("price (anonymous)", "GET", f"/api/v1/products/{seed['products'][-1 - i]}/price/"),
            Call("cart read", "GET", "/api/v1/cart/", "customer"),
            Call("escrow list", "GET", "/api/v1/escrow/transactions/?limit=20", "buyer"),
            Call("driver offers", "GET", "/api/driver/pending-offers", "driver"),
            Call("unknown product (404)", "GET", "/api/v1/products/99999999/price/"),
            Call("anonymous cart (401)", "GET", "/api/v1/cart/"),
            Call("cart write", "POST", "/api/v1/cart/items/", "customer", {"product_id": product, "quantity": 1}),
            Call("job list (staff)", "GET", "/api/v1/admin/jobs/", "staff"),
            Call(
                "webhook, bad signature (400)",
                "POST",
                "/api/v1/webhooks/razorpay/",
                None,
                {"event": "payment.captured"},
                {"X-Razorpay-Signature": "0" * 64},
            ),
        ]
    return calls


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter[int]
    by_label: dict[str, list[float]]
    errors: list[str]

    @property
    def latencies(self) -> list[float]:
        return sorted(x for values in self.by_label.values() for x in values)

    def percentile(self, p: float, values: list[float] | None = None) -> float:
        ordered = sorted(values) if values is not None else self.latencies
        if not ordered:
            return float("nan")
        # nearest rank: the smallest value with at least p % of the values at or below it
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def report(self) -> str:
        lines = [
            f"{self.requests} requests in {self.seconds:.1f} s = {self.requests / self.seconds:.0f}/s; "
            f"p50 {self.percentile(50) * 1000:.0f} ms, p95 {self.percentile(95) * 1000:.0f} ms, "
            f"p99 {self.percentile(99) * 1000:.0f} ms, max {self.latencies[-1] * 1000:.0f} ms",
            "statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())),
            f"5xx: {self.server_errors}; transport errors: {len(self.errors)}",
        ]
        for label, values in sorted(self.by_label.items()):
            lines.append(
                f"  {label:<30} n={len(values):>5}  p50 {self.percentile(50, values) * 1000:6.0f} ms"
                f"  p99 {self.percentile(99, values) * 1000:6.0f} ms"
            )
        return "\n".join(lines)


def run_load(server: Server, total: int, concurrency: int = 8) -> LoadResult:
    """Send `total` requests from `concurrency` threads, each on its own keep-alive session."""
    mix = request_mix(server.seed)
    tokens: dict[str, str] = server.seed["tokens"]
    local = threading.local()
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    by_label: dict[str, list[float]] = {}
    errors: list[str] = []

    def one(n: int) -> None:
        call = mix[n % len(mix)]
        session: requests.Session | None = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        headers = dict(call.headers)
        if call.persona is not None:
            headers["Authorization"] = f"Token {tokens[call.persona]}"
        started = time.perf_counter()
        try:
            response = session.request(call.method, server.url + call.path, json=call.body, headers=headers, timeout=30)
        except requests.RequestException as exc:
            with lock:
                errors.append(f"{call.label}: {exc.__class__.__name__}: {exc}")
            return
        elapsed = time.perf_counter() - started
        with lock:
            statuses[response.status_code] += 1
            by_label.setdefault(call.label, []).append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(total)))
    return LoadResult(total, time.perf_counter() - started, statuses, by_label, errors)
