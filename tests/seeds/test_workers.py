"""The guides' worker lines and the shell calls they make, on real processes, as written.

Translations (tests/seeds/translate.py, from DESIGN.md): `celery -A <their app>` is
`celery -A config`; seed 000's queues `payment_tasks,marketplace_tasks` are our `payments`;
their task and service imports are ours (`payments.tasks`, `notifications.tasks`,
`maintenance.tasks`, `core.scheduler.SchedulerService`); `cd backend` is the repository root.
Placeholders (`REPLACE-UUID`, `task-id-here`) get real ids.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from pytest_httpserver import HTTPServer

from core.models import JobRun, User
from notifications.models import Notification
from payments.models import Cart, CartItem, Order
from tests.e2e.conftest import CeleryProcess, wait_for
from tests.seeds.conftest import bash_argv, guide_env, run_shell
from tests.seeds.translate import lines, translate
from tests.support.factories.payments import make_product, seed_orders

pytestmark = pytest.mark.e2e

ECB_XML = (Path(__file__).parents[1] / "payments" / "fixtures" / "eurofxref-daily.xml").read_bytes()
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def guide_process(transactional_db: Any, purge_broker: None, tmp_path: Path) -> Iterator[Callable[..., CeleryProcess]]:
    """Start a translated block the way a terminal would (bash, venv active); stopped at the end."""
    started: list[CeleryProcess] = []

    def start(script: str, name: str, *, ready: str | None = " ready.", **env: str) -> CeleryProcess:
        proc = CeleryProcess(bash_argv(script), guide_env(**env), tmp_path / f"{name}.log")
        started.append(proc)
        if ready:
            wait_for(lambda: ready in proc.output(), timeout=45, message=f"{name} to log {ready!r}; log {proc.log}")
        return proc

    yield start
    for proc in started:
        proc.stop()


def exec_snippet(code: str, namespace: dict[str, Any] | None = None) -> str:
    """Run a Python snippet as a Django shell would, in this process (the test database); its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<seed snippet>", "exec"), {} if namespace is None else namespace)
    return out.getvalue()


def inspect_line(line: str) -> str:
    done = run_shell(line, timeout=60)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_seed_000_payments_worker_and_the_manual_triggers_from_a_python_heredoc(
    guide_process: Callable[..., CeleryProcess], httpserver: HTTPServer
) -> None:
    # Given expired unpaid orders and the feed of the day on a local server (the ECB is outside)
    httpserver.expect_request("/eurofxref-daily.xml").respond_with_data(ECB_XML, content_type="text/xml")
    feed = {"EXCHANGE_RATES_URL": httpserver.url_for("/eurofxref-daily.xml")}
    shopper = User.objects.create_user(username="shopper", password="pw-shopper-1", email="shopper@example.com")
    products = [make_product(stock=100) for _ in range(3)]
    one, *rest = seed_orders(shopper, products, count=4, age_days=5)

    # When the guide's worker is started (block 1) and its heredocs run while it runs
    worker = guide_process(translate(("000", 1)), "worker-000", **feed)
    assert ".> payments " in worker.output() and ".> default " not in worker.output()
    setup = run_shell(translate(("000", 7)), **feed)
    assert setup.returncode == 0, setup.stderr
    assert re.search(r"^Setup: \{.*'created': \[.*'payment_timeouts'", setup.stdout, re.M), setup.stdout
    assert "Status: " in setup.stdout and "'exchange_rates'" in setup.stdout

    one_order = run_shell(translate(("000", 5), {"REPLACE-UUID": str(one.pk)}), **feed)
    assert re.fullmatch(rf"Enqueued task id: {UUID_RE}\n", one_order.stdout), one_order.stderr
    wait_for(lambda: Order.objects.get(pk=one.pk).status == "cancelled", timeout=30, message="the one order")

    scan = run_shell(translate(("000", 4)), **feed)
    scan_id = re.fullmatch(rf"Enqueued task id: ({UUID_RE})\n", scan.stdout)
    assert scan_id, scan.stderr
    wait_for(
        lambda: Order.objects.filter(pk__in=[o.pk for o in rest], status="cancelled").count() == 3,
        timeout=30,
        message=f"the scan to cancel the rest; log {worker.log}",
    )
    order = Order.objects.get(pk=rest[0].pk)
    assert order.payment_status == "failed"

    wrapper = run_shell(translate(("000", 6)), **feed)
    assert wrapper.returncode == 0, wrapper.stderr
    assert re.search(r"^Trigger timeouts: .+", wrapper.stdout, re.M) and "Trigger exchange: " in wrapper.stdout
    wait_for(
        lambda: JobRun.objects.filter(job_key="exchange_rates", status__in=JobRun.FINISHED).exists(),
        timeout=60,
        message=f"the exchange-rate run; log {worker.log}",
    )
    rates = JobRun.objects.get(job_key="exchange_rates")
    assert rates.status == "succeeded", (rates.status, rates.error, worker.output()[-3000:])
    assert JobRun.objects.filter(job_key="payment_timeouts", source="shell").count() >= 2

    # Inspect DB schedules (block 9), as written: one line per beat entry
    schedules = run_shell(translate(("000", 9)))
    assert "payment_timeouts True payments.check_payment_timeouts" in schedules.stdout.splitlines(), schedules.stdout

    # AsyncResult(task_id) (seed 001 block 18), with the scan's id for 'task-id-here'
    shown = exec_snippet(translate(("001", 18), {"task-id-here": scan_id.group(1)}))
    assert shown.startswith("Status: SUCCESS\nResult: {") and "'orders_cancelled': 3" in shown

    # "See registered tasks" (block 8): a bare interpreter's current_app is Celery's default app,
    # not the project's, so it lists nothing here as in any project; inspect registered does.
    registered = run_shell(translate(("000", 8)))
    assert registered.stdout == "[]\n", registered.stderr


def test_seed_001_and_003_calls_on_a_bare_worker_and_the_inspect_commands(
    guide_process: Callable[..., CeleryProcess],
) -> None:
    # Given an old cart (seed 003's cleanup) and the bare worker both guides start
    cart = Cart.objects.create(user=User.objects.create_user(username="carter", email="c@example.com"))
    CartItem.objects.create(cart=cart, product=make_product(), quantity=1)
    Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now() - timedelta(days=40))
    assert translate(("001", 7)) == translate(("003", 0)) == "celery -A config worker --loglevel=info\n"
    worker = guide_process(translate(("001", 7)), "worker-bare")
    events = guide_process("celery -A config events --dump", "events", ready=None)  # seed 003 block 11, see registry

    # When seed 001's three calls run (block 13 calls immediately, then .delay())
    from payments import tasks as payments_tasks

    namespace: dict[str, Any] = {}
    exec_snippet(translate(("001", 13)), namespace)
    exec_snippet(translate(("001", 14)), namespace)
    exec_snippet(translate(("001", 15)), namespace)
    assert namespace["send_email_notification"] is payments_tasks.send_email_notification
    # Then two emails to user@example.com (one inline, one on the worker)
    wait_for(
        lambda: Notification.objects.filter(to_address="user@example.com", subject="Welcome!").count() == 2,
        timeout=30,
        message=f"both welcome emails; log {worker.log}",
    )
    # And the unknown transaction 123 and user 456 are reported, not retried
    wait_for(
        lambda: (
            {r.result["outcome"] for r in _results("payments.send_transaction_notification")} == {"not_found"}
            and {r.result["outcome"] for r in _results("payments.send_verification_notification")} == {"not_found"}
        ),
        timeout=30,
        message=f"the two not-found summaries; log {worker.log}",
    )

    # When seed 003's status snippet (block 12) and test snippet (block 18) run
    status_out = exec_snippet(translate(("003", 12)))
    assert re.fullmatch(r"(PENDING|STARTED|SUCCESS)\n\{'notifications': \[\{'id': \d+, .*\}\]\}\n", status_out), (
        status_out
    )
    test_out = exec_snippet(translate(("003", 18)))
    assert re.fullmatch(rf"Task ID: {UUID_RE}\nTask Status: (PENDING|STARTED|SUCCESS)\n", test_out), test_out
    wait_for(
        lambda: Notification.objects.filter(to_address="test@example.com", subject="Test Email").exists(),
        timeout=30,
        message="the test email",
    )
    # And block 19's scheduled tasks run by hand
    exec_snippet(translate(("003", 19)))
    wait_for(lambda: not Cart.objects.filter(pk=cart.pk).exists(), timeout=30, message="the old cart deleted")
    wait_for(
        lambda: JobRun.objects.filter(job_key="due_subscriptions", source="shell", status="succeeded").exists(),
        timeout=30,
        message="the subscriptions run",
    )

    # The inspect lines of every guide (unique after translation), against this worker
    inspect_lines = {
        line
        for key in [("002", 8), ("002", 12), ("003", 14), ("003", 15), ("003", 16), ("004", 11), ("004", 12)]
        for line in lines(key)
        if " inspect " in line
    }
    assert {line.rsplit(" ", 1)[1] for line in inspect_lines} == {"active", "scheduled", "registered", "stats"}
    answers = {line.rsplit(" ", 1)[1]: inspect_line(line) for line in sorted(inspect_lines)}
    assert "payments.check_payment_timeouts" in answers["registered"]
    assert "notifications.send_email" in answers["registered"]
    assert "1 node online." in answers["active"] and "- empty -" in answers["active"]
    assert "1 node online." in answers["scheduled"]
    assert '"max-concurrency"' in answers["stats"]
    # "Start a Celery worker for all queues": it consumes every declared queue
    queues = inspect_line("celery -A config inspect active_queues")
    from django.conf import settings

    for queue in settings.JOB_QUEUES:
        assert f"'name': '{queue}'" in queues or f'"name": "{queue}"' in queues, queues
    # celery_manager active / scheduled (seed 002 block 3, as `python manage.py celery_manager`)
    for line in lines(("002", 3)):
        if line.endswith((" active", " scheduled")):
            done = run_shell(line)
            assert done.returncode == 0 and "celery@" in done.stdout, (line, done.stdout, done.stderr)
    # And the events monitor saw the tasks succeed
    wait_for(lambda: "task succeeded" in events.output().lower(), timeout=15, message=f"events; log {events.log}")


def _results(name: str) -> list[Any]:
    from django_celery_results.models import TaskResult

    from config.celery import app

    return [app.AsyncResult(r.task_id) for r in TaskResult.objects.filter(task_name=name, status="SUCCESS")]


def test_seed_004_solo_worker_runs_the_expiry_sweep_and_get_prints_the_count(
    guide_process: Callable[..., CeleryProcess],
) -> None:
    from tests.support.factories.logistics import DriverFactory, assigning_request

    # Given five offers past their deadline
    for _ in range(5):
        assigning_request(driver=DriverFactory(), started_seconds_ago=400)
    # When the guide's Windows-safe worker runs and the Django-shell snippet is pasted
    guide_process(translate(("004", 5)), "worker-solo")
    printed = exec_snippet(translate(("004", 13)))
    # Then it prints what the guide's comment shows
    assert printed == "{'expired_count': 5}\n"
