"""core.services.bulk: one INSERT or UPDATE from a JSON parameter, conflicts skipped, guards kept."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.models import AuditLog, OutboxIntent, User
from core.services.bulk import insert_rows, update_rows

pytestmark = pytest.mark.django_db


def test_rows_are_inserted_with_their_values_and_conflicting_ones_skipped() -> None:
    actor = User.objects.create_user("actor")
    at = datetime(2026, 12, 4, 10, 30, 15, 123456, tzinfo=UTC)
    OutboxIntent.objects.create(task_name="t", kwargs={}, dedupe_key="taken")
    rows = [
        OutboxIntent(task_name="t", kwargs={"amount": Decimal("12.50"), "n": 1}, dedupe_key="fresh", not_before=at),
        OutboxIntent(task_name="t", kwargs={}, dedupe_key="taken"),
    ]

    inserted = insert_rows(OutboxIntent, rows, returning=("id", "dedupe_key", "not_before"))

    assert [(key, when) for _, key, when in inserted] == [("fresh", at)]  # microseconds kept
    fresh = OutboxIntent.objects.get(dedupe_key="fresh")
    assert fresh.kwargs == {"amount": "12.50", "n": 1} and fresh.created_at is not None
    assert OutboxIntent.objects.filter(dedupe_key="taken").count() == 1
    # A foreign key and an auto_now_add field.
    [(pk, actor_id)] = insert_rows(AuditLog, [AuditLog(actor=actor, action="x")], returning=("id", "actor"))
    assert actor_id == actor.pk and AuditLog.objects.get(pk=pk).created_at is not None
    assert insert_rows(AuditLog, [], returning=("id",)) == []
    # Keys that are not strings become strings, as json.dumps makes them.
    insert_rows(AuditLog, [AuditLog(action="y", data={1: "one"})], returning=("id",))
    assert AuditLog.objects.get(action="y").data == {"1": "one"}


def test_update_rows_writes_each_rows_values_with_their_microseconds_under_the_guard() -> None:
    at = datetime(2026, 12, 4, 10, 30, 15, 123456, tzinfo=UTC)
    first, second = OutboxIntent.objects.bulk_create(
        [OutboxIntent(task_name="t", kwargs={}, dedupe_key=k) for k in ("a", "b")]
    )
    first.not_before, second.not_before = at, at.replace(microsecond=654321)
    first.attempts = second.attempts = 3
    OutboxIntent.objects.filter(pk=second.pk).update(task_name="other")  # fails the guard below

    updated = update_rows(OutboxIntent, [first, second], ["not_before", "attempts"], where={"task_name": "t"})

    assert updated == 1
    assert OutboxIntent.objects.values_list("dedupe_key", "not_before", "attempts").order_by("dedupe_key")[0] == (
        "a",
        at,
        3,
    )
    assert OutboxIntent.objects.get(pk=second.pk).not_before is None
