"""python manage.py jobs list|status|run KEY [--param k=v] [--sync|--wait]|resume KEY|setup [--reset]"""

from __future__ import annotations

import json
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from core import progress
from core.beat import beat_leader_text
from core.catalog import Job, JobCatalog
from core.errors import AppError, command_error
from core.models import JobRun
from core.scheduler import SchedulerService


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--param takes name=value, got {pair!r}", returncode=2)
        params[name] = value
    return params


def catalog_markdown(jobs: list[Job]) -> str:
    lines = [
        "# Job catalog",
        "",
        "Generated from the `jobs.py` of each app by `python manage.py jobs list --format markdown`;",
        "`tests/core/test_docs.py` fails when this file is stale. Schedules are the defaults that",
        "`python manage.py jobs setup` installs; operators change them in the admin.",
        "",
        "| key | task | queue | default schedule | enabled by default | expires (s) | what it does |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for job in jobs:
        enabled = "yes" if job.enabled and job.schedule else ("no" if job.schedule else "manual only")
        lines.append(
            f"| `{job.key}` | `{job.task}` | `{job.queue}` | {job.schedule_text()} | {enabled} | "
            f"{job.expire_seconds or '-'} | {job.description} |"
        )
    lines += ["", "## Parameters", ""]
    for job in jobs:
        fields = job.param_fields()
        if not fields:
            continue
        lines.append(f"### `{job.key}`")
        lines.append("")
        for f in fields:
            default = "" if f["default"] is None else f" (default {f['default']})"
            lines.append(f"- `{f['name']}` ({f['type']}){default}: {f['help_text']}")
        lines.append("")
    lines += [
        "Trigger any of them with `python manage.py jobs run KEY --param name=value`,",
        "`POST /api/v1/admin/jobs/KEY/trigger/` or `SchedulerService.trigger_manual_update(KEY, {...})`.",
        "",
    ]
    return "\n".join(lines)


WAIT_POLL_SECONDS = 0.5


class ProgressBar:
    """`done / total` on one redrawn line in a terminal; plain lines (at most one a second) otherwise."""

    WIDTH = 30

    def __init__(self, stream: OutputWrapper) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown: tuple[int, int | None] | None = None
        self.last = 0.0

    def update(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if (done, total) == self.shown or (now - self.last < (0.1 if self.tty else 1.0) and not finished):
            return
        self.shown, self.last = (done, total), now
        if total:
            filled = int(self.WIDTH * done / total)
            text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * done / total:5.1f}% {done}/{total}"
        else:
            text = f"{done} done" if total is None else "nothing to do"
        if self.tty:
            self.stream.write(f"\r{text}", ending="")
            self.stream.flush()
        else:
            self.stream.write(f"progress {text}")

    def end(self) -> None:
        if self.tty and self.shown is not None:
            self.stream.write("")


class Command(BaseCommand):
    help = "List, inspect, run and set up the catalog jobs."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        ls = sub.add_parser("list", help="the catalog")
        ls.add_argument("--format", choices=["table", "markdown", "json"], default="table")
        st = sub.add_parser("status", help="enabled, schedule, last and next run, last outcome")
        st.add_argument("key", nargs="?")
        st.add_argument("--json", action="store_true")
        run = sub.add_parser("run", help="run a job now")
        run.add_argument("key")
        run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
        how = run.add_mutually_exclusive_group()
        how.add_argument("--sync", action="store_true", help="run inline, with a progress bar, and print the summary")
        how.add_argument("--wait", action="store_true", help="queue it, follow its progress, and print the summary")
        run.add_argument(
            "--timeout", type=float, default=3600, metavar="SECONDS", help="how long --wait follows the run"
        )
        resume = sub.add_parser("resume", help="resume a job paused after repeated failures")
        resume.add_argument("key")
        setup = sub.add_parser("setup", help="create the missing default beat entries")
        setup.add_argument("--reset", action="store_true", help="also reset edited entries to the defaults")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except AppError as exc:
            raise command_error(exc) from exc

    def _list(self, options: dict[str, Any]) -> None:
        jobs = JobCatalog.all()
        if options["format"] == "markdown":
            self.stdout.write(catalog_markdown(jobs), ending="")
        elif options["format"] == "json":
            rows = [
                {
                    "key": j.key,
                    "task": j.task,
                    "queue": j.queue,
                    "schedule": j.schedule_text(),
                    "enabled": j.enabled,
                    "description": j.description,
                    "params": j.param_fields(),
                }
                for j in jobs
            ]
            self.stdout.write(json.dumps(rows, indent=2, default=str))
        else:
            width = max(len(j.key) for j in jobs)
            for j in jobs:
                self.stdout.write(f"{j.key:<{width}}  {j.queue:<13}  {j.schedule_text():<28}  {j.description}")

    def _status(self, options: dict[str, Any]) -> None:
        result = SchedulerService.get_task_status(options["key"])
        rows = [result] if isinstance(result, dict) else result
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2, default=str))
            return
        leader = beat_leader_text()
        self.stdout.write(f"beat leader: {leader}")
        header = (
            f"{'job':<28} {'enabled':<8} {'schedule':<28} {'runs':>5}  {'last run':<20} {'last status':<11} next run"
        )
        self.stdout.write(header)
        attention: list[str] = []
        for r in rows:
            if r["paused"]:
                attention.append(f"PAUSED {r['key']}: {r['pause_reason']} (resume: manage.py jobs resume {r['key']})")
            if r["late"]:
                critical = " (critical: /health/ is 503)" if r["critical"] else ""
                attention.append(f"LATE   {r['key']}: last run started {r['late_seconds']}s past due{critical}")
            if r["missed_slots"]:
                attention.append(f"MISSED {r['key']}: {r['missed_slots']} slot(s) while no beat was sending")
            enabled = ("paused" if r["paused"] else "yes" if r["enabled"] else "no") if r["scheduled"] else "manual"
            last = r["last_run_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_run_at"] else "never"
            nxt = r["next_run_at"].strftime("%Y-%m-%d %H:%M:%S") if r["next_run_at"] else "-"
            self.stdout.write(
                f"{r['key']:<28} {enabled:<8} {r['schedule']:<28} {r['runs_recorded']:>5}  {last:<20} "
                f"{r['last_status'] or '-':<11} {nxt}"
            )
        for line in attention:
            self.stdout.write(line)

    def _resume(self, options: dict[str, Any]) -> None:
        key = options["key"]
        if not SchedulerService.resume(key, source="cli"):
            raise CommandError(f"{key} is not paused.", returncode=2)
        self.stdout.write(self.style.SUCCESS(f"{key} resumed: beat sends it from its next slot."))

    def _run(self, options: dict[str, Any]) -> None:
        params = _parse_params(options["param"])
        bar = ProgressBar(self.stdout)
        if options["sync"]:
            with progress.listening(bar.update):
                run = SchedulerService.trigger_manual_update(options["key"], params, sync=True, source="cli")
            bar.end()
            self._outcome(run)
            return
        run = SchedulerService.trigger_manual_update(options["key"], params, source="cli")
        self.stdout.write(f"Queued {run.job_key}: task {run.task_id} (job run {run.id}).")
        if not options["wait"]:
            self.stdout.write(f"Follow it: python manage.py jobs status {run.job_key}")
            return
        deadline = time.monotonic() + options["timeout"]
        while run.status not in JobRun.FINISHED:
            if time.monotonic() > deadline:
                bar.end()
                raise CommandError(
                    f"{run.job_key} is still {run.status} after {options['timeout']:g} s; it goes on "
                    f"(follow it: python manage.py jobs status {run.job_key}).",
                    returncode=3,
                )
            time.sleep(WAIT_POLL_SECONDS)
            run.refresh_from_db()
            if run.progress_done is not None or run.progress_total is not None:
                bar.update(run.progress_done or 0, run.progress_total)
        if run.progress_done is not None or run.progress_total is not None:
            bar.update(run.progress_done or 0, run.progress_total)  # the last report, written with the outcome
        bar.end()
        self._outcome(run)

    def _outcome(self, run: JobRun) -> None:
        self.stdout.write(f"{run.job_key} {run.status} in {run.duration_ms} ms")
        if run.summary is not None:
            self.stdout.write(json.dumps(run.summary, indent=2, default=str))
        if run.status in (JobRun.Status.FAILED, JobRun.Status.LOST, JobRun.Status.REVOKED):
            raise CommandError(f"{run.job_key} {run.status}: {run.error}", returncode=1)

    def _setup(self, options: dict[str, Any]) -> None:
        result = SchedulerService.setup_default_tasks(reset=options["reset"])
        for what in ("created", "reset", "kept"):
            if result[what]:
                self.stdout.write(f"{what}: {', '.join(result[what])}")
        self.stdout.write(self.style.SUCCESS("Default schedules are in place."))
