"""`make faults`: every fault, many trials, the table printed and written to docs/reliability.md.

    python -m tests.faults                 # the full run (about 300 trials)
    python -m tests.faults --quick         # a few trials of each fault (make test runs this)
    python -m tests.faults --json out.json --no-write

Needs PostgreSQL (DATABASE_URL names the server; the harness creates and drops its own
database, marketplace_faults_<pid>) and a `redis-server` binary (started here on a spare
port, killed and restarted empty by the trials). Exit status 1 when a trial lost work or
broke an invariant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]

# Every process (harness, workers, beats) gets these: provider timeouts of 1 s let the
# notification recovery job use a 4-second threshold (three timeouts, one round per batch),
# and the relay re-sends an intent the broker lost after a minute (its minimum).
TUNING = {
    "SMS_TIMEOUT_SECONDS": "1",
    "EMAIL_TIMEOUT_SECONDS": "1",
    "PUSH_TIMEOUT_SECONDS": "1",
    "NOTIFICATIONS_SEND_CONCURRENCY": "50",
    "NOTIFICATIONS_STUCK_AFTER_SECONDS": "4",
    "NOTIFICATIONS_RETRY_BACKOFF_SECONDS": "1",
    "NOTIFICATIONS_SMS_RATE_LIMIT": "",
    "NOTIFICATIONS_EMAIL_RATE_LIMIT": "",
    "NOTIFICATIONS_PUSH_RATE_LIMIT": "",
    "OUTBOX_REDELIVER_AFTER_SECONDS": "60",
    "CELERY_BEAT_MAX_LOOP_INTERVAL": "1",
    "RAZORPAY_KEY_ID": "rzp_test_key",
    "RAZORPAY_KEY_SECRET": "rzp_test_secret",
    "RAZORPAY_TIMEOUT_SECONDS": "2",
    "LOG_LEVEL": "WARNING",
}


def _admin(url: str) -> psycopg.Connection[Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",
        autocommit=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--quick", action="store_true", help="a few trials of each fault")
    parser.add_argument("--minutes", type=float, default=19.0, help="start no trial after this long")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/reliability.md")
    args = parser.parse_args(argv)

    from tests.support.redis_server import RedisServer

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/marketplace")
    name = f"marketplace_faults_{os.getpid()}"
    server, _, _ = base.rpartition("/")
    redis_server = RedisServer()
    redis_server.start()
    os.environ.update(
        TUNING,
        DJANGO_SETTINGS_MODULE="tests.faults.settings",
        DATABASE_URL=f"{server}/{name}",
        CELERY_BROKER_URL=redis_server.url(0),
        REDIS_URL=redis_server.url(1),
    )
    with _admin(base) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    harness = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        from tests.faults.harness import Harness
        from tests.faults.providers import serve
        from tests.faults.trials import run_plan
        from tests.support.factories.subscriptions import serve as serve_gateway

        log_dir = Path(tempfile.mkdtemp(prefix="faults-"))
        harness = Harness(redis_server=redis_server, log_dir=log_dir, seed=args.seed)
        print(f"faults: database {name}, redis {redis_server.url()}, logs {log_dir}, seed {args.seed}", flush=True)
        with serve(harness.providers), serve_gateway(harness.gateway) as gateway_url:
            harness.env = {**TUNING, **harness.providers.env(), "RAZORPAY_BASE_URL": gateway_url}
            harness.env["DJANGO_SETTINGS_MODULE"] = "tests.faults.settings"
            os.environ.update(harness.providers.env())
            started = time.monotonic()
            run_plan(harness, quick=args.quick, minutes=args.minutes)
            elapsed = time.monotonic() - started
        rows = sorted(harness.rows.values(), key=lambda r: (r.fault, r.target))
        table = render(rows)
        print(table, flush=True)
        failed = sum(r.lost + r.violations for r in rows)
        total = sum(r.trials for r in rows)
        print(f"{total} trials in {elapsed / 60:.1f} min; lost or broken: {failed}", flush=True)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
        if not args.no_write:
            write_doc(table, total=total, minutes=elapsed / 60, seed=args.seed)
        return 1 if failed else 0
    finally:
        if harness is not None:
            harness.stop_all()
        from django.db import connections

        connections.close_all()
        with _admin(base) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis_server.kill()


def render(rows: list[Any]) -> str:
    lines = [
        "| fault | target | trials | fault hit work left | lost | duplicated | invariant violations "
        "| worst recovery (s) | recovered past a run's expiry |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.fault} | {r.target} | {r.trials} | {r.landed} | {r.lost} | {r.duplicated} | {r.violations} "
            f"| {r.worst_recovery:.1f} | {r.past_expiry} |"
        )
    keys = ("trials", "landed", "lost", "duplicated", "violations", "past_expiry")
    t = {k: sum(getattr(r, k) for r in rows) for k in keys}
    worst = max((r.worst_recovery for r in rows), default=0.0)
    lines.append(
        f"| **all** | | **{t['trials']}** | {t['landed']} | **{t['lost']}** | {t['duplicated']} "
        f"| **{t['violations']}** | {worst:.1f} | {t['past_expiry']} |"
    )
    examples = [f"- {r.fault} / {r.target}: {e}" for r in rows for e in r.examples]
    if examples:
        lines += ["", "Violations seen (first three per row):", "", *examples]
    return "\n".join(lines)


def write_doc(table: str, *, total: int, minutes: float, seed: int) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    doc = ROOT / "docs" / "reliability.md"
    text = doc.read_text() if doc.exists() else ""
    marker = "<!-- faults:table -->"
    block = (
        f"{marker}\nLast full run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit `{commit or 'unknown'}`, "
        f"{total} trials in {minutes:.1f} minutes, seed {seed} (`make faults`).\n\n{table}\n{marker}"
    )
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)
    print(f"wrote {doc}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
