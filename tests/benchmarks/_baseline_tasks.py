"""The notifications benchmark's baseline: one plain Celery task per message, the same HTTP call (not app code).

Loaded into the baseline worker with `--include tests.benchmarks._baseline_tasks`.
"""

from __future__ import annotations

import requests
from celery import shared_task


@shared_task(name="bench.plain_sms", ignore_result=True, acks_late=True)
def plain_sms(url: str, to: str, body: str) -> None:
    """What a straightforward implementation does: POST the SMS, let Celery retry a failure."""
    response = requests.post(
        url, data={"To": to, "Body": body, "From": "+15005550006"}, auth=("AC1", "token"), timeout=10
    )
    response.raise_for_status()
