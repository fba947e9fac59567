"""Fixtures for running the seed guides' snippets: the e2e process fixtures, a shell like the guide's."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.e2e.conftest import ROOT, process_env, purge_broker, start_beat, start_worker

__all__ = ["purge_broker", "start_beat", "start_worker"]

VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def guide_env(**extra: str) -> dict[str, str]:
    """The guides' prerequisite "Python venv active", on the test database and Redis."""
    env = process_env(**extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(ROOT / ".venv")
    return env


def run_shell(
    script: str, *, timeout: float = 60, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a translated bash block as a user would paste it, from the repository root."""
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=guide_env(**env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bash_argv(script: str) -> list[str]:
    """argv for a long-running block (a worker, beat, Flower): bash runs it and execs the last command."""
    return ["bash", "-c", script]


def log_path(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}.log"
