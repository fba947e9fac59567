"""Load each app's demo data (its `demo.py`'s `load_demo_data()`), idempotently."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.utils.module_loading import module_has_submodule


class Command(BaseCommand):
    help = "Load a small demo data set for `make run` (safe to run again)."

    def handle(self, *args: Any, **options: Any) -> None:
        for config in apps.get_app_configs():
            if config.name.startswith("django") or not module_has_submodule(config.module, "demo"):
                continue
            summary = import_module(f"{config.name}.demo").load_demo_data()
            self.stdout.write(f"{config.label}: {summary}")
