from __future__ import annotations

from celery import shared_task


@shared_task(name="core.beat_heartbeat", ignore_result=False)
def beat_heartbeat() -> dict[str, float]:
    from core.services.health import beat_heartbeat_record

    return beat_heartbeat_record()


@shared_task(name="core.sleep")
def sleep(seconds: int = 5) -> dict[str, int]:
    """A job that only takes time: for trying the overlap guard and the trigger paths."""
    import time

    time.sleep(seconds)
    return {"slept_seconds": seconds}
