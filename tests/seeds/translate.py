"""The seed guides' names and ours, as DESIGN.md gives them: the only changes a snippet gets.

Each rule says which DESIGN.md line it comes from. `translate()` applies the rules a block
needs and fails when one of them no longer matches the block (the guide changed).
"""

from __future__ import annotations

from collections.abc import Mapping

from tests.seeds.blocks import Block, block

# (seed's text, ours, why) - DESIGN.md is quoted in the reason.
NAMES: tuple[tuple[str, str, str], ...] = (
    # "config/ ... celery app (config/celery.py, so `celery -A config ...` works)"
    ("celery -A designiaBackend ", "celery -A config ", "Layout: the Celery app is config/celery.py"),
    ("celery -A app.core.celery_app ", "celery -A config ", "Layout: the Celery app is config/celery.py"),
    ("celery -A app.celery_app ", "celery -A config ", "Layout: the Celery app is config/celery.py"),
    ("celery -A backend ", "celery -A config ", "Layout: the Celery app is config/celery.py"),
    ("from app.celery_app import celery_app", "from config.celery import app as celery_app", "Layout"),
    # Queues and routing: payments.* (update_exchange_rates and check_payment_timeouts among them) on `payments`.
    ("-Q payment_tasks,marketplace_tasks", "-Q payments", "Queues: `payments` holds payments.*"),
    # Default jobs: task names; the shell imports them from the app's tasks package.
    (
        "from payment_system.Tasks.payment_tasks import check_payment_timeouts_task",
        "from payments.tasks import check_payment_timeouts as check_payment_timeouts_task",
        "Default jobs: payment_timeouts -> payments.check_payment_timeouts",
    ),
    (
        "from payment_system.Tasks.payment_tasks import cancel_expired_order",
        "from payments.tasks import cancel_expired_order",
        "Default jobs: payments.cancel_expired_order(order_id)",
    ),
    (
        "from payment_system.services.celery_scheduler_service import CelerySchedulerService",
        "from core.scheduler import SchedulerService as CelerySchedulerService",
        "The job catalog: core.scheduler.SchedulerService, usable from manage.py shell",
    ),
    ("'payment_system' in t", "'payments.' in t", "Default jobs: payments tasks are named payments.*"),
    ("from users.tasks import", "from payments.tasks import", "Default jobs: escrow tasks are payments.*"),
    (
        "from app.tasks.notifications import send_email_task",
        "from notifications.tasks import send_email as send_email_task",
        "Queues: notifications.* (notifications.send_email)",
    ),
    (
        "from app.tasks.subscriptions import process_due_subscriptions",
        "from payments.tasks import process_due_subscriptions",
        "Default jobs: due_subscriptions -> payments.process_due_subscriptions",
    ),
    (
        "from app.tasks.cleanup import cleanup_expired_carts",
        "from maintenance.tasks import cleanup_expired_carts",
        "Default jobs: expired_carts_cleanup -> maintenance.cleanup_expired_carts",
    ),
    # Entry points: `python manage.py celery_manager worker|beat|flower|active|scheduled|...|purge`.
    ("python scripts/celery_manager.py", "python manage.py celery_manager", "Entry points: CLI"),
    # Layout: manage.py is at the repository root; there is no backend/ folder.
    ("cd backend\n", "", "Layout: manage.py at the root"),
)


def translate(source: Block | tuple[str, int], placeholders: Mapping[str, str] | None = None) -> str:
    """The block's text under our names, with the guide's placeholders filled in.

    Every placeholder must occur in the block; name rules apply where they match.
    """
    b = source if isinstance(source, Block) else block(*source)
    text = b.text
    for theirs, ours, _why in NAMES:
        text = text.replace(theirs, ours)
    for placeholder, value in (placeholders or {}).items():
        assert placeholder in text, f"seed {b.seed} block {b.index} no longer contains {placeholder!r}:\n{b.text}"
        text = text.replace(placeholder, value)
    return text


def lines(source: Block | tuple[str, int], placeholders: Mapping[str, str] | None = None) -> list[str]:
    """The block's command lines (comments and blank lines dropped, `# ...` tails cut)."""
    out = []
    for line in translate(source, placeholders).splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out
