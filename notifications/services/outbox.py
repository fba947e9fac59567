"""Writing notifications: `notify` for one message, `notify_many` for a sweep's thousands.

The pending rows get `notifications.deliver_batch` intents in the core outbox (one per channel
and block of NOTIFICATIONS_BATCH_SIZE rows), in the caller's transaction, so a message
commits (or rolls back) with the change that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.services.bulk import insert_rows
from core.services.outbox import Intent, outbox_add_many
from notifications.exceptions import InvalidAddress
from notifications.models import Channel, Notification, NotificationTemplate, PushDevice
from notifications.validation import email_validate, looks_like_email, phone_validate

if TYPE_CHECKING:
    from core.models import User

logger = logging.getLogger(__name__)

# One INSERT of rows and one of delivery intents per chunk: 1,000 requests (2,000 rows for
# email + SMS) keep each statement well under a second on PostgreSQL.
CHUNK_SIZE = 1000


@dataclass(frozen=True)
class NotifyRequest:
    template: str
    context: dict[str, Any]
    channels: Sequence[str]
    dedupe_key: str
    user: User | None = None
    to: str | None = None


def notify(
    *,
    template: str,
    user: User | None = None,
    to: str | None = None,
    context: dict[str, Any],
    channels: Sequence[str],
    dedupe_key: str,
) -> list[Notification]:
    """Write one outbox row per channel (per device for push) in the caller's transaction.

    Delivery is enqueued when that transaction commits. A second call with the same
    `dedupe_key` returns the rows of the first and sends nothing. A channel the user has
    no address for is written `cancelled` with the reason; an unknown template or a
    malformed address is written `failed` with the error. Neither is sent or retried.
    """
    request = NotifyRequest(
        template=template, user=user, to=to, context=context, channels=channels, dedupe_key=dedupe_key
    )
    _check_request(request)
    existing = list(Notification.objects.filter(dedupe_group=dedupe_key).order_by("pk"))
    if existing:
        return existing
    rows = _build_rows(
        [request], templates=_templates_for([request]), devices=_devices_for([request]), now=timezone.now()
    )
    # A concurrent call with the same key waits here on the unique index, then inserts nothing.
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    saved = list(Notification.objects.filter(dedupe_group=dedupe_key).order_by("pk"))
    deliveries_record((n.pk, n.channel, n.enqueued_at, None) for n in saved if n.status == Notification.Status.PENDING)
    return saved


def notify_many(requests: Iterable[NotifyRequest], *, chunk_size: int = CHUNK_SIZE) -> int:
    """`notify` for many requests at once: rows by bulk_create, a delivery intent per pending row, in chunks.

    Returns how many rows this call wrote. Requests whose `dedupe_key` already has rows are
    skipped; of two concurrent calls with the same keys, each row is written (and counted)
    by one of them, the unique key deciding. Five queries per chunk of `chunk_size` requests.
    """
    written = 0
    iterator = iter(requests)
    while chunk := list(islice(iterator, chunk_size)):
        for request in chunk:
            _check_request(request)
        seen = _groups_with_rows({r.dedupe_key for r in chunk})
        fresh = list({r.dedupe_key: r for r in chunk if r.dedupe_key not in seen}.values())
        if not fresh:
            continue
        now = timezone.now()
        rows = _build_rows(fresh, templates=_templates_for(fresh), devices=_devices_for(fresh), now=now)
        # A single INSERT is atomic on its own; no savepoint needed inside the caller's transaction.
        # Rows a concurrent call inserted first are skipped: that call records their deliveries.
        inserted = insert_rows(Notification, rows, returning=("id", "channel", "enqueued_at", "status"))
        if inserted is None:  # not PostgreSQL
            Notification.objects.bulk_create(rows, ignore_conflicts=True)
            inserted = [
                row
                for row in Notification.objects.filter(dedupe_key__in=[r.dedupe_key for r in rows])
                .order_by("pk")
                .values_list("pk", "channel", "enqueued_at", "status")
                if row[2] == now  # a concurrent call's rows carry its own enqueued_at
            ]
        stored = sorted(inserted)
        written += len(stored)
        deliveries_record(
            (pk, channel, enqueued_at, None)
            for pk, channel, enqueued_at, status in stored
            if status == Notification.Status.PENDING
        )
    return written


def _groups_with_rows(groups: set[str]) -> set[str]:
    """The dedupe groups among `groups` that have rows already.

    On PostgreSQL the keys travel as one JSON parameter, each probed through the dedupe_group
    index: the plain `IN (…)` query was planned as a sequential scan of the whole table while
    its statistics lagged behind a burst of inserts (27 ms a chunk at 200,000 rows, growing).
    """
    if connection.vendor != "postgresql":
        return set(Notification.objects.filter(dedupe_group__in=groups).values_list("dedupe_group", flat=True))
    table = Notification._meta.db_table
    # One index probe per key, whatever the table's statistics say: a table that grew during
    # the run (never analyzed yet) otherwise gets a sequential scan per chunk.
    sql = (
        "SELECT k.value FROM jsonb_array_elements_text(%s::jsonb) AS k(value) "  # noqa: S608  (the model's own table; the keys are a parameter)
        f"CROSS JOIN LATERAL (SELECT 1 FROM {table} n WHERE n.dedupe_group = k.value LIMIT 1) AS hit"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [orjson.dumps(sorted(groups)).decode()])
        return {row[0] for row in cursor.fetchall()}


DELIVER_TASK = "notifications.deliver_batch"
# Rows put back for another try (a retry, a rate-limit wait, the recovery job) go on their own
# lane (queue `notifications_retry`), so a backlog of old rows never delays fresh messages.
REDELIVER_TASK = "notifications.redeliver_batch"


DeliveryRow = tuple[int, str, "datetime | None", "datetime | None"]


def deliveries_record(rows: Iterable[DeliveryRow], *, task: str = DELIVER_TASK) -> int:
    """Record delivery intents for (notification id, channel, enqueued_at, claimed_at) rows in the core outbox.

    Rows are grouped by channel, id block of NOTIFICATIONS_BATCH_SIZE, enqueued_at and
    claimed_at into one `task(channel, notification_ids)` intent each, so a sweep's thousand
    rows cost about twenty messages. The key is computable from the row alone
    (`delivery_key`), which is how the recovery job finds a row's message. It changes with
    every retry (a new enqueued_at after a new claim) and recovery (a new enqueued_at), so a
    row put back to pending gets a fresh intent, while a repeated call adds nothing. An
    `enqueued_at` in the future (a retry's planned time) becomes the intent's not-before
    time. Published when the caller's transaction commits. Returns how many it recorded.
    """
    groups: dict[str, tuple[str, list[int], datetime | None]] = {}
    for pk, channel, enqueued_at, claimed_at in rows:
        key = delivery_key(pk, channel, enqueued_at, claimed_at)
        groups.setdefault(key, (channel, [], enqueued_at))[1].append(pk)
    now = timezone.now()
    recorded = outbox_add_many(
        Intent(
            task=task,
            kwargs={"channel": channel, "notification_ids": sorted(ids)},
            dedupe_key=key,
            not_before=enqueued_at if enqueued_at is not None and enqueued_at > now else None,
        )
        for key, (channel, ids, enqueued_at) in groups.items()
    )
    return len(recorded)


def delivery_key(pk: int, channel: str, enqueued_at: datetime | None, claimed_at: datetime | None) -> str:
    """The dedupe key of the delivery intent that carries row `pk` as enqueued at `enqueued_at` after `claimed_at`."""
    block = pk // settings.NOTIFICATIONS_BATCH_SIZE
    enqueued = enqueued_at.timestamp() if enqueued_at else 0
    claimed = claimed_at.timestamp() if claimed_at else 0
    return f"deliver:{channel}:{block}:{enqueued:.6f}:{claimed:.6f}"


def summary_of(rows: Sequence[Notification], **extra: Any) -> dict[str, Any]:
    """What the send tasks return (and the results store keeps): ids, channels and outcomes, never the body."""
    return {
        **extra,
        "notifications": [{"id": n.pk, "channel": n.channel, "status": n.status, "error": n.last_error} for n in rows],
    }


def _check_request(request: NotifyRequest) -> None:
    # Programming errors, not bad input: raise at the call site instead of writing a row.
    if not request.dedupe_key:
        raise ValueError("notify() needs a non-empty dedupe_key")
    if not request.channels or isinstance(request.channels, str):
        raise ValueError("channels must be a non-empty list such as ['email', 'sms']")
    unknown = [c for c in request.channels if c not in Channel.values]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; use {Channel.values}")


def _templates_for(requests: Sequence[NotifyRequest]) -> set[tuple[str, str]]:
    keys = {r.template for r in requests}
    return set(NotificationTemplate.objects.filter(key__in=keys, is_active=True).values_list("key", "channel"))


def _devices_for(requests: Sequence[NotifyRequest]) -> dict[int, list[PushDevice]]:
    user_ids = {r.user.pk for r in requests if r.user is not None and not r.to and Channel.PUSH in r.channels}
    devices: dict[int, list[PushDevice]] = {}
    if user_ids:
        for device in PushDevice.objects.filter(user_id__in=user_ids, active=True).order_by("pk"):
            devices.setdefault(device.user_id, []).append(device)
    return devices


def _build_rows(
    requests: Sequence[NotifyRequest],
    *,
    templates: set[tuple[str, str]],
    devices: dict[int, list[PushDevice]],
    now: datetime,
) -> list[Notification]:
    rows: list[Notification] = []
    for request in requests:
        for channel in dict.fromkeys(request.channels):
            rows.extend(_rows_for_channel(request, channel, templates=templates, devices=devices, now=now))
    return rows


def _rows_for_channel(
    request: NotifyRequest,
    channel: str,
    *,
    templates: set[tuple[str, str]],
    devices: dict[int, list[PushDevice]],
    now: datetime,
) -> list[Notification]:
    key = f"{request.dedupe_key}:{channel}"
    context = request.context or {}
    data = _push_data(request) if channel == Channel.PUSH else {}

    def row(status: str = Notification.Status.PENDING, error: str = "", **fields: Any) -> Notification:
        fields.setdefault("dedupe_key", key)
        return Notification(
            channel=channel,
            user=request.user,
            template_key=request.template,
            context=context,
            data=data or {},
            dedupe_group=request.dedupe_key,
            status=status,
            last_error=error,
            enqueued_at=now,
            **fields,
        )

    if (request.template, channel) not in templates:
        return [row(Notification.Status.FAILED, f"unknown template {request.template!r} for channel {channel}")]

    if channel == Channel.PUSH:
        if request.to:
            return [row(to_address=request.to)]
        if request.user is None:
            return [row(Notification.Status.FAILED, "push needs a user with an active device or a device token")]
        user_devices = devices.get(request.user.pk, [])
        if not user_devices:
            return [row(Notification.Status.FAILED, f"user {request.user.pk} has no active push device")]
        return [row(to_address=d.token, device=d, dedupe_key=f"{key}:{d.pk}") for d in user_devices]

    address, skip_reason = _address_for(request, channel)
    if skip_reason:
        return [row(Notification.Status.CANCELLED, f"skipped: {skip_reason}", to_address=address)]
    try:
        email_validate(address) if channel == Channel.EMAIL else phone_validate(address)
    except InvalidAddress as exc:
        return [row(Notification.Status.FAILED, str(exc), to_address=address[:4096])]
    return [row(to_address=address)]


def _push_data(request: NotifyRequest) -> dict[str, str]:
    """FCM data: context["data"] when the caller gave one, else the context's plain values."""
    context = request.context or {}
    given = context.get("data")
    if isinstance(given, dict):
        return {str(k): str(v) for k, v in given.items()}
    data = {k: str(v) for k, v in context.items() if isinstance(v, (str, int, float, bool))}
    data["template"] = request.template
    return data


def _address_for(request: NotifyRequest, channel: str) -> tuple[str, str]:
    """The address for `channel`, or a reason to skip the channel."""
    if request.to:
        if len(request.channels) == 1:
            return request.to, ""
        # One explicit address and several channels: each channel takes the kind it can use.
        is_email = looks_like_email(request.to)
        if (channel == Channel.EMAIL) == is_email:
            return request.to, ""
        return "", f"the address given is not for {channel}"
    if request.user is None:
        return "", "no user and no address given"
    if channel == Channel.EMAIL:
        return (request.user.email, "") if request.user.email else ("", f"user {request.user.pk} has no email address")
    phone = getattr(request.user, "phone_number", "")
    return (phone, "") if phone else ("", f"user {request.user.pk} has no phone number")
