"""deploy/systemd: the example units start what the Procfile and docker-compose start, and systemd accepts them."""

from __future__ import annotations

import shutil
import subprocess
from configparser import ConfigParser
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"


def unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def test_the_worker_groups_cover_every_queue_once() -> None:
    queues = []
    for env in sorted((UNITS / "workers").glob("*.env")):
        values = dict(line.split("=", 1) for line in env.read_text().splitlines() if line and not line.startswith("#"))
        queues += values["QUEUES"].split(",")
        assert int(values["CONCURRENCY"]) >= 1
    assert sorted(queues) == sorted(settings.JOB_QUEUES)
    target = (UNITS / "marketplace.target").read_text()
    for env in (UNITS / "workers").glob("*.env"):
        assert f"marketplace-worker@{env.stem}.service" in target
    assert "marketplace-beat@1.service" in target and "marketplace-beat@2.service" in target


def test_the_commands_are_the_ones_the_project_runs() -> None:
    worker = unit("marketplace-worker@.service")["Service"]["ExecStart"]
    assert worker.endswith("celery -A config worker -l info -Q ${QUEUES} -c ${CONCURRENCY} -n %i@%%h")
    assert unit("marketplace-beat@.service")["Service"]["ExecStart"].endswith("celery -A config beat -l info")
    assert "gunicorn config.wsgi:application" in unit("marketplace-web.service")["Service"]["ExecStart"]
    assert "celery_manager flower" in unit("marketplace-flower.service")["Service"]["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    venv_bin = Path(settings.BASE_DIR) / ".venv" / "bin"
    if not (venv_bin / "gunicorn").exists():
        pytest.skip("the project's .venv is not where the units expect it")
    etc = tmp_path / "etc"
    (etc / "workers").mkdir(parents=True)
    (etc / "env").write_text("")
    for env in (UNITS / "workers").glob("*.env"):
        shutil.copy(env, etc / "workers" / env.name)
    names = []
    for path in UNITS.glob("*.service"):
        text = path.read_text().replace("/opt/marketplace/.venv/bin", str(venv_bin))
        text = text.replace("/opt/marketplace", str(settings.BASE_DIR)).replace("/etc/marketplace", str(etc))
        # Templates are verified as one instance each.
        name = path.name.replace("@.", "@payments.") if "worker@" in path.name else path.name.replace("@.", "@1.")
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
