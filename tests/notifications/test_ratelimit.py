"""Per-channel rate limits held in Redis, so every worker process shares one budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings as django_settings
from django.test import override_settings
from django.utils import timezone
from pytest_httpserver import HTTPServer

from core.redis import get_redis
from notifications.models import Notification
from notifications.services import RetryPolicy, notifications_deliver_batch, notifications_recover_stuck, notify
from notifications.services.outbox import REDELIVER_TASK
from notifications.services.ratelimit import parse_rate, rate_limit_acquire, rate_limit_acquire_many


def test_rates_parse_per_second_minute_and_hour_and_empty_means_unlimited() -> None:
    assert parse_rate("10/s") == (10, 1000)
    assert parse_rate("600/m") == (600, 60_000)
    assert parse_rate("1000/h") == (1000, 3_600_000)
    assert parse_rate("") is None
    assert parse_rate("0") is None


def test_sms_at_10_per_second_grants_10_then_asks_to_wait_for_the_first_to_leave_the_window() -> None:
    with override_settings(NOTIFICATIONS_RATE_LIMITS={"sms": "10/s"}):
        waits = [rate_limit_acquire(channel="sms") for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    # Not period/N (0.1 s) as a token bucket would say: that allowed up to 2N-1 per second.
    assert 0.8 < waits[10] <= 1.0


def test_a_worker_that_waits_as_told_never_gets_more_than_n_slots_in_any_one_period() -> None:
    # Given a limit of 20 per second and a worker taking every slot it can for 1.5 seconds
    client = get_redis()
    granted_ms: list[int] = []
    with override_settings(NOTIFICATIONS_RATE_LIMITS={"sms": "20/s"}):
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            wait = rate_limit_acquire(channel="sms")
            if wait == 0.0:
                seconds, micros = client.time()
                granted_ms.append(seconds * 1000 + micros // 1000)
            else:
                time.sleep(wait)  # what the worker does (_wait_for_rate_slot)
    # Then it got a second burst after the first second, but no 21 grants fall within one second
    # (give or take the few ms between the script's clock reading and the test's)
    assert len(granted_ms) >= 40
    assert min(granted_ms[i + 20] - granted_ms[i] for i in range(len(granted_ms) - 20)) >= 990


def test_channels_have_separate_budgets_and_an_unset_limit_never_waits() -> None:
    with override_settings(NOTIFICATIONS_RATE_LIMITS={"sms": "1/s", "email": "", "push": "1/s"}):
        assert rate_limit_acquire(channel="sms") == 0.0
        assert rate_limit_acquire(channel="sms") > 0
        assert rate_limit_acquire(channel="push") == 0.0
        assert all(rate_limit_acquire(channel="email") == 0.0 for _ in range(50))


_TAKE_SLOTS = """
import django, sys
django.setup()
from notifications.services.ratelimit import rate_limit_acquire
print("ready", flush=True)
sys.stdin.readline()  # start together
print(sum(1 for _ in range(20) if rate_limit_acquire(channel="sms") == 0.0))
"""


def test_the_limit_holds_across_worker_processes_not_per_process() -> None:
    # Given four separate processes (like four workers) each asking for 20 SMS slots at once,
    # against a budget of 10 per minute (per minute so the bucket does not refill during the run)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "REDIS_URL": django_settings.REDIS_URL,
        "NOTIFICATIONS_SMS_RATE_LIMIT": "10/m",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TAKE_SLOTS], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    granted = [int(p.communicate(timeout=30)[0].strip()) for p in procs]
    # Then 10 were granted in total, not 10 each
    assert sum(granted) == 10


def test_a_batch_takes_what_is_left_of_the_budget_in_one_round_trip_and_is_told_when_the_next_slot_frees() -> None:
    with override_settings(NOTIFICATIONS_RATE_LIMITS={"sms": "10/s"}):
        assert rate_limit_acquire_many(channel="sms", wanted=4) == (4, 0.0)
        granted, wait = rate_limit_acquire_many(channel="sms", wanted=10)
        nothing, later = rate_limit_acquire_many(channel="sms", wanted=3)
    assert granted == 6 and 0.8 < wait <= 1.0
    assert nothing == 0 and 0.8 < later <= 1.0
    assert get_redis().zcard("notifications:ratelog:sms") == 10


@pytest.mark.django_db
def test_a_message_without_a_slot_goes_back_to_pending_without_spending_an_attempt(
    twilio: HTTPServer, settings: Any
) -> None:
    # Given an SMS budget of 1 per hour that is already used
    settings.NOTIFICATIONS_RATE_LIMITS = {"sms": "1/h"}
    assert rate_limit_acquire(channel="sms") == 0.0
    row = notify(template="raw_sms", to="+14155552671", context={"body": "hi"}, channels=["sms"], dedupe_key="rl")[0]
    # When a worker tries to deliver it
    summary = notifications_deliver_batch(
        channel="sms",
        notification_ids=[row.pk],
        policy=RetryPolicy(max_retries=3, backoff_seconds=1),
        retry_task=REDELIVER_TASK,
    )
    # Then nothing was sent, the row is pending with no attempt counted, due in about an hour
    row.refresh_from_db()
    assert summary["rate_limited"] == 1
    assert twilio.log == []
    assert (row.status, row.attempts) == (Notification.Status.PENDING, 0)
    assert row.next_attempt_at == row.enqueued_at
    assert timezone.now() + timedelta(seconds=3500) < row.next_attempt_at <= timezone.now() + timedelta(seconds=3601)
    # And recovery does not take the planned wait for a lost message
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        assert notifications_recover_stuck()["candidates"] == 0
