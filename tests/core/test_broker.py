"""core.broker writes the message Celery and kombu would write, only faster; anything unusual goes through Celery."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import shared_task
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.exceptions import OperationalError

import notifications.tasks  # noqa: F401  # registers the tasks the messages name
import payments.tasks  # noqa: F401
from core import broker as publisher
from core.broker import Message
from tests.support.broker import BrokerProbe, test_broker


@shared_task(name="tests.core.prioritised", priority=5)
def prioritised() -> None:
    """A task with its own priority: the direct path does not write those."""


@pytest.fixture(autouse=True)
def fresh_publisher() -> Iterator[None]:
    publisher.reset()
    yield
    publisher.reset()


def _raw(queue: str) -> list[dict[str, Any]]:
    """The envelopes waiting on `queue`, oldest first, with the body decoded."""
    out = []
    for raw in reversed(test_broker().lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
        out.append(envelope)
    return out


def _celery_and_direct(message: Message, queue: str) -> tuple[dict[str, Any], dict[str, Any]]:
    test_broker().delete(queue)
    publisher._publish_with_celery([message])
    publisher._publish_direct([message])
    celery_written, direct_written = _raw(queue)
    return celery_written, direct_written


CASES = [
    pytest.param(
        Message(
            task="payments.process_single_subscription",
            kwargs={"subscription_id": 7, "period_start": "2026-12-03"},
            task_id=str(uuid.uuid4()),
        ),
        "subscriptions",
        id="plain kwargs on the subscriptions queue",
    ),
    pytest.param(
        Message(
            task="notifications.deliver",
            kwargs={"notification_id": 12},
            task_id=str(uuid.uuid4()),
            eta=datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
            headers={"outbox_intent": 99},
        ),
        "notifications",
        id="an ETA and the outbox header",
    ),
    pytest.param(
        Message(
            task="notifications.send_sms",
            kwargs={"to": "+14155550123", "body": "hi 'there' \u00e9"},
            task_id=str(uuid.uuid4()),
        ),
        "notifications",
        id="a task that ignores its result, non-ASCII text",
    ),
    pytest.param(
        Message(task="core.sleep", kwargs={"seconds": 1}, task_id=str(uuid.uuid4()), headers={"job_source": "api"}),
        "default",
        id="a catalog job with the trigger's header",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("message", "queue"), CASES)
def test_the_direct_envelope_is_the_one_celery_and_kombu_write(
    broker: BrokerProbe, message: Message, queue: str
) -> None:
    # Given the same message sent through Celery's send_task and through the direct path
    celery_written, direct_written = _celery_and_direct(message, queue)

    # Then every field matches but the delivery tag, a fresh UUID per message either way
    for envelope in (celery_written, direct_written):
        tag = envelope["properties"].pop("delivery_tag")
        assert uuid.UUID(tag).version == 4 and str(uuid.UUID(tag)) == tag
    differing = {
        (part, key): (direct_written[part].get(key), celery_written[part].get(key))
        for part in ("headers", "properties")
        for key in direct_written[part].keys() | celery_written[part].keys()
        if direct_written[part].get(key) != celery_written[part].get(key)
    }
    assert differing == {}
    assert direct_written == celery_written
    assert direct_written["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}


@pytest.mark.django_db
def test_a_long_argument_list_is_shortened_in_the_repr_as_celery_does(broker: BrokerProbe) -> None:
    message = Message(
        task="payments.notify_payment_failed",
        kwargs={"order_ids": [str(uuid.uuid4()) for _ in range(200)]},
        task_id=str(uuid.uuid4()),
    )

    celery_written, direct_written = _celery_and_direct(message, "payments")

    assert len(direct_written["headers"]["kwargsrepr"]) < 2000
    assert direct_written["headers"]["kwargsrepr"] == celery_written["headers"]["kwargsrepr"]
    assert direct_written["body"] == celery_written["body"]


@pytest.mark.django_db
def test_many_messages_keep_their_order_per_queue_across_batches(broker: BrokerProbe) -> None:
    count = 2 * 1000 + 17  # three batches
    messages = [
        Message(task="notifications.deliver", kwargs={"notification_id": n}, task_id=str(uuid.uuid4()))
        for n in range(count)
    ] + [Message(task="core.sleep", kwargs={"seconds": 0}, task_id=str(uuid.uuid4()))]

    broker.flush()
    from core.services.outbox import messages_publish

    messages_publish(messages)

    assert [t.kwargs["notification_id"] for t in broker.tasks("notifications")] == list(range(count))
    assert [t.name for t in broker.tasks("default")] == ["core.sleep"]


@pytest.mark.django_db
def test_a_task_with_options_the_direct_path_does_not_write_goes_through_celery(broker: BrokerProbe) -> None:
    message = Message(task="tests.core.prioritised", kwargs={}, task_id=str(uuid.uuid4()))

    assert publisher._direct_options("tests.core.prioritised") is None
    from core.services.outbox import messages_publish

    messages_publish([message])

    # Celery's Redis transport puts priority 5 on its own list
    keys = {key.decode() for key in test_broker().keys("default*")}
    assert any(key.startswith("default") and key != "default" for key in keys), keys


@pytest.mark.django_db
def test_a_broker_that_refuses_the_connection_is_an_operational_error_and_nothing_is_half_sent() -> None:
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/3", CELERY_BROKER_CONNECTION_TIMEOUT=0.5):
        publisher.reset()
        with pytest.raises(OperationalError, match="Redis broker"):
            publisher.publish([Message(task="core.sleep", kwargs={}, task_id=str(uuid.uuid4()))])


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(kwargs=st.dictionaries(st.text(max_size=20), JSON_VALUES, max_size=5))
def test_the_arguments_shown_in_flower_read_as_celery_writes_them(kwargs: dict[str, Any]) -> None:
    from celery import current_app
    from celery.utils.saferepr import saferepr

    limit, levels = current_app.amqp.kwargsrepr_maxsize, current_app.conf.task_repr_maxlevels

    assert publisher._kwargsrepr(kwargs, limit=limit, levels=levels) == saferepr(kwargs, limit, maxlevels=levels)
