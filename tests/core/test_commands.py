from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.models import JobRun

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out)
    return out.getvalue()


def test_jobs_list_shows_every_job_with_its_queue_and_schedule() -> None:
    out = run("list")
    assert "beat_heartbeat" in out and "every 30 seconds" in out and "default" in out


def test_jobs_run_sync_prints_the_summary_and_records_a_cli_run() -> None:
    out = run("run", "sleep", "--param", "seconds=0", "--sync")

    assert "sleep succeeded" in out
    assert json.loads(out[out.index("{") :]) == {"slept_seconds": 0}
    assert JobRun.objects.get().source == "cli"


def test_jobs_run_with_an_unknown_key_exits_2_with_a_clear_message() -> None:
    with pytest.raises(CommandError) as info:
        run("run", "no_such_job")
    assert info.value.returncode == 2
    assert "Unknown job 'no_such_job'" in str(info.value)
    assert not JobRun.objects.exists()


@pytest.mark.parametrize("param", ["seconds=-3", "seconds=abc", "colour=red", "novalue"])
def test_jobs_run_with_bad_parameters_exits_2_naming_the_field(param: str) -> None:
    with pytest.raises(CommandError) as info:
        run("run", "sleep", "--param", param)
    assert info.value.returncode == 2
    assert param.split("=")[0] in str(info.value)
    assert not JobRun.objects.exists()


def test_jobs_setup_is_idempotent_and_status_lists_the_entries() -> None:
    assert "created: beat_heartbeat" in run("setup")
    assert "kept: beat_heartbeat" in run("setup")

    out = run("status")
    assert "beat_heartbeat" in out and "every 30 seconds" in out


def test_the_cli_process_exits_with_status_2_for_an_unknown_job() -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "jobs", "run", "no_such_job"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        check=False,
    )
    assert result.returncode == 2
    assert "Unknown job 'no_such_job'" in result.stderr


def test_purge_refuses_without_confirmation_when_not_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="--yes"):
        call_command("celery_manager", "purge")


def test_purge_with_yes_empties_the_queues(broker: object) -> None:
    # Given exactly two messages waiting (the `broker` fixture starts from an empty test broker)
    from tests.support.broker import test_broker

    test_broker().rpush("payments", "a", "b")
    out = io.StringIO()

    call_command("celery_manager", "purge", "--yes", "-Q", "payments", stdout=out)

    assert test_broker().llen("payments") == 0
    assert "Purged 2 message(s)" in out.getvalue()


def test_inspect_without_workers_says_so() -> None:
    with pytest.raises(CommandError, match="No worker answered"):
        call_command("celery_manager", "active", "--timeout", "0.3")


def test_flower_refuses_to_start_without_a_password(settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda path, argv: started.append(argv))
    settings.FLOWER_BASIC_AUTH = ""  # type: ignore[attr-defined]

    with pytest.raises(CommandError, match="FLOWER_BASIC_AUTH"):
        call_command("celery_manager", "flower")
    assert started == []


def test_flower_gets_its_password_from_the_environment_not_the_command_line(
    settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    started: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda path, argv: started.append(argv))
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    settings.FLOWER_BASIC_AUTH = "ops:s3cret"  # type: ignore[attr-defined]

    call_command("celery_manager", "flower", stdout=io.StringIO())

    assert started and not any("s3cret" in arg for arg in started[0])
    assert "--address=127.0.0.1" in started[0]
    assert os.environ["FLOWER_BASIC_AUTH"] == "ops:s3cret"
