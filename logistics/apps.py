from __future__ import annotations

from django.apps import AppConfig


class LogisticsConfig(AppConfig):
    name = "logistics"
    default_auto_field = "django.db.models.BigAutoField"
