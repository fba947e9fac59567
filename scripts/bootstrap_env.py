"""Create .env from .env.example on the first `make run`, with fresh local secrets.

The generated admin and Flower passwords are printed once, here; afterwards they
are in .env (which git ignores).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env_file = ROOT / ".env"
    if env_file.exists():
        return 0
    admin_password = secrets.token_urlsafe(12)
    flower_password = secrets.token_urlsafe(12)
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("DJANGO_SUPERUSER_PASSWORD="):
            line = f"DJANGO_SUPERUSER_PASSWORD={admin_password}"
        elif line.startswith("FLOWER_BASIC_AUTH="):
            line = f"FLOWER_BASIC_AUTH=admin:{flower_password}"
        elif line.startswith("METRICS_BASIC_AUTH="):
            line = f"METRICS_BASIC_AUTH=prometheus:{secrets.token_urlsafe(12)}"
        elif line.startswith("DJANGO_SECRET_KEY="):
            line = f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}"
        lines.append(line)
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)  # it holds the admin password and the secret key
    print("Created .env with local credentials (shown once; they stay in .env):")
    print(f"  admin (http://127.0.0.1:8000/admin/): admin / {admin_password}")
    print(f"  Flower (http://127.0.0.1:5555/):      admin / {flower_password}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
