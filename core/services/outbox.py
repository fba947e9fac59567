"""The transactional outbox: the one place that publishes domain work to the broker.

    service, in its transaction          after commit                   every 15 s
    outbox_add(task, kwargs, key) ──► commit ──► outbox_publish ──► broker ◄── outbox_relay
             (a row per intent)                   (bulk, one round trip      (what a lost hook, a dead
                                                   per batch)                 process or an outage left,
                                                                              and what has come due)

A service records the intent to run a task inside the transaction that causes it, so
the intent commits (or rolls back) with the change. Right after the commit the new
rows are published in bulk; whatever that misses, the `outbox_relay` job publishes.
Rows are claimed with SKIP LOCKED while they are published, so the after-commit hook
and two relays never publish one row at once; a process killed between publishing and
marking the row published makes the relay publish it again, which is why every
consumer is idempotent. The worker marks an intent completed when its task ends
(core.task_base); one published long ago and never completed was lost by the broker (a
Redis restart without persistence) and the relay publishes it again. Services name the
task: they never import a task module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from kombu import exceptions as kombu_exceptions
from kombu.exceptions import OperationalError as KombuOperationalError

from core import broker
from core.broker import Message, new_task_id
from core.catalog import queue_for_task
from core.errors import Unavailable
from core.models import OutboxIntent
from core.progress import ChunkedProgress
from core.services.bulk import delete_in_chunks
from core.task_base import OUTBOX_HEADER
from core.transactions import on_commit_robust

logger = logging.getLogger(__name__)

# Rows per claim and per broker pipeline. 1,000 messages of a few hundred bytes are one
# Redis round trip of well under a megabyte; a claim of 1,000 rows holds its locks for the
# few milliseconds the pipeline takes.
CHUNK_SIZE = 1000
# Rows per INSERT: a sweep chunk's 2,000 delivery intents in one statement (about 16,000
# parameters, a quarter of PostgreSQL's limit).
INSERT_CHUNK_SIZE = 5000
# The relay publishes at most this many chunks a run (50,000 intents, a few seconds); a
# bigger backlog is worked off by the next runs, each well inside its lease.
RELAY_MAX_CHUNKS = 50


class IntentRefused(ValueError):
    """A programming error in the caller: an unknown task or arguments that are not JSON. Nothing was recorded."""


@dataclass(frozen=True)
class Intent:
    """What a service asks for: run `task` with `kwargs`, once per `dedupe_key`, not before `not_before`."""

    task: str
    kwargs: Mapping[str, Any]
    dedupe_key: str
    not_before: datetime | None = None


# Recording ------------------------------------------------------------------------------


def outbox_add(*, task: str, kwargs: Mapping[str, Any], dedupe_key: str, not_before: datetime | None = None) -> None:
    """Record one intent in the current transaction; see `outbox_add_many`."""
    outbox_add_many([Intent(task=task, kwargs=kwargs, dedupe_key=dedupe_key, not_before=not_before)])


def outbox_add_many(intents: Iterable[Intent]) -> set[str]:
    """Record intents in the current transaction and publish them once it commits.

    An intent whose `dedupe_key` is already recorded (published or not) adds nothing.
    Refuses, before writing anything of its chunk, a task that is not registered or
    arguments that are not JSON (IntentRefused). Returns the dedupe keys this call recorded.
    """
    recorded: set[str] = set()
    iterator = iter(intents)
    registered: set[str] = set()
    while chunk := list(islice(iterator, INSERT_CHUNK_SIZE)):
        rows = [_checked(intent, registered) for intent in chunk]
        document = _document(rows)
        # One INSERT; a key recorded by a concurrent transaction waits for it, then is skipped.
        inserted = _insert(rows, document)
        for start in range(0, len(inserted), CHUNK_SIZE):
            part = inserted[start : start + CHUNK_SIZE]
            on_commit_robust(partial(_publish_recorded, rows=part), name="outbox_publish")
        recorded.update(row.dedupe_key for _, row in inserted)
    return recorded


@dataclass(frozen=True)
class _Row:
    task: str
    kwargs: dict[str, Any]
    dedupe_key: str
    task_id: str
    not_before: datetime | None


def _checked(intent: Intent, registered: set[str]) -> _Row:
    if not intent.dedupe_key or len(intent.dedupe_key) > 255:
        raise IntentRefused(f"An intent needs a dedupe_key of 1 to 255 characters, got {intent.dedupe_key!r}.")
    if intent.task not in registered:
        if not _is_registered(intent.task):
            raise IntentRefused(f"No task named {intent.task!r} is registered; nothing was recorded.")
        registered.add(intent.task)
    if not isinstance(intent.kwargs, Mapping) or not all(isinstance(k, str) for k in intent.kwargs):
        raise IntentRefused(f"The arguments of {intent.task} must be a mapping with string keys.")
    return _Row(intent.task, dict(intent.kwargs), intent.dedupe_key, new_task_id(), intent.not_before)


def _document(rows: Sequence[_Row]) -> str:
    """The rows as one JSON document (PostgreSQL reads it with jsonb_to_recordset); refuses arguments
    that are not JSON, naming the first intent that has them."""
    try:
        return json.dumps(
            [
                {
                    "task_name": row.task,
                    "kwargs": row.kwargs,
                    "dedupe_key": row.dedupe_key,
                    "task_id": row.task_id,
                    "not_before": row.not_before.isoformat() if row.not_before else None,
                }
                for row in rows
            ],
            allow_nan=False,
        )
    except (TypeError, ValueError):
        for row in rows:
            try:
                json.dumps(row.kwargs, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise IntentRefused(f"The arguments of {row.task} are not JSON ({exc}); nothing was recorded.") from exc
        raise


def _insert(rows: Sequence[_Row], document: str) -> list[tuple[int, _Row]]:
    """INSERT the rows, skipping recorded keys; (id, row) of each row this statement inserted, in id order."""
    connection = transaction.get_connection()
    by_key = {row.dedupe_key: row for row in rows}
    if connection.vendor == "postgresql":
        # One statement with one parameter that says which rows it inserted: no read-back of thousands
        # of keys, and none of the per-value cost of thousands of parameters (measured: 3 x faster).
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_RETURNING, [timezone.now(), document])
            returned = cursor.fetchall()
        return sorted((pk, by_key[key]) for pk, key in returned)
    OutboxIntent.objects.bulk_create(
        [
            OutboxIntent(
                task_name=row.task,
                kwargs=row.kwargs,
                dedupe_key=row.dedupe_key,
                task_id=row.task_id,
                not_before=row.not_before,
            )
            for row in rows
        ],
        ignore_conflicts=True,
    )
    # Ours are the rows carrying the task ids this call generated.
    ours = {row.task_id: row for row in rows}
    stored = OutboxIntent.objects.filter(dedupe_key__in=list(by_key)).values_list("pk", "task_id")
    return sorted((pk, ours[str(task_id)]) for pk, task_id in stored if str(task_id) in ours)


_INSERT_RETURNING = f"""
    INSERT INTO {OutboxIntent._meta.db_table}
        (task_name, kwargs, dedupe_key, task_id, not_before, attempts, publishes, last_error, created_at)
    SELECT r.task_name, r.kwargs, r.dedupe_key, r.task_id, r.not_before, 0, 0, '', %s
    FROM jsonb_to_recordset(%s::jsonb)
        AS r(task_name text, kwargs jsonb, dedupe_key text, task_id uuid, not_before timestamptz)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, dedupe_key
"""  # noqa: S608  (the table name is the model's own; every value is a parameter)


def _is_registered(task: str) -> bool:
    if task in current_app.tasks:
        return True
    # A process that has not imported the task modules yet (a shell): load them, then look again.
    current_app.loader.import_default_modules()
    return task in current_app.tasks


# Publishing -----------------------------------------------------------------------------


# kombu 5.7 raises it when a pipelined batch fails; the type stubs predate it.
BatchPublishError: type[Exception] = kombu_exceptions.BatchPublishError  # type: ignore[attr-defined]
# What a broker that cannot take a message raises through Celery and kombu.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    KombuOperationalError,
    BatchPublishError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def messages_publish(messages: Sequence[Message]) -> None:
    """Publish task messages in pipelined batches (one Redis round trip per batch); see core.broker.

    The only function in the code base that sends domain work to the broker. Routing (the
    queue) comes from `task_routes` by task name. Raises one of BROKER_ERRORS when the
    broker cannot be reached; part of a batch may then have been delivered.
    """
    broker.publish(messages)


def _publish_recorded(*, rows: Sequence[tuple[int, _Row]]) -> dict[str, int]:
    """The after-commit hook: publish the due intents this transaction recorded, from memory."""
    now = timezone.now()
    horizon = now + timedelta(seconds=settings.OUTBOX_ETA_HORIZON_SECONDS)
    messages = {
        pk: Message(
            task=row.task,
            kwargs=row.kwargs,
            task_id=str(row.task_id),
            eta=row.not_before if row.not_before and row.not_before > now else None,
            headers={OUTBOX_HEADER: pk},
        )
        for pk, row in rows
        if row.not_before is None or row.not_before <= horizon
    }
    if not messages:
        return {"published": 0}
    published, error = _claim_and_publish(messages)
    if error is not None:
        # The rows stay unpublished with the error recorded; the relay publishes them.
        logger.warning("outbox: could not publish %d intents after commit: %s", len(messages), error)
    return {"published": published}


def outbox_relay(*, chunk_size: int = CHUNK_SIZE, max_chunks: int = RELAY_MAX_CHUNKS) -> dict[str, int]:
    """Publish what is left behind or has come due, chunk by chunk; then prune old published rows.

    Raises Unavailable when the broker cannot be reached: the rows stay, with the error
    recorded on them, and the next run publishes them.
    """
    published = chunks = 0
    after = 0
    unpublished = OutboxIntent.objects.filter(published_at__isnull=True)
    progress = ChunkedProgress(chunk_size=chunk_size, rest=lambda: _due(unpublished.filter(pk__gt=after)).count())
    while chunks < max_chunks:
        chunks += 1
        page = list(_due(unpublished.filter(pk__gt=after)).order_by("pk").values_list("pk", flat=True)[:chunk_size])
        if not page:
            progress.advance(0)
            break
        after = page[-1]
        count, error = _publish_claimed(OutboxIntent.objects.filter(pk__in=page), limit=chunk_size)
        published += count
        progress.advance(len(page))
        if error is not None:
            raise Unavailable(f"Could not reach the broker; {len(page)} intents wait for the next run: {error}")
        if len(page) < chunk_size:
            break
    redelivered, held_back = _redeliver_lost(chunk_size=chunk_size, max_chunks=max(1, max_chunks - chunks))
    pruned = outbox_prune()
    waiting = OutboxIntent.objects.filter(published_at__isnull=True).count()
    return {
        "published": published,
        "redelivered": redelivered,
        "held_back": held_back,
        "chunks": chunks,
        "pruned": pruned,
        "waiting": waiting,
    }


def outbox_mark_completed(*, intent_id: int) -> int:
    """Record that the task of an intent ran to an end (the worker calls this; one indexed UPDATE)."""
    return OutboxIntent.objects.filter(pk=intent_id, completed_at__isnull=True).update(completed_at=timezone.now())


def _redeliver_lost(*, chunk_size: int, max_chunks: int) -> tuple[int, int]:
    """Publish again what the broker took but never ran: published over OUTBOX_REDELIVER_AFTER_SECONDS
    ago (and past its not-before time by as much), not completed, fewer than OUTBOX_MAX_PUBLISHES times.

    A Redis restart without persistence, or a purge, loses messages the relay had counted
    as delivered; this is what brings them back. A queue with a backlog is left alone this
    run (its message may simply still be waiting), so the relay never piles duplicates onto
    a queue that is behind. Returns (published again, held back behind a backlog).
    """
    cutoff = timezone.now() - timedelta(seconds=settings.OUTBOX_REDELIVER_AFTER_SECONDS)
    lost = OutboxIntent.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lt=cutoff),
        published_at__lt=cutoff,
        completed_at__isnull=True,
        publishes__lt=settings.OUTBOX_MAX_PUBLISHES,
    )
    busy = _queues_with_backlog()
    redelivered = held_back = 0
    after = 0
    progress = ChunkedProgress(chunk_size=chunk_size, rest=lambda: lost.filter(pk__gt=after).count())
    for _ in range(max_chunks):
        page = list(lost.filter(pk__gt=after).order_by("pk").values_list("pk", "task_name")[:chunk_size])
        if not page:
            progress.advance(0)
            break
        after = page[-1][0]
        ready = [pk for pk, task in page if queue_for_task(task) not in busy]
        held_back += len(page) - len(ready)
        progress.advance(len(page))  # counted as it starts: its short transaction follows at once
        with transaction.atomic():
            rows = list(
                lost.filter(pk__in=ready)
                .select_for_update(skip_locked=True)
                .values_list("pk", "task_name", "kwargs", "task_id")
            )
            if not rows:
                continue
            messages = [
                Message(task=task, kwargs=kwargs, task_id=str(task_id), headers={OUTBOX_HEADER: pk})
                for pk, task, kwargs, task_id in rows
            ]
            ids = [row[0] for row in rows]
            try:
                messages_publish(messages)
            except BROKER_ERRORS as exc:
                raise Unavailable(f"Could not reach the broker to publish lost intents again: {exc}") from exc
            OutboxIntent.objects.filter(pk__in=ids).update(
                published_at=timezone.now(), attempts=F("attempts") + 1, publishes=F("publishes") + 1
            )
            redelivered += len(ids)
    if redelivered:
        logger.warning("outbox: published %d intents again whose messages the broker lost", redelivered)
    return redelivered, held_back


def _queues_with_backlog() -> set[str]:
    """The queues with messages waiting (Redis broker only; for other brokers none is known)."""
    url = str(settings.CELERY_BROKER_URL)
    if not url.startswith(("redis://", "rediss://")):
        return set()
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return {queue for queue in settings.JOB_QUEUES if client.llen(queue)}
    finally:
        client.close()


def outbox_prune(*, retention_days: int | None = None) -> int:
    """Delete published intents older than the retention (OUTBOX_RETENTION_DAYS), in chunks."""
    days = settings.OUTBOX_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = timezone.now() - timedelta(days=days)
    return delete_in_chunks(OutboxIntent.objects.filter(published_at__lt=cutoff))


def _due(queryset: QuerySet[OutboxIntent]) -> QuerySet[OutboxIntent]:
    # Work due within the horizon is published now with its ETA, so it runs on time; later
    # work waits in the table rather than in a worker's memory.
    horizon = timezone.now() + timedelta(seconds=settings.OUTBOX_ETA_HORIZON_SECONDS)
    return queryset.filter(Q(not_before__isnull=True) | Q(not_before__lte=horizon))


def _publish_claimed(candidates: QuerySet[OutboxIntent], *, limit: int) -> tuple[int, BaseException | None]:
    """Publish the unpublished, due rows among `candidates`, read from the table (the relay's way)."""
    now = timezone.now()
    rows = _due(candidates.filter(published_at__isnull=True)).order_by("pk")[:limit]
    messages = {
        pk: Message(
            task=task,
            kwargs=kwargs,
            task_id=str(task_id),
            eta=not_before if not_before and not_before > now else None,
            headers={OUTBOX_HEADER: pk},
        )
        for pk, task, kwargs, task_id, not_before in rows.values_list(
            "pk", "task_name", "kwargs", "task_id", "not_before"
        )
    }
    return _claim_and_publish(messages) if messages else (0, None)


def _claim_and_publish(messages: Mapping[int, Message]) -> tuple[int, BaseException | None]:
    """Claim the still unpublished rows among `messages` (SKIP LOCKED), publish them, mark them.

    One short transaction: the claim marks the rows published, then one broker pipeline per
    CHUNK_SIZE rows; when the broker refuses, the mark is undone and the error recorded
    instead. The after-commit hook and two relays never publish one row at once. Returns
    (rows published, the broker's error or None).
    """
    with transaction.atomic():
        ids = _claim_marking_published(list(messages))
        if not ids:
            return 0, None
        try:
            messages_publish([messages[pk] for pk in ids])
        except BROKER_ERRORS as exc:
            OutboxIntent.objects.filter(pk__in=ids).update(
                published_at=None, publishes=F("publishes") - 1, last_error=str(exc)[:2000]
            )
            return 0, exc
    return len(ids), None


def _claim_marking_published(ids: list[int]) -> list[int]:
    """Lock the unpublished rows among `ids` that no one else holds and mark them published; their ids, in order."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        # One statement instead of a SELECT FOR UPDATE and an UPDATE, with the ids as one array literal.
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_MARKING_PUBLISHED, [timezone.now(), "{" + ",".join(map(str, ids)) + "}"])
            return sorted(pk for (pk,) in cursor.fetchall())
    claimed = list(
        OutboxIntent.objects.filter(pk__in=ids, published_at__isnull=True)
        .select_for_update(skip_locked=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    OutboxIntent.objects.filter(pk__in=claimed).update(
        published_at=timezone.now(), attempts=F("attempts") + 1, publishes=F("publishes") + 1, last_error=""
    )
    return claimed


_CLAIM_MARKING_PUBLISHED = f"""
    UPDATE {OutboxIntent._meta.db_table}
    SET published_at = %s, attempts = attempts + 1, publishes = publishes + 1, last_error = ''
    WHERE id IN (
        SELECT id FROM {OutboxIntent._meta.db_table}
        WHERE id = ANY(%s::bigint[]) AND published_at IS NULL
        ORDER BY id
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
"""  # noqa: S608  (the table name is the model's own; every value is a parameter)
