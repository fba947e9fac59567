"""The guides' process lines (worker variants, beat, Flower, runserver, curl, redis-cli, purge), as written.

Translations: `celery -A <their app>` is `celery -A config` (DESIGN.md, Layout);
`python scripts/celery_manager.py` is `python manage.py celery_manager` (Entry points: CLI);
fixed ports (8000, 5555, 6379) are free ports here, because other runs on this machine may hold
them; the admin endpoints are staff only (DESIGN.md, Entry points), so curl gets `-u user:password`.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from core.models import JobRun, User
from core.scheduler import SchedulerService
from tests.e2e.conftest import ROOT, CeleryProcess, wait_for
from tests.seeds.conftest import bash_argv, free_port, guide_env, run_shell
from tests.seeds.translate import lines, translate

pytestmark = pytest.mark.e2e


@pytest.fixture
def guide_process(transactional_db: Any, purge_broker: None, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    started: list[CeleryProcess] = []

    def start(
        script: str, name: str, *, ready: str | None = " ready.", timeout: float = 45, **env: str
    ) -> CeleryProcess:
        proc = CeleryProcess(bash_argv(script), guide_env(**env), tmp_path / f"{name}.log")
        started.append(proc)
        if ready:
            wait_for(lambda: ready in proc.output(), timeout=timeout, message=f"{name}: {ready!r}; log {proc.log}")
        return proc

    yield start
    for proc in started:
        proc.stop()


def banner(proc: CeleryProcess) -> tuple[str, list[str]]:
    """The worker banner's concurrency line and its queue names."""
    text = proc.output()
    concurrency = re.search(r"\.> concurrency: (.+)", text)
    assert concurrency, text
    return concurrency.group(1).strip(), re.findall(r"\.> (\S+)\s+exchange=", text)


def test_every_worker_variant_of_the_guides_starts_with_its_pool_queues_and_log(
    guide_process: Callable[..., CeleryProcess], tmp_path: Path
) -> None:
    every_queue = sorted(settings.JOB_QUEUES)
    logfile = tmp_path / "worker.log"
    # (the translated line, expected concurrency, expected queues); one line per distinct command
    variants: list[tuple[str, str, list[str]]] = [
        (lines(("001", 8))[0], "2 (solo)", every_queue),  # the banner shows -c's default; solo runs one at a time
        (lines(("002", 2))[0], "2 (prefork)", every_queue),
        (lines(("002", 11))[-1], "2 (prefork)", every_queue),  # --loglevel=debug
        (lines(("004", 16))[0], "2 (solo)", every_queue),  # --loglevel=debug --pool=solo
        *[(line, "2 (prefork)", [line.split("-Q ")[1].split()[0]]) for line in lines(("003", 1))],
        *[
            (line, f"{line.split('--concurrency=')[1].split()[0]} (prefork)", [line.split("-Q ")[1].split()[0]])
            for line in lines(("003", 2))
        ],
    ]
    assert len(variants) == 10
    for n, (line, concurrency, queues) in enumerate(variants):
        proc = guide_process(line, f"variant-{n}")
        assert banner(proc) == (concurrency, sorted(queues)) or banner(proc) == (concurrency, queues), line
        if "--loglevel=debug" in line:
            assert "[DEBUG/" in proc.output() or "DEBUG" in proc.output(), line
        proc.stop()
    # The logfile line (seed 001 block 20): /var/log/celery needs root, so a temporary path
    proc = guide_process(
        translate(("001", 20), {"/var/log/celery/worker.log": str(logfile)}), "variant-logfile", ready="[queues]"
    )
    wait_for(lambda: logfile.exists() and " ready." in logfile.read_text(), timeout=45, message=f"{logfile}")
    proc.stop()
    # celery_manager worker (seed 002 block 3): the same worker through manage.py
    [manager_worker] = [line for line in lines(("002", 3)) if line.endswith(" worker")]
    proc = guide_process(manager_worker, "manager-worker")
    assert banner(proc)[1] == every_queue


def test_beat_as_the_guides_start_it_sends_the_database_schedules(
    guide_process: Callable[..., CeleryProcess],
) -> None:
    # Given the default beat entries and a worker on every queue
    SchedulerService.setup_default_tasks()
    fast = {"CELERY_BEAT_MAX_LOOP_INTERVAL": "1"}
    guide_process("celery -A config worker --loglevel=info", "worker")

    def beat_runs() -> int:
        return JobRun.objects.filter(source="beat", status="succeeded").count()

    # When the plain line of seeds 001-004 runs: our scheduler is the database one (DESIGN.md)
    plain = lines(("001", 9))[0]
    assert plain == lines(("003", 3))[0] == lines(("004", 6))[0] == lines(("002", 2))[1] == lines(("003", 5))[0]
    beat = guide_process(plain, "beat-plain", ready="beat: Starting...", **fast)
    wait_for(lambda: beat_runs() >= 1, timeout=40, message=f"a beat run; log {beat.log}")
    assert "core.beat.LeaderScheduler" in beat.output()
    beat.stop()
    assert not (ROOT / "celerybeat-schedule").exists()  # seed 002 block 13's file is never written

    # And the line with django-celery-beat's scheduler named (seeds 000 block 2, 003 block 4)
    before = beat_runs()
    named = translate(("000", 2))
    assert "--scheduler django_celery_beat.schedulers:DatabaseScheduler" in named
    beat = guide_process(named, "beat-named", ready="beat: Starting...", **fast)
    wait_for(lambda: beat_runs() > before, timeout=40, message=f"a beat run; log {beat.log}")
    beat.stop()
    # it works for one beat, and says what a second one would do without the leader lease
    assert "a second beat would send every slot again" in beat.output()

    # And debug logging (seed 002 block 13's restart line)
    beat = guide_process(lines(("002", 13))[-1], "beat-debug", ready="DEBUG", **fast)
    beat.stop()


def test_a_worker_with_embedded_beat_runs_the_schedules(guide_process: Callable[..., CeleryProcess]) -> None:
    SchedulerService.setup_default_tasks()
    for key in [("001", 10), ("004", 7)]:
        before = JobRun.objects.filter(source="beat").count()

        def more(before: int = before) -> bool:
            return JobRun.objects.filter(source="beat").count() > before

        proc = guide_process(translate(key), f"worker-beat-{key[0]}", CELERY_BEAT_MAX_LOOP_INTERVAL="1")
        wait_for(
            more,
            timeout=40,
            message=f"a beat run from {key}; log {proc.log}",
        )
        proc.stop()


def test_flower_as_the_guides_start_it_asks_for_the_password_from_flower_basic_auth(
    guide_process: Callable[..., CeleryProcess],
) -> None:
    auth = "ops:flower-pw-1"
    starts = [
        (translate(("000", 10)), {}),  # no port: FLOWER_PORT picks one
        (lines(("001", 19))[-1], {}),
        (lines(("003", 10))[0], {"5555": ""}),
        (lines(("002", 2))[-1], {"5555": ""}),
        # celery_manager flower passes --port 5555 itself: the free port goes on its line
        (next(line for line in lines(("002", 3)) if line.endswith(" flower")) + " --port=5555", {"5555": ""}),
    ]
    for n, (line, placeholders) in enumerate(starts):
        port = free_port()
        # `pip install flower`: it is in requirements.txt already; no network here
        script = "\n".join(x for x in line.splitlines() if not x.startswith("pip install"))
        script = script.replace("5555", str(port)) if placeholders else script
        proc = guide_process(
            script, f"flower-{n}", ready=None, FLOWER_BASIC_AUTH=auth, FLOWER_PORT=str(port), FLOWER_ADDRESS="127.0.0.1"
        )
        url = f"http://127.0.0.1:{port}/"

        def status(headers: dict[str, str], url: str = url) -> int:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return e.code
            except OSError:
                return 0

        wait_for(lambda: status({}) == 401, timeout=30, message=f"{line}: 401 without a password; log {proc.log}")
        token = base64.b64encode(auth.encode()).decode()
        assert status({"Authorization": f"Basic {token}"}) == 200, line
        proc.stop()


def test_runserver_and_the_pricing_curls_answer_as_the_guides_show(
    guide_process: Callable[..., CeleryProcess],
) -> None:
    User.objects.create_user(username="admin", password="pw-admin-1", is_staff=True)
    port = free_port()
    # Seed 000 block 3 (and seed 004 block 4's runserver line): on a free port instead of 8000
    web = guide_process(translate(("000", 3), {"0.0.0.0:8000": f"127.0.0.1:{port}"}), "web", ready="Quit the server")
    base = f"http://127.0.0.1:{port}"
    assert lines(("004", 4)) == ["python manage.py runserver"]

    def curl(line: str, *, auth: bool) -> tuple[int, Any]:
        line = line.replace("http://localhost:8000", base)
        line = line.replace("curl ", "curl -s -w '\\n%{http_code}' " + ("-u admin:pw-admin-1 " if auth else ""), 1)
        done = run_shell(line)
        body, code = done.stdout.rsplit("\n", 1)
        return int(code), json.loads(body)

    [async_line, sync_line] = lines(("002", 4))
    # As written (no credentials): the API is staff only, 401 in JSON
    code, body = curl(async_line, auth=False)
    assert code == 401 and set(body) == {"detail", "errors"}
    # With the admin's credentials: queued (202) with where to watch it, and inline (200) with the summary
    code, queued = curl(async_line, auth=True)
    assert code == 202 and queued["status"] == "queued", queued
    code, inline = curl(sync_line, auth=True)
    assert code == 200 and inline["status"] == "succeeded" and "summary" in inline, inline
    [status_line] = lines(("002", 5), {"{task_id}": queued["task_id"]})
    code, status = curl(status_line, auth=True)
    assert code == 200 and status["task_id"] == queued["task_id"] and status["state"] == "PENDING", status
    assert "Quit the server" in web.output()


def test_redis_server_starts_and_redis_cli_ping_answers_pong(tmp_path: Path) -> None:
    # `redis-server` (seed 000 block 0) on a free port: the machine's Redis holds 6379
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        ping_lines = {
            line
            for key in [("001", 22), ("002", 11), ("003", 13), ("004", 15)]
            for line in lines(key)
            if line.startswith("redis-cli ping")
        }
        assert ping_lines == {"redis-cli ping"}
        wait_for(lambda: run_shell(f"redis-cli -p {port} ping").stdout == "PONG\n", timeout=10, message="redis-server")
        # Seed 002 block 11's import check
        [check] = [line for line in lines(("002", 11)) if line.startswith("python -c")]
        done = run_shell(check)
        assert re.fullmatch(r"<Celery config at 0x[0-9a-f]+>\n", done.stdout), done.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_purge_asks_first_then_empties_the_queues(transactional_db: Any, purge_broker: None) -> None:
    from config.celery import app

    app.send_task("core.beat_heartbeat")  # routed to `default`; no worker runs here
    [purge] = [line for line in lines(("002", 12)) if line.endswith(" purge")]
    refused = run_shell(purge, stdin="no\n")
    assert "Are you sure" in refused.stdout and "Purged" not in refused.stdout
    done = run_shell(purge, stdin="yes\n")
    assert done.returncode == 0 and "Purged 1 message" in done.stdout, done.stdout + done.stderr
    # celery_manager purge (seed 002 block 3): not a terminal here, so it refuses without --yes
    [manager] = [line for line in lines(("002", 3)) if line.endswith(" purge")]
    refused = run_shell(manager)
    assert refused.returncode != 0 and "--yes" in (refused.stdout + refused.stderr)


def test_a_worker_without_redis_says_it_cannot_connect(guide_process: Callable[..., CeleryProcess]) -> None:
    # Seed 004 block 14 shows the error; our worker logs Celery's own words for it
    port = free_port()
    proc = guide_process(
        "celery -A config worker --loglevel=info",
        "no-redis",
        ready="Cannot connect to redis://",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0",
    )
    assert "Connection refused" in proc.output()
