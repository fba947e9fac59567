from __future__ import annotations

from typing import Any

from celery import shared_task

from payments.services.rates import ExchangeRateFeedUnavailable


# Only an unreachable or overloaded feed is retried (about 1, 2, 4 minutes, jittered);
# a feed answering garbage or a 4xx fails at once with the reason in JobRun.
@shared_task(
    name="payments.update_exchange_rates",
    autoretry_for=(ExchangeRateFeedUnavailable,),
    retry_backoff=60,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def update_exchange_rates() -> dict[str, Any]:
    from payments.services.rates import exchange_rates_update

    return exchange_rates_update()
