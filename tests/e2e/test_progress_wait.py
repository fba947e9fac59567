"""`manage.py jobs run --wait` against a real worker: it follows the run's progress from the database."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.e2e


def test_jobs_run_wait_follows_a_queued_run_to_its_end(start_worker: Any) -> None:
    start_worker()
    out = io.StringIO()
    call_command("jobs", "run", "sleep", "--param", "seconds=3", "--wait", "--timeout", "60", stdout=out)
    text = out.getvalue()
    assert "Queued sleep" in text and "sleep succeeded" in text
    shown = [line for line in text.splitlines() if line.startswith("progress ")]
    # Seen while it ran, from the database: at least one step short of the end, then 100%.
    assert any("/3" in line and not line.endswith("3/3") for line in shown), text
    assert shown[-1].endswith("100.0% 3/3")


def test_jobs_run_wait_gives_up_at_its_timeout_and_says_the_run_goes_on(transactional_db: Any) -> None:
    with pytest.raises(CommandError) as raised:  # no worker: the run stays queued
        call_command("jobs", "run", "sleep", "--param", "seconds=1", "--wait", "--timeout", "1", stdout=io.StringIO())
    assert "still queued" in str(raised.value) and raised.value.returncode == 3
