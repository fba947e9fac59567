"""The foreground half of `make run`.

    scripts/run.py services   make sure Redis answers (start it when installed)
    scripts/run.py start      start the Procfile's processes until one ends or Ctrl-C

The environment wins over .env (twelve-factor): .env only fills in variables that
are not exported. honcho would do the opposite with its default env file, so it is
given none; each Django process reads .env itself with the same rule
(config/settings/base.py).

When one process ends on its own, the others are stopped with it (a beat without
workers, or workers without beat, would look alive and do nothing), and the last
line says which process ended, with what code, and what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def env_defaults(path: Path) -> dict[str, str]:
    """The KEY=value lines of ``path`` whose key is not already in the environment."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key and key not in os.environ:
            found[key] = value
    return found


def services() -> int:
    env = {**env_defaults(ROOT / ".env"), **os.environ}
    script = str(ROOT / "scripts" / "ensure_services.sh")
    return subprocess.call([script, "redis"], env=env, cwd=ROOT)  # noqa: S603 - our own script


def start(procfile: Path) -> int:
    from honcho.environ import parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    stopped: list[tuple[str, str]] = []

    class WatchingPrinter(Printer):  # type: ignore[misc]
        """Prints as honcho does and remembers which process stopped first."""

        def write(self, message: Any) -> None:
            super().write(message)
            text = message.data if isinstance(message.data, str) else ""
            if message.name == "system" and " stopped (rc=" in text:
                name, _, rest = text.partition(" stopped (rc=")
                stopped.append((name.strip(), rest.rstrip(")\n")))

    manager = Manager(printer=WatchingPrinter(sys.stdout))
    for name, command in parse_procfile(procfile.read_text()).processes.items():
        manager.add_process(f"{name}.1", command, cwd=str(ROOT))
    manager.loop()
    code = manager.returncode if manager.returncode is not None else 1
    if code in (130, 143):  # Ctrl-C or SIGTERM: the operator stopped it
        return 0
    first, rc = stopped[0] if stopped else ("a process", str(code))
    print(
        f"\nmake run stopped: {first} ended (exit code {rc}), so every other process was stopped "
        "with it rather than left running without it.\n"
        f"Its last lines above say why; fix that and run `make run` again "
        f"(or start one process alone: .venv/bin/honcho start -e /dev/null {first.split('.')[0]}).",
        file=sys.stderr,
    )
    return code or 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["services"]:
        return services()
    if argv[:1] == ["start"]:
        procfile = Path(argv[1]) if len(argv) > 1 else ROOT / "Procfile"
        return start(procfile)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
