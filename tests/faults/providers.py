"""Twilio, SendGrid and FCM at their HTTP boundary: one threaded loopback server that counts what it took.

Each accepted request is counted by its message text (the SMS body, the email subject, the
push title), so a message sent twice shows as a count of 2 and a lost one as missing. None of
the three offers an idempotency key (docs/notifications.md): a send the worker was killed
during may be taken twice, and is counted as a duplicate, never hidden.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.support.sms_stand_in import TWILIO_ACCOUNT, TWILIO_PATH

FCM_PROJECT = "fault-project"


class Providers:
    def __init__(self, *, latency: float = 0.02) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.taken: Counter[str] = Counter()
        self.url = ""

    def reset(self) -> None:
        with self.lock:
            self.taken.clear()

    def accepted(self) -> Counter[str]:
        with self.lock:
            return Counter(self.taken)

    def take(self, *texts: str) -> None:
        time.sleep(self.latency)
        with self.lock:
            self.taken.update(texts)

    def env(self) -> dict[str, str]:
        return {
            "SMS_PROVIDER": "twilio",
            "TWILIO_BASE_URL": self.url,
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT,
            "TWILIO_AUTH_TOKEN": "token",
            "TWILIO_FROM_NUMBER": "+15005550006",
            "EMAIL_PROVIDER": "sendgrid",
            "SENDGRID_API_KEY": "SG.fault",
            "SENDGRID_API_URL": f"{self.url}/v3/",
            "PUSH_PROVIDER": "fcm",
            "FCM_BASE_URL": self.url,
            "FCM_PROJECT_ID": FCM_PROJECT,
            "FCM_ACCESS_TOKEN": "fcm-fault-token",
        }


def _texts(path: str, raw: bytes) -> list[str]:
    """The messages' texts: what the sender wrote, found where each provider's API carries it.

    A SendGrid call carries one message per personalization (the batch path: a subject of
    merge fields, each personalization's `substitutions` filling them), so it counts as many.
    """
    if path == TWILIO_PATH:
        return [(parse_qs(raw.decode()).get("Body") or [""])[0]]
    body: dict[str, Any] = json.loads(raw or b"{}")
    if path == "/v3/mail/send":
        texts = []
        for personalization in body["personalizations"]:
            subject = str(personalization.get("subject") or body.get("subject", ""))
            for field, value in (personalization.get("substitutions") or {}).items():
                subject = subject.replace(field, str(value))
            texts.append(subject)
        return texts
    if path == f"/v1/projects/{FCM_PROJECT}/messages:send":
        return [str(body["message"]["notification"]["title"])]
    raise KeyError(path)


@contextmanager
def serve(providers: Providers) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if len(raw) < length:
                return  # the sender died mid-request: a provider takes no truncated message
            try:
                texts = _texts(self.path, raw)
            except (KeyError, ValueError, IndexError):
                self._answer(404, {"error": f"no such endpoint {self.path}"})
                return
            providers.take(*texts)
            if self.path == TWILIO_PATH:
                self._answer(201, {"sid": "SMfault"})
            elif self.path.startswith("/v3/"):
                self._answer(202, {}, headers={"X-Message-Id": "sg-fault"})
            else:
                self._answer(200, {"name": f"projects/{FCM_PROJECT}/messages/fault"})

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a sender SIGKILLed mid-request is what the faults do

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="providers", daemon=True)
    thread.start()
    providers.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield providers.url
    finally:
        server.shutdown()
        server.server_close()
