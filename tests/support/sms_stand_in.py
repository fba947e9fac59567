"""A Twilio stand-in for load and fault tests: a threaded keep-alive HTTP server that counts what it took.

Each request waits `latency` seconds (from its own thread, as a real provider's network
would), then answers 201, or 500 for a `failure_rate` share of requests. `accepted`
counts the accepted requests per message body, so a message sent twice shows; `times`
keeps when each was accepted, for rate-limit checks. The pytest-httpserver fixture
answers one request at a time, which hides concurrency; this one does not.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

TWILIO_ACCOUNT = "AC1"
TWILIO_PATH = f"/2010-04-01/Accounts/{TWILIO_ACCOUNT}/Messages.json"


class SmsStandIn:
    def __init__(self, *, latency: float = 0.05, failure_rate: float = 0.0, seed: int = 7) -> None:
        self.latency = latency
        self.failure_rate = failure_rate
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.times: list[float] = []
        self.requests = 0
        self.last_answer = 0.0
        self.random = random.Random(seed)
        # Set to make the next request hold until it is cleared (a test kills its sender meanwhile).
        self.hold = threading.Event()
        self.held = threading.Event()
        self.url = ""

    def answer(self, body: str) -> int:
        if self.hold.is_set():
            self.held.set()
            while self.hold.is_set():
                time.sleep(0.01)
        time.sleep(self.latency)
        with self.lock:
            self.requests += 1
            self.last_answer = time.perf_counter()
            if self.random.random() < self.failure_rate:
                return 500
            self.accepted[body] += 1
            self.times.append(time.time())
            return 201

    def reset(self, *, failure_rate: float = 0.0) -> None:
        with self.lock:
            self.accepted.clear()
            self.times.clear()
            self.requests = 0
            self.failure_rate = failure_rate

    def sent_twice(self) -> int:
        with self.lock:
            return sum(1 for n in self.accepted.values() if n > 1)

    def env(self) -> dict[str, str]:
        """The worker environment that points the Twilio provider here."""
        return {
            "SMS_PROVIDER": "twilio",
            "TWILIO_BASE_URL": self.url,
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT,
            "TWILIO_AUTH_TOKEN": "token",
            "TWILIO_FROM_NUMBER": "+15005550006",
        }


@contextmanager
def serve(stand_in: SmsStandIn) -> Iterator[str]:
    """Serve `stand_in` on a free loopback port; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            status = stand_in.answer((form.get("Body") or [""])[0])
            raw = b'{"sid": "SMstandin"}' if status == 201 else b"boom"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            # A sender killed mid-request (what the fault tests do) is expected, not an error to print.
            pass

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    thread = threading.Thread(target=server.serve_forever, name="sms-stand-in", daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stand_in.url
    finally:
        server.shutdown()
        server.server_close()
