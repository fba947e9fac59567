from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Job platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import signals  # noqa: F401  (revoked tasks close their JobRun)
