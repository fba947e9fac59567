"""1,000 requests against `make run`'s web process (the Procfile's web line, on SQLite): no 5xx.

The 10,000-request run with its figures is `make bench` (tests/benchmarks/web_load.py,
docs/performance.md). The bound here is loose on purpose: several suites share two cores.
"""

from __future__ import annotations

from tests.security.web_load import run_load, web_process

REQUESTS = 1000
# More than 10 x the p99 measured at 10,000 requests (docs/performance.md, "Web process under load"):
# several suites share two cores.
P99_BOUND_SECONDS = 2.0


def test_a_thousand_requests_from_eight_clients_get_no_server_error_and_a_bounded_p99() -> None:
    # Given the web process `make run` starts, on a fresh SQLite database
    with web_process() as server:
        # When eight clients send the request mix, 1,000 requests in all
        result = run_load(server, REQUESTS, concurrency=8)
    # Then every request was answered, none with a 5xx, and each kind of answer is the expected one
    assert result.errors == [], result.errors[:5]
    assert result.server_errors == 0, result.report()
    assert sum(result.statuses.values()) == REQUESTS
    assert set(result.statuses) == {200, 201, 400, 401, 404}, result.report()
    assert result.percentile(99) < P99_BOUND_SECONDS, result.report()
