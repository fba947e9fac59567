"""scripts/run.py: what `make run` runs in the foreground."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "scripts" / "run.py")]


def test_one_process_ending_stops_the_others_and_says_which(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"sleeper: sh -c 'echo $$ > {pidfile}; exec sleep 60'\n"
        "beat: sh -c 'sleep 1; echo beat lost its database >&2; exit 3'\n"
    )
    started = time.monotonic()
    done = subprocess.run([*RUN, "start", str(procfile)], capture_output=True, text=True, timeout=30)

    assert done.returncode == 3
    assert time.monotonic() - started < 15  # the sleeper did not run out its 60 s
    assert "beat lost its database" in done.stdout
    assert "make run stopped: beat.1 ended (exit code 3)" in done.stderr
    sleeper = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(sleeper):  # pragma: no cover - the failure being tested for
        os.kill(sleeper, 9)
        raise AssertionError("the other process was left running")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_processes_see_the_exported_environment_not_a_dot_env(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("show: sh -c 'echo auth=$FLOWER_BASIC_AUTH'\n")
    env = {**os.environ, "FLOWER_BASIC_AUTH": "operator:exported"}
    done = subprocess.run([*RUN, "start", str(procfile)], capture_output=True, text=True, timeout=30, env=env)
    assert "auth=operator:exported" in done.stdout
    # A process that ends with 0 still stops make run, and says so.
    assert "make run stopped: show.1 ended (exit code 0)" in done.stderr


def test_dot_env_only_fills_in_what_is_not_exported(tmp_path: Path, monkeypatch) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    dot_env = tmp_path / ".env"
    dot_env.write_text("# comment\nFLOWER_BASIC_AUTH=admin:file\nNEW_ONE='quoted'\n\nexport THIRD=3\n")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "operator:exported")
    monkeypatch.delenv("NEW_ONE", raising=False)
    monkeypatch.delenv("THIRD", raising=False)
    assert run.env_defaults(dot_env) == {"NEW_ONE": "quoted", "THIRD": "3"}
