"""Progress on long work: reported per chunk, stored on the run at most once a second, shown everywhere."""

from __future__ import annotations

import io
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from core import progress
from core.models import JobRun, User
from core.scheduler import SchedulerService

pytestmark = pytest.mark.django_db


def _run(**fields: Any) -> JobRun:
    defaults: dict[str, Any] = {
        "job_key": "sleep",
        "task_name": "core.sleep",
        "task_id": str(uuid.uuid4()),
        "source": "shell",
        "status": "running",
        "started_at": timezone.now(),
    }
    return JobRun.objects.create(**{**defaults, **fields})


def _progress_updates(queries: CaptureQueriesContext) -> int:
    return sum(1 for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "progress_done" in q["sql"])


def test_reports_are_written_at_most_once_a_second_and_the_last_one_when_the_run_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    run = _run()
    with CaptureQueriesContext(connection) as queries, progress.tracking(run.task_id):
        for done in range(1, 301):  # 300 reports within the first second: none written yet
            progress.report_progress(done, 500)
        first_second = _progress_updates(queries)
        clock[0] += 1.5
        progress.report_progress(301, 500)  # a second and a half in: written
        progress.report_progress(302, 500)  # within the next second: kept for later
        after_a_second = _progress_updates(queries)
    assert (first_second, after_a_second) == (0, 1)
    assert _progress_updates(queries) == 2  # and the last value as the run ends
    run.refresh_from_db()
    assert (run.progress_done, run.progress_total) == (302, 500)


def test_a_sweep_every_few_seconds_writes_its_progress_with_its_outcome_only(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with CaptureQueriesContext(connection) as queries:
        run = SchedulerService.trigger_manual_update("outbox_relay", sync=True, source="shell")
    assert run.status == "succeeded"
    progress_writes = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "progress_done" in q["sql"]
    ]
    # No statement of its own: the one outcome UPDATE (status, summary ...) carries it.
    assert len(progress_writes) == 1 and '"status"' in progress_writes[0]
    assert run.progress == {"done": 0, "total": 0, "percent": 100.0, "eta_seconds": None}


def test_phases_of_one_run_add_up_to_one_bar() -> None:
    run = _run()
    seen: list[tuple[int, int | None]] = []
    with progress.listening(lambda done, total: seen.append((done, total))), progress.tracking(run.task_id):
        first = progress.Progress(total=3)
        first.advance(3)
        second = progress.Progress(total=2)
        second.advance(1)
        second.advance(1)
    assert seen == [(0, 3), (3, 3), (3, 5), (4, 5), (5, 5)]


def test_a_report_inside_the_callers_transaction_waits_for_it_to_end() -> None:
    run = _run()
    with progress.tracking(run.task_id):
        with transaction.atomic(), CaptureQueriesContext(connection) as inside:
            progress.report_progress(3, 10)
        assert _progress_updates(inside) == 0  # would hold the run's row lock for the chunk
    run.refresh_from_db()
    assert (run.progress_done, run.progress_total) == (3, 10)


def test_progress_beyond_the_total_or_negative_is_clamped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    run = _run()
    with caplog.at_level(logging.WARNING, logger="core.progress"), progress.tracking(run.task_id):
        progress.report_progress(150, 100)
    run.refresh_from_db()
    assert (run.progress_done, run.progress_total) == (100, 100)
    assert "beyond its total" in caplog.text

    other = _run()
    with caplog.at_level(logging.WARNING, logger="core.progress"), progress.tracking(other.task_id):
        progress.report_progress(-5, 10)
    other.refresh_from_db()
    assert (other.progress_done, other.progress_total) == (0, 10)
    assert "progress -5 is negative" in caplog.text

    with caplog.at_level(logging.WARNING, logger="core.progress"), progress.tracking(_run().task_id):
        assert progress.Progress(total=-3).total == 0
    assert "total -3 is negative" in caplog.text


def test_outside_a_run_reporting_does_nothing() -> None:
    with CaptureQueriesContext(connection) as queries:
        progress.Progress(total=10).advance(5)
    assert _progress_updates(queries) == 0


def test_a_chunked_sweep_reports_each_chunk_and_phases_add_up() -> None:
    from payments.models import Cart
    from payments.services.carts import carts_delete_expired

    customer = User.objects.create_user("shopper")
    other = User.objects.create_user("shopper2")
    old = timezone.now() - timedelta(days=60)
    Cart.objects.bulk_create([Cart(user=customer), Cart(user=other)])
    Cart.objects.update(updated_at=old)
    run = _run(job_key="expired_carts_cleanup", task_name="maintenance.cleanup_expired_carts")
    seen: list[tuple[int, int | None]] = []

    with progress.listening(lambda done, total: seen.append((done, total))), progress.tracking(run.task_id):
        carts_delete_expired(days_old=30, chunk_size=1)

    assert seen == [(0, 2), (1, 2), (2, 2)]
    run.refresh_from_db()
    assert (run.progress_done, run.progress_total) == (2, 2)


def test_a_run_of_the_sleep_job_reports_its_seconds() -> None:
    run = SchedulerService.trigger_manual_update("sleep", {"seconds": 2}, sync=True, source="shell")
    assert run.status == "succeeded"
    assert run.progress == {"done": 2, "total": 2, "percent": 100.0, "eta_seconds": None}


def test_the_api_shows_percent_and_an_estimate_of_the_time_left(staff_client: APIClient) -> None:
    run = _run(started_at=timezone.now() - timedelta(seconds=10), progress_done=250, progress_total=1000)

    body = staff_client.get(f"/api/v1/admin/tasks/{run.task_id}/").json()

    shown = body["job_run"]["progress"]
    assert (shown["done"], shown["total"], shown["percent"]) == (250, 1000, 25.0)
    # 250 units took 10 s: 750 more take about 30 s.
    assert 29 <= shown["eta_seconds"] <= 32


def test_a_job_that_reports_nothing_shows_no_progress(staff_client: APIClient) -> None:
    run = SchedulerService.trigger_manual_update("beat_heartbeat", sync=True, source="shell")
    body = staff_client.get(f"/api/v1/admin/tasks/{run.task_id}/").json()
    assert body["job_run"]["status"] == "succeeded" and body["job_run"]["progress"] is None


def test_jobs_run_sync_prints_plain_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    call_command("jobs", "run", "sleep", "--param", "seconds=2", "--sync", stdout=out)
    lines = out.getvalue().splitlines()
    progress_lines = [line for line in lines if line.startswith("progress ")]
    assert progress_lines[0].endswith("0.0% 0/2") and progress_lines[-1].endswith("100.0% 2/2")
    assert "\r" not in out.getvalue()
    assert any(line.startswith("sleep succeeded") for line in lines)


def test_the_bar_redraws_one_line_on_a_terminal() -> None:
    from django.core.management.base import OutputWrapper

    from core.management.commands.jobs import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar(OutputWrapper(screen))
    bar.update(0, 4)
    bar.update(4, 4)
    bar.end()
    assert screen.getvalue() == f"\r[{'.' * 30}]   0.0% 0/4\r[{'#' * 30}] 100.0% 4/4\n"


def test_the_admin_run_page_shows_a_bar_and_links_to_flower(admin_client: Client) -> None:
    run = _run(progress_done=40, progress_total=80, started_at=timezone.now() - timedelta(seconds=4))

    page = admin_client.get(f"/admin/core/jobrun/{run.pk}/change/").content.decode()

    assert '<progress id="run-progress" max="100" value="50">' in page
    assert "50% (40 / 80), about 4" in page
    assert f'href="http://127.0.0.1:5555/task/{run.task_id}"' in page
    assert 'http-equiv="refresh"' in page  # running: it reloads itself

    listing = admin_client.get("/admin/core/jobrun/").content.decode()
    assert '<progress max="100" value="50.0"></progress> 50% (40 / 80)' in listing


def test_a_finished_run_page_does_not_reload(admin_client: Client) -> None:
    run = SchedulerService.trigger_manual_update("sleep", {"seconds": 1}, sync=True, source="shell")
    page = admin_client.get(f"/admin/core/jobrun/{run.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' not in page and "100% (1 / 1)" in page
