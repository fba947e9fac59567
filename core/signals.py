from __future__ import annotations

from typing import Any

from celery.signals import task_revoked


@task_revoked.connect
def close_revoked_jobrun(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    from core.services.jobruns import jobrun_mark_revoked

    if request is not None and getattr(request, "id", None):
        jobrun_mark_revoked(task_id=request.id)
