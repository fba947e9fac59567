from __future__ import annotations

from typing import Any

from celery import shared_task

from payments.services.rates import ExchangeRateFeedUnavailable


# Only an unreachable or overloaded feed is retried, 3 times, with a backoff of 1, 2, then
# 4 minutes; the jitter makes each retry come anywhere between 0 and that backoff, so many
# workers do not retry in step. A feed answering garbage or a 4xx fails at once (reason in JobRun).
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
