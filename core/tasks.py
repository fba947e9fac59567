from __future__ import annotations

from celery import shared_task


@shared_task(name="core.beat_heartbeat", ignore_result=False)
def beat_heartbeat() -> dict[str, float]:
    from core.services.health import beat_heartbeat_record

    return beat_heartbeat_record()


@shared_task(name="core.cleanup_job_runs")
def cleanup_job_runs(older_than_days: int | None = None) -> dict[str, int]:
    from django.conf import settings

    from core.services.jobruns import jobruns_close_lost, jobruns_delete_old

    # Past the hard time limit plus a margin, a `running` run has certainly lost its worker.
    lost = jobruns_close_lost(older_than_seconds=settings.CELERY_TASK_TIME_LIMIT + 600)
    deleted = jobruns_delete_old(older_than_days=older_than_days or settings.JOBRUN_RETENTION_DAYS)
    return {"closed_lost": lost, "deleted": deleted}


@shared_task(name="core.relay_outbox")
def relay_outbox() -> dict[str, int]:
    from core.services.outbox import outbox_relay

    return outbox_relay()


@shared_task(name="core.sleep")
def sleep(seconds: int = 5) -> dict[str, int]:
    """A job that only takes time: for trying the overlap guard and the trigger paths."""
    import time

    from core.progress import Progress

    progress = Progress(total=seconds)
    for _ in range(seconds):
        time.sleep(1)
        progress.advance()
    return {"slept_seconds": seconds}
