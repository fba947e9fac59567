"""scripts/ensure_browser.sh, which `make test` runs first: when it cannot install the browser, it says how."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure_browser.sh"


def _run(env: dict[str, str], *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    # Absolute paths: the PATH given to the script may hold neither bash nor setpriv.
    argv = [shutil.which("bash") or "/bin/bash", str(SCRIPT)]
    if as_nobody:
        argv = [
            shutil.which("setpriv") or "/usr/bin/setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *argv,
        ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_it_passes_when_chromium_and_chromedriver_are_there() -> None:
    assert _run(dict(os.environ)).returncode == 0


def test_a_user_who_cannot_install_them_is_told_how_and_it_stops() -> None:
    # Given a PATH with neither chromium nor chromedriver (only what the script itself needs),
    # and a user who may not run apt-get (nobody, when the suite runs as root)
    with tempfile.TemporaryDirectory() as bin_dir:
        os.chmod(bin_dir, 0o755)  # nobody must reach it; pytest's tmp_path is root's alone
        for tool in ("id", "cat"):
            os.symlink(shutil.which(tool) or f"/usr/bin/{tool}", os.path.join(bin_dir, tool))
        # When it runs
        result = _run({"PATH": bin_dir}, as_nobody=os.geteuid() == 0)
    # Then it stops with instructions per platform, and installs nothing
    assert result.returncode == 1, result
    assert "need Chromium and its chromedriver" in result.stderr
    assert "sudo apt-get install chromium chromium-driver" in result.stderr
    assert "CHROMEDRIVER_PATH=" in result.stderr
    assert "installing" not in result.stdout


def test_a_chromedriver_path_that_is_not_there_is_reported_not_replaced(tmp_path: Path) -> None:
    # Given CHROMEDRIVER_PATH pointing nowhere (an operator's own driver, mistyped)
    env = {**os.environ, "CHROMEDRIVER_PATH": str(tmp_path / "no-such-chromedriver")}
    # When it runs, even as root, it does not install Debian's over the operator's choice
    result = _run(env)
    assert result.returncode == 1
    assert "need Chromium and its chromedriver" in result.stderr
    assert "installing" not in result.stdout
