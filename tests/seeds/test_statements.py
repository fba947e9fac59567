"""Blocks that are not commands to run here (settings excerpts, env files, code examples), checked for what they state.

Translations as in tests/seeds/translate.py; each test names the guide's block it checks.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from config.celery import app
from core.scheduler import SchedulerService
from tests.e2e.conftest import ROOT
from tests.seeds.conftest import guide_env
from tests.seeds.translate import translate


def settings_in_a_new_process(code: str, **env: str) -> str:
    """What a process started with `env` sees (settings are read once, at start)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings as s; {code}"],
        cwd=ROOT,
        env={**guide_env(), "DJANGO_SETTINGS_MODULE": "config.settings.test", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_packages_the_guides_install_are_pinned_and_installed() -> None:
    # seed 001 blocks 0 and 19, seed 003 block 9, seed 004 block 3: `pip install ...` (no network here)
    pinned = (ROOT / "requirements.txt").read_text().lower()
    for name in ("celery", "redis", "django-celery-beat", "flower"):
        assert re.search(rf"^{name}(\[[^\]]*\])?==", pinned, re.M), name
        assert importlib.metadata.version(name)


def test_the_broker_and_result_backend_come_from_the_environment_the_guides_export() -> None:
    # seed 001 block 5 (the `export` lines) and 004 block 1's settings: the names are ours too
    exported = dict(
        line.removeprefix("export ").replace("'", "").split("=", 1)
        for line in translate(("001", 5)).split("\n")
        if line
    )
    seen = settings_in_a_new_process(
        "from config.celery import app; print(app.conf.broker_url, app.conf.result_backend)", **exported
    )
    assert seen == "redis://localhost:6379/0 redis://localhost:6379/0"


def test_the_driver_timeout_and_time_zone_come_from_the_environment() -> None:
    # seed 004 blocks 1 and 8: DRIVER_ASSIGNMENT_TIMEOUT_SECONDS=600; TIME_ZONE (their CELERY_TIMEZONE) Asia/Kolkata
    assert "export DRIVER_ASSIGNMENT_TIMEOUT_SECONDS=600" in translate(("004", 8))
    seen = settings_in_a_new_process(
        "print(s.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS, s.CELERY_TIMEZONE)",
        DRIVER_ASSIGNMENT_TIMEOUT_SECONDS="600",
        TIME_ZONE="Asia/Kolkata",
    )
    assert seen == "600 Asia/Kolkata"
    assert settings_in_a_new_process("print(s.DRIVER_ASSIGNMENT_TIMEOUT_SECONDS)") == "300"


def test_seed_003s_environment_names_are_read() -> None:
    # seed 003 block 17: SENDGRID_FROM_EMAIL and TWILIO_PHONE_NUMBER are fallbacks of ours
    env = dict(line.split("=", 1) for line in translate(("003", 17)).splitlines() if line and not line.startswith("#"))
    seen = settings_in_a_new_process(
        "print(s.DEFAULT_FROM_EMAIL, s.TWILIO_FROM_NUMBER, s.EMAIL_PROVIDER, s.SMS_PROVIDER)",
        **{k: env[k] for k in ("SENDGRID_FROM_EMAIL", "TWILIO_PHONE_NUMBER", "EMAIL_PROVIDER", "SMS_PROVIDER")},
        DEFAULT_FROM_EMAIL="",
        TWILIO_FROM_NUMBER="",
    )
    assert seen == "noreply@indostarnaturals.com +1234567890 sendgrid twilio"


def test_the_celery_settings_the_guides_show_are_ours() -> None:
    # seed 002 block 6, seed 001 block 24, DESIGN.md's Celery settings
    assert (app.conf.task_time_limit, app.conf.task_soft_time_limit) == (30 * 60, 25 * 60)
    assert app.conf.worker_max_tasks_per_child == 1000
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    # prefetch is 1, not the guide's 4: with acks_late a long sweep must not hold queued work (DESIGN.md)
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_acks_late
    # seed 001 block 24: CELERY_TASK_TIME_LIMIT is the settings name of the hard limit
    namespace: dict[str, Any] = {}
    exec(translate(("001", 24)), namespace)
    assert namespace["CELERY_TASK_TIME_LIMIT"] == 3600
    from django.conf import settings

    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT


@pytest.mark.django_db
def test_the_guides_schedules_are_the_database_entries_after_setup() -> None:
    # seed 002 block 7 (hourly recompute), seed 004 block 1 (driver check every 60 s),
    # seed 000's "What's Scheduled", seed 003's carts 02:00 / tokens 03:00 / audit logs off
    SchedulerService.setup_default_tasks()
    recompute = PeriodicTask.objects.get(name="discount_recompute")
    assert recompute.task == "payments.recompute_all_discounts"
    assert (recompute.crontab.minute, recompute.crontab.hour) == ("0", "*")
    driver = PeriodicTask.objects.get(name="driver_assignment_expiry")
    assert (driver.task, driver.interval.every, driver.interval.period) == (
        "logistics.check_expired_driver_assignments",
        60,
        "seconds",
    )
    carts = PeriodicTask.objects.get(name="expired_carts_cleanup")
    assert (carts.crontab.minute, carts.crontab.hour) == ("0", "2")
    assert not PeriodicTask.objects.get(name="audit_logs_cleanup").enabled


@pytest.mark.django_db
def test_migrate_as_written_leaves_the_beat_tables_in_place() -> None:
    # seed 001 block 4: `python manage.py migrate`
    [line] = translate(("001", 4)).split("\n")[:1]
    out = io.StringIO()
    call_command(*line.split()[2:], stdout=out)
    assert "No migrations to apply." in out.getvalue()
    assert PeriodicTask.objects.model._meta.db_table == "django_celery_beat_periodictask"


def test_the_guides_task_examples_define_working_tasks_on_our_app() -> None:
    # seed 001 blocks 17, 27, 28 (one module's worth: 27 uses 17's logger), seed 002 blocks 9 and 10
    namespace: dict[str, Any] = {}
    exec(translate(("001", 17)), namespace)
    exec("from celery import shared_task\n" + translate(("001", 27)), namespace)
    exec(translate(("001", 28)), namespace)
    assert namespace["long_running_task"].time_limit == 300
    assert namespace["my_task"].apply().status == "SUCCESS"
    assert namespace["process_file_upload"].max_retries == 3
    # 002 block 9 defines the task on our app; block 10 runs in the same shell. Eager: no worker
    # imports a task defined in a shell, so the body runs here (apply_async's countdown is moot).
    exec(translate(("002", 9)), namespace)
    assert namespace["my_custom_task"].name in app.tasks
    app.conf.task_always_eager = True
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            # the guide's app/tasks.py is this shell here: block 9 defined the task above
            exec(translate(("002", 10), {"from app.tasks import my_custom_task": ""}), namespace)
    finally:
        app.conf.task_always_eager = False
    assert out.getvalue() == "{'status': 'success'}\n"


def test_the_compose_file_runs_workers_beat_and_flower_on_the_configured_database_and_redis() -> None:
    # seed 002 block 1, seed 003 blocks 7 and 8 (no Docker daemon here: the file is checked)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {
        name: " ".join(s.get("command", "")) if isinstance(s.get("command"), list) else s.get("command", "")
        for name, s in compose["services"].items()
    }
    assert any("celery -A config worker" in c or "celery_manager worker" in c for c in commands.values()), commands
    assert any("beat" in c for c in commands.values()), commands
    assert any("flower" in c for c in commands.values()), commands
    assert {"postgres", "redis"} <= set(compose["services"])


def test_the_procfile_runs_web_workers_beat_and_flower() -> None:
    # the diagrams (seed 002 block 0, seed 004 block 0): a web app, Redis, workers and beat
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ": " in line)
    assert {"web", "worker", "notifications", "beat", "flower"} <= set(procfile)
    assert "celery -A config beat" in procfile["beat"]


def test_the_guides_eager_test_setting_is_not_ours() -> None:
    # seed 001 block 21's `manage.py test` with CELERY_TASK_ALWAYS_EAGER: our tests are pytest with
    # real workers (DESIGN.md, Stack: tests); nothing runs eagerly behind a test's back.
    from django.conf import settings

    assert not getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)
    assert "pytest" in (ROOT / "requirements-dev.txt").read_text()


def test_the_guides_copies_match_the_shared_guides() -> None:
    from tests.seeds.blocks import SHARED_GUIDES, guide_files

    if not SHARED_GUIDES.is_dir():
        pytest.skip("no /work/shared/seeds on this machine: the copies in tests/seeds/guides are the reference")
    for copy in guide_files():
        assert copy.read_text() == (SHARED_GUIDES / copy.name).read_text(), (
            f"{copy.name} changed: update the copy and the registry"
        )
    assert sorted(p.name for p in guide_files()) == sorted(p.name for p in Path(SHARED_GUIDES).glob("00[0-4]_*.txt"))
