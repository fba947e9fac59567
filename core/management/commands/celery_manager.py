"""python manage.py celery_manager worker|beat|flower|active|scheduled|registered|stats|purge"""

from __future__ import annotations

import json
import os
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

PROCESSES = {
    "worker": ["worker", "-l", "info", "-Q", ",".join(settings.JOB_QUEUES)],
    "beat": ["beat", "-l", "info", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"],
    "flower": ["flower"],
}
INSPECTIONS = ("active", "scheduled", "registered", "stats", "reserved")


class Command(BaseCommand):
    help = "Start Celery processes, inspect workers, or purge the queues."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=[*PROCESSES, *INSPECTIONS, "purge"])
        parser.add_argument("--queues", "-Q", help="worker: queues to consume (default: all); purge: queues to empty")
        parser.add_argument("--yes", action="store_true", help="purge without asking")
        parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for workers' replies")
        parser.add_argument("--address", default="127.0.0.1", help="flower: interface to listen on")
        parser.add_argument("--port", type=int, default=5555, help="flower: port")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action in PROCESSES:
            self._exec(action, options)
        elif action == "purge":
            self._purge(options)
        else:
            self._inspect(action, options["timeout"])

    def _exec(self, action: str, options: dict[str, Any]) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "config", *PROCESSES[action]]
        if action == "worker" and options["queues"]:
            argv[argv.index("-Q") + 1] = options["queues"]
        if action == "flower":
            if ":" not in settings.FLOWER_BASIC_AUTH:
                raise CommandError("Set FLOWER_BASIC_AUTH=user:password; Flower never runs without a password.")
            # Flower reads FLOWER_BASIC_AUTH itself; on the command line `ps` would show it.
            os.environ["FLOWER_BASIC_AUTH"] = settings.FLOWER_BASIC_AUTH
            argv += [f"--address={options['address']}", f"--port={options['port']}"]
        self.stdout.write(" ".join(argv))
        os.execv(sys.executable, argv)  # noqa: S606  (argv is ours, not user input)

    def _inspect(self, action: str, timeout: float) -> None:
        from celery import current_app as app

        replies = getattr(app.control.inspect(timeout=timeout), action)()
        if not replies:
            raise CommandError(f"No worker answered within {timeout:g}s. Is a worker running? Try: make run")
        self.stdout.write(json.dumps(replies, indent=2, default=str))

    def _purge(self, options: dict[str, Any]) -> None:
        from celery import current_app as app

        queues = (options["queues"] or ",".join(settings.JOB_QUEUES)).split(",")
        if not options["yes"]:
            if not sys.stdin.isatty():
                raise CommandError("Refusing to purge without confirmation: pass --yes.")
            answer = input(f"Delete every waiting message in {', '.join(queues)}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("Nothing purged.")
                return
        total = 0
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in queues:
                try:
                    total += channel.queue_purge(queue) or 0  # type: ignore[attr-defined]
                except Exception as exc:
                    raise CommandError(f"Could not purge {queue}: {exc}") from exc
        self.stdout.write(f"Purged {total} message(s) from {', '.join(queues)}.")
