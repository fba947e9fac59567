"""Real `celery worker` and `celery beat` processes against the test PostgreSQL and Redis.

Tests here use `transactional_db` so that what they write is committed and visible
to the worker processes, which connect to the same test database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
ALL_QUEUES = ",".join(settings.JOB_QUEUES)


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, message: str = "") -> Any:
    """Poll until `predicate()` is truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")


def process_env(**extra: str) -> dict[str, str]:
    from urllib.parse import quote

    db = connection.settings_dict
    credentials = quote(db["USER"], safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else "")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _end_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started it dies (Linux).

    A test run or benchmark killed by a timeout then leaves no worker behind to eat the
    next run's messages.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class CeleryProcess:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("w")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_end_with_parent,  # only a prctl call: safe between fork and exec
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._fh.close()


@pytest.fixture
def purge_broker() -> Iterator[None]:
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    assert int(settings.CELERY_BROKER_URL.rsplit("/", 1)[-1]) >= 2
    r.flushdb()
    yield
    r.flushdb()


@pytest.fixture
def start_worker(transactional_db: Any, purge_broker: None, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    started: list[CeleryProcess] = []

    def start(
        queues: str = ALL_QUEUES, concurrency: int = 2, name: str = "w1", pool: str = "prefork", **env: str
    ) -> CeleryProcess:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-l",
            "info",
            *(["-Q", queues] if queues else []),  # "" starts a bare worker: every declared queue
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
        proc = CeleryProcess(argv, process_env(**env), tmp_path / f"worker-{name}.log")
        started.append(proc)
        from config.celery import app

        if env.get("CELERY_BROKER_URL", settings.CELERY_BROKER_URL) != settings.CELERY_BROKER_URL:
            # A broker of the test's own (a private Redis): this process cannot ping through it.
            wait_for(lambda: " ready." in proc.output(), timeout=30, message=f"worker {name} ready; log {proc.log}")
            return proc
        wait_for(
            lambda: any(f"{name}@" in host for reply in app.control.ping(timeout=0.5) for host in reply),
            timeout=30,
            message=f"worker {name} to answer a ping; log:\n{proc.log}",
        )
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_beat(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    started: list[CeleryProcess] = []

    def start(name: str = "beat", **env: str) -> CeleryProcess:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-l",
            "debug",
            "--pidfile",
            str(tmp_path / f"{name}.pid"),
        ]
        proc = CeleryProcess(argv, process_env(CELERY_BEAT_MAX_LOOP_INTERVAL="1", **env), tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
