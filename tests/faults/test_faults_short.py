"""The short fault subset in `make test`: a trial or two of every fault, through the same harness as `make faults`.

The harness runs as its own process (python -m tests.faults --quick): it needs a database and
a Redis of its own, created before Django starts, which a pytest process already set up cannot
give it. What it reports is asserted here: nothing lost, no invariant broken, every fault tried.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
FAULTS = {
    "SIGKILL pool children",
    "PostgreSQL connections terminated",
    "SIGKILL worker main process",
    "Redis restarted empty",
    "soft time limit",
    "hard time limit",
    "poison message",
    "leader beat SIGKILLed (two beats)",
}


def test_a_few_trials_of_every_fault_lose_nothing_and_break_no_invariant(tmp_path: Path) -> None:
    # Given the harness with its own database, Redis, providers, worker and beats
    report = tmp_path / "faults.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # When it runs a few trials of each fault
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults", "--quick", "--no-write", "--json", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert report.exists(), done.stdout[-5000:] + done.stderr[-5000:]
    rows = json.loads(report.read_text())
    # Then every fault was tried, and no trial lost work or broke an invariant
    assert {r["fault"] for r in rows} == FAULTS
    broken = [r for r in rows if r["lost"] or r["violations"]]
    assert not broken, json.dumps(broken, indent=2)
    assert done.returncode == 0, done.stdout[-3000:]
