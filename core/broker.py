"""Writing task messages to the broker: the one publisher behind core.services.outbox.messages_publish.

On a Redis broker a plain task message (JSON, default priority, routed by `task_routes` to
a queue) is written directly: the Celery protocol-2 envelope that `send_task` and kombu's
Redis transport would build, pushed with one LPUSH per queue per batch. Celery's own path
costs about a millisecond of Python per message here (settings lookups, safe reprs, entity
declarations); this one costs tens of microseconds, which is what lets a sweep fan out
100,000 tasks in seconds. Anything else (another broker, a task with its own priority,
exchange, serializer, compression or expiry) goes through Celery's `send_task`, unchanged.

Like kombu's own `Producer.publish`, the direct path sends none of Celery's
before/after_task_publish signals: a catalog job sent through it is recorded by its sender
(SchedulerService creates the run as `queued`) or, at the latest, by the worker that runs it.

tests/core/test_broker.py holds the envelope to what Celery and kombu write, field by field,
so a Celery upgrade that changes the protocol fails a test instead of a worker.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import orjson
import redis
from celery import current_app
from celery.utils.nodenames import anon_nodename
from django.conf import settings
from kombu.exceptions import OperationalError
from kombu.utils.json import dumps

from core.catalog import queue_for_task

# Messages per pipelined round trip.
BATCH_SIZE = 1000
# What a worker expects in the body's third element when a task has no callbacks or chain.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# Task options the direct path reproduces; a task declaring any other one goes through Celery.
_HANDLED_OPTIONS = frozenset({"queue", "ignore_result", "time_limit", "soft_time_limit"})
_REDIS_SCHEMES = ("redis://", "rediss://")


@dataclass(frozen=True)
class Message:
    """One task message as the publisher sends it."""

    task: str
    kwargs: Mapping[str, Any]
    task_id: str
    eta: datetime | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


def publish(messages: Sequence[Message]) -> None:
    """Send `messages`, in order, one pipelined round trip per BATCH_SIZE on a Redis broker.

    Raises kombu's OperationalError (or another of the outbox's BROKER_ERRORS) when the
    broker cannot take them; part of a batch may then have been delivered.
    """
    if not messages:
        return
    direct: list[Message] = []
    through_celery: list[Message] = []
    for message in messages:
        (direct if _direct_options(message.task) is not None else through_celery).append(message)
    if direct:
        _publish_direct(direct)
    if through_celery:
        _publish_with_celery(through_celery)


# The direct path ----------------------------------------------------------------------


@cache
def _direct_options(task: str) -> dict[str, Any] | None:
    """The task's delivery options when the direct path can write its messages exactly, else None."""
    if not _broker_is_redis():
        return None
    registered = current_app.tasks.get(task)
    options: dict[str, Any] = {}
    if registered is not None:
        # The options send_task would merge in (queue, time limits, ...); private in the stubs, public in use.
        exec_options = registered._get_exec_options()  # type: ignore[attr-defined]
        options = {k: v for k, v in exec_options.items() if v is not None}
    if options.pop("serializer", "json") != "json" or set(options) - _HANDLED_OPTIONS:
        return None
    if settings.CELERY_TASK_SERIALIZER != "json" or getattr(settings, "CELERY_TASK_COMPRESSION", None):
        return None
    if getattr(settings, "CELERY_TASK_DEFAULT_PRIORITY", None) or getattr(
        settings, "CELERY_TASK_SEND_SENT_EVENT", False
    ):
        return None
    if settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix"):
        return None
    return {
        "queue": queue_for_task(task),
        "ignore_result": options.get("ignore_result"),
        "timelimit": [options.get("time_limit"), options.get("soft_time_limit")],
    }


def _broker_is_redis() -> bool:
    return str(settings.CELERY_BROKER_URL).startswith(_REDIS_SCHEMES)


_local = threading.local()


def _client() -> redis.Redis:
    """One client per thread and process (redis-py's pool starts afresh after a fork)."""
    url = str(settings.CELERY_BROKER_URL)
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None or getattr(_local, "url", None) != url:
        # The same limits as Celery's own connection: a down broker fails fast rather than hang a commit hook.
        timeout = float(getattr(settings, "CELERY_BROKER_CONNECTION_TIMEOUT", 4.0))
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(timeout, 10.0))
        _local.client, _local.url = client, url
    return client


def envelope(message: Message, *, queue: str, options: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """The JSON a Celery worker reads off a Redis list: protocol 2 headers and properties, base64 body.

    Field for field what `app.send_task` (celery.app.amqp.as_task_v2) and kombu's Redis
    channel (`basic_publish`, `_put`) write for the same task.
    """
    return _encode(message, _headers(message, options=options, context=context), queue=queue, context=context)


def _headers(message: Message, *, options: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "lang": "py",
        "task": message.task,
        "id": message.task_id,
        "shadow": None,
        "eta": message.eta.isoformat() if message.eta else None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": list(options["timelimit"]),
        "root_id": context["root_id"] or message.task_id,
        "parent_id": context["parent_id"],
        "argsrepr": "()",
        "kwargsrepr": _kwargsrepr(message.kwargs, limit=context["repr_limit"], levels=context["repr_levels"]),
        "origin": context["origin"],
        "ignore_result": options["ignore_result"],
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    headers.update(message.headers)
    return headers


def _encode(message: Message, headers: dict[str, Any], *, queue: str, context: Mapping[str, Any]) -> str:
    body = base64.b64encode(_dumps([[], dict(message.kwargs), _EMBED]).encode()).decode()
    return _dumps_envelope(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": message.task_id,
                "reply_to": context["reply_to"],
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": new_task_id(),
            },
        }
    )


def _dumps(value: Any) -> str:
    """kombu's JSON: the standard library's text for plain values (the same bytes, from its cached
    encoder, several times faster), kombu's type markers for dates, decimals and UUIDs."""
    try:
        return json.dumps(value)
    except TypeError:
        return str(dumps(value))


def _dumps_envelope(envelope: dict[str, Any]) -> str:
    """The envelope is ours (strings, numbers, None): orjson writes it in a tenth of the time.

    Not the body: orjson writes dates and UUIDs its own way, where kombu tags them for the worker.
    """
    try:
        return orjson.dumps(envelope).decode()
    except TypeError:  # a header a signal receiver added that orjson does not know
        return _dumps(envelope)


def _kwargsrepr(kwargs: Mapping[str, Any], *, limit: int, levels: int) -> str:
    """Celery's `saferepr` of the arguments (what Flower and the results table show), cheaply.

    For JSON arguments `repr` gives the same text unless a string needs escaping or the
    other quote (the text then holds a backslash or a double quote), the text nears the
    size limit, or it may nest deeper than `task_repr_maxlevels` (more opening brackets
    than that); only those take `saferepr`, which costs some 50 us a call.
    """
    text = repr(kwargs)
    simple = len(text) < limit * 9 // 10 and "\\" not in text and '"' not in text
    if simple and text.count("{") + text.count("[") + text.count("(") <= levels:
        return text
    from celery.utils.saferepr import saferepr

    return str(saferepr(kwargs, limit, maxlevels=levels))


def _publish_context() -> dict[str, Any]:
    app = current_app
    parent = app.current_worker_task
    root_id = parent_id = None
    if parent is not None:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    return {
        "root_id": root_id,
        "parent_id": parent_id,
        "origin": anon_nodename(),
        "reply_to": app.thread_oid,
        # Read once per publish: Celery's settings lookups cost more than building a message.
        "repr_limit": app.amqp.kwargsrepr_maxsize,
        "repr_levels": app.conf.task_repr_maxlevels,
    }


def _publish_direct(messages: Sequence[Message]) -> None:
    """Encode and push; Celery's before/after_task_publish signals are not sent (see the module doc)."""
    context = _publish_context()
    client = _client()
    for start in range(0, len(messages), BATCH_SIZE):
        by_queue: dict[str, list[str]] = {}
        for message in messages[start : start + BATCH_SIZE]:
            options = _direct_options(message.task)
            assert options is not None
            queue = options["queue"]
            headers = _headers(message, options=options, context=context)
            by_queue.setdefault(queue, []).append(_encode(message, headers, queue=queue, context=context))
        pipe = client.pipeline(transaction=False)
        for queue, payloads in by_queue.items():
            # One LPUSH of many values pushes them left to right, so workers (BRPOP) take them in order.
            pipe.lpush(queue, *payloads)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise OperationalError(f"Error while publishing to the Redis broker: {exc}") from exc


def new_task_id() -> str:
    """str(uuid.uuid4()) in a fifth of the time: 122 random bits with the version and variant set."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Celery's path ------------------------------------------------------------------------


def _publish_with_celery(messages: Sequence[Message]) -> None:
    app = current_app
    with app.producer_or_acquire() as producer, producer.batch(max_size=BATCH_SIZE):
        for message in messages:
            app.send_task(
                message.task,
                kwargs=dict(message.kwargs),
                task_id=message.task_id,
                eta=message.eta,
                headers=dict(message.headers) or None,
                producer=producer,
            )


def reset() -> None:
    """Forget cached task options and clients (tests that change the broker or the registry)."""
    _direct_options.cache_clear()
    _local.__dict__.clear()


HELD_SCAN_LIMIT = 10_000


def held_task_ids(queues: Sequence[str], *, limit: int = HELD_SCAN_LIMIT) -> set[str] | None:
    """The ids of the tasks the broker holds for `queues`: waiting on them, or reserved by a worker.

    Reserved means kombu's `unacked` hash (acks-late and ETA messages a worker holds; it is
    shared by every queue of the broker). None when that cannot be known: a broker other
    than Redis, or a queue longer than `limit` (reading it whole would cost more than the
    answer is worth). Callers treat None as "maybe on its way", never as lost.
    """
    if not _broker_is_redis():
        return None
    client = redis.Redis.from_url(str(settings.CELERY_BROKER_URL), socket_timeout=10)
    try:
        if any(int(client.llen(queue)) > limit for queue in queues):
            return None
        ids = set()
        for queue in queues:
            ids |= _task_ids(client.lrange(queue, 0, -1), enveloped=False)
        return ids | _task_ids(client.hvals("unacked"), enveloped=True)
    finally:
        client.close()


def _task_ids(raws: Sequence[bytes | str], *, enveloped: bool) -> set[str]:
    """The task ids in raw Redis-transport messages (in `unacked`, each is [message, exchange, routing key])."""
    ids = set()
    for raw in raws:
        try:
            message = json.loads(raw)
            ids.add(str((message[0] if enveloped else message)["headers"]["id"]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return ids
