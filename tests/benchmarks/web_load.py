"""`make bench` (or `python -m tests.benchmarks web_load`): 10,000 requests against `make run`'s web process.

The Procfile's web line (runserver) on a fresh SQLite database, eight keep-alive clients on
loopback, the request mix of tests/security/web_load.py. Prints throughput, p50/p95/p99 and
the statuses; fails (exit 1) on any 5xx or transport error. WEB_LOAD_REQUESTS and
WEB_LOAD_CLIENTS change the size.
"""

from __future__ import annotations

import os
import sys

from tests.security.web_load import run_load, web_process


def main() -> None:
    total = int(os.environ.get("WEB_LOAD_REQUESTS", "10000"))
    clients = int(os.environ.get("WEB_LOAD_CLIENTS", "8"))
    with web_process() as server:
        result = run_load(server, total, concurrency=clients)
    print(f"clients: {clients}")
    print(result.report(), flush=True)
    if result.server_errors or result.errors:
        print(f"FAILED: {result.server_errors} 5xx, {len(result.errors)} transport errors: {result.errors[:5]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
