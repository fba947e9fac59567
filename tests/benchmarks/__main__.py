"""`make bench`: run every benchmark module in this folder (each has a `main()`), one after another.

python -m tests.benchmarks                      # all
python -m tests.benchmarks payment_timeouts     # one
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import django


def main(argv: list[str]) -> int:
    django.setup()
    here = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    for name in names:
        module = importlib.import_module(f"tests.benchmarks.{name}")
        print(f"\n=== {name} ===", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
