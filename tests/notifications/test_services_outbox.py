from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, transaction

from core.models import User
from notifications.models import Notification, PushDevice
from notifications.services import NotifyRequest, notify, notify_many

CONTEXT = {"order_number": "AB12", "total": "10.00", "currency": "EUR"}
pytestmark = pytest.mark.django_db


def test_it_writes_one_pending_row_per_channel_and_enqueues_delivery_when_the_transaction_commits(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a user with an email address and a phone number
    # When a payment_failed notification is sent on both channels
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        rows = notify(
            template="payment_failed", user=recipient, context=CONTEXT, channels=["email", "sms"], dedupe_key="pf:1"
        )
        # Then nothing is on the broker before the commit
        assert broker.delivery_ids() == []
    for callback in callbacks:
        callback()
    # And after it, one pending row per channel with its address, each enqueued once
    assert [(n.channel, n.to_address, n.status) for n in rows] == [
        ("email", "ada@example.com", "pending"),
        ("sms", "+14155552671", "pending"),
    ]
    assert {n.dedupe_key for n in rows} == {"pf:1:email", "pf:1:sms"}
    assert sorted(broker.delivery_ids()) == sorted(n.pk for n in rows)


def test_nothing_is_written_or_enqueued_when_the_callers_transaction_rolls_back(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a caller whose transaction fails after notify()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        notify(template="payment_failed", user=recipient, context=CONTEXT, channels=["sms"], dedupe_key="pf:2")
        raise RuntimeError("the order save failed")
    # Then no row and no message exist
    assert Notification.objects.count() == 0
    assert broker.delivery_ids() == []


def test_the_same_dedupe_key_twice_returns_the_first_rows_and_enqueues_nothing_more(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a notification already written
    with django_capture_on_commit_callbacks(execute=True):
        first = notify(template="payment_failed", user=recipient, context=CONTEXT, channels=["sms"], dedupe_key="k")
    # When the same key is notified again, even with other channels
    with django_capture_on_commit_callbacks(execute=True):
        second = notify(
            template="payment_failed", user=recipient, context=CONTEXT, channels=["email", "sms"], dedupe_key="k"
        )
    # Then the first rows come back and only one delivery was ever enqueued
    assert [n.pk for n in second] == [n.pk for n in first]
    assert Notification.objects.count() == 1
    assert broker.delivery_ids() == [first[0].pk]


def test_a_channel_the_user_has_no_address_for_is_skipped_with_the_reason(db: Any, broker: Any) -> None:
    # Given a user without a phone number
    user = User.objects.create_user(username="nophone", email="np@example.com")
    # When notified by email and SMS
    rows = notify(template="payment_failed", user=user, context=CONTEXT, channels=["email", "sms"], dedupe_key="np")
    # Then email is pending and SMS cancelled with the reason
    by_channel = {n.channel: n for n in rows}
    assert by_channel["email"].status == Notification.Status.PENDING
    assert by_channel["sms"].status == Notification.Status.CANCELLED
    assert by_channel["sms"].last_error == f"skipped: user {user.pk} has no phone number"


def test_an_unknown_template_is_recorded_failed_with_the_error_and_never_enqueued(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        rows = notify(template="no_such_template", user=recipient, context={}, channels=["email"], dedupe_key="u")
    assert rows[0].status == Notification.Status.FAILED
    assert rows[0].last_error == "unknown template 'no_such_template' for channel email"
    assert broker.delivery_ids() == []


@pytest.mark.parametrize(
    ("channel", "address", "error"),
    [
        ("email", "not-an-email@", "malformed email address 'not-an-email@'"),
        ("sms", "0044 7911 123456", "is not in E.164 form"),
        ("sms", "+1234567", "is not a valid number"),
    ],
)
def test_a_malformed_address_is_recorded_failed_and_never_enqueued(
    db: Any, broker: Any, django_capture_on_commit_callbacks: Any, channel: str, address: str, error: str
) -> None:
    template = "raw_email" if channel == "email" else "raw_sms"
    with django_capture_on_commit_callbacks(execute=True):
        rows = notify(template=template, to=address, context={"body": "x"}, channels=[channel], dedupe_key="bad")
    assert rows[0].status == Notification.Status.FAILED
    assert error in rows[0].last_error
    assert broker.delivery_ids() == []


def test_push_to_a_user_goes_to_every_active_device_one_row_each(recipient: User, broker: Any) -> None:
    # Given two active devices and one deactivated
    a = PushDevice.objects.create(user=recipient, token="tok-a")
    b = PushDevice.objects.create(user=recipient, token="tok-b", platform=PushDevice.Platform.IOS)
    PushDevice.objects.create(user=recipient, token="tok-dead", active=False)
    # When a push is sent to the user
    rows = notify(
        template="driver_trip_offer",
        user=recipient,
        context={"station_name": "North", "quantity": 3, "seconds_to_accept": 300, "stock_request_id": 7},
        channels=["push"],
        dedupe_key="offer:1",
    )
    # Then each active device has its own pending row, with the context as FCM data
    assert sorted((n.device_id, n.to_address) for n in rows) == [(a.pk, "tok-a"), (b.pk, "tok-b")]
    assert all(n.status == Notification.Status.PENDING for n in rows)
    assert rows[0].data["stock_request_id"] == "7"
    assert rows[0].data["template"] == "driver_trip_offer"


def test_push_to_a_user_without_an_active_device_fails_with_a_clear_error(recipient: User, broker: Any) -> None:
    rows = notify(
        template="raw_push", user=recipient, context={"title": "t", "body": "b"}, channels=["push"], dedupe_key="p"
    )
    assert [(n.status, n.last_error) for n in rows] == [("failed", f"user {recipient.pk} has no active push device")]


def test_an_explicit_address_goes_to_the_channel_of_its_kind(db: Any, broker: Any) -> None:
    rows = notify(
        template="order_shipped",
        to="+919876543210",
        context={"order_number": "Z"},
        channels=["email", "sms"],
        dedupe_key="x",
    )
    by_channel = {n.channel: n for n in rows}
    assert (by_channel["sms"].status, by_channel["sms"].to_address) == ("pending", "+919876543210")
    assert by_channel["email"].status == "cancelled"


def test_a_bad_call_raises_at_the_call_site(recipient: User) -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        notify(template="raw_sms", user=recipient, context={}, channels=["fax"], dedupe_key="f")
    with pytest.raises(ValueError, match="non-empty list"):
        notify(template="raw_sms", user=recipient, context={}, channels="sms", dedupe_key="f")
    with pytest.raises(ValueError, match="dedupe_key"):
        notify(template="raw_sms", user=recipient, context={}, channels=["sms"], dedupe_key="")


def test_notify_many_writes_rows_in_bulk_and_skips_keys_already_notified(
    recipient: User, broker: Any, django_capture_on_commit_callbacks: Any, django_assert_max_num_queries: Any
) -> None:
    # Given one request already notified
    notify(template="payment_failed", user=recipient, context=CONTEXT, channels=["email"], dedupe_key="bulk:0")
    requests = [
        NotifyRequest(
            template="payment_failed",
            user=recipient,
            context=CONTEXT,
            channels=["email", "sms"],
            dedupe_key=f"bulk:{i}",
        )
        for i in range(120)
    ]
    # When 120 requests go through notify_many
    with django_capture_on_commit_callbacks(execute=True), django_assert_max_num_queries(14):
        written = notify_many(requests)
    # Then 119 new requests x 2 channels were written and enqueued, in a handful of queries
    assert written == 238
    assert Notification.objects.count() == 239
    assert len(broker.delivery_ids()) == 238


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_notify_calls_with_the_same_key_write_one_set_of_rows(broker: Any) -> None:
    # Given a user, and two callers racing with the same dedupe_key in their own transactions
    user = User.objects.create_user(username="race", email="race@example.com", phone_number="+14155552671")
    barrier = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            with transaction.atomic():
                barrier.wait(timeout=5)
                rows = notify(
                    template="payment_failed", user=user, context=CONTEXT, channels=["email", "sms"], dedupe_key="race"
                )
                results.append(sorted(n.pk for n in rows))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    # Then both see the same two rows and no error
    assert errors == []
    assert Notification.objects.filter(dedupe_group="race").count() == 2
    assert results[0] == results[1]


def test_a_broker_failure_at_commit_leaves_the_row_pending_and_the_outbox_relay_sends_it(
    broker: Any, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    from core.services import outbox
    from tests.support.outbox import relay

    def broker_down(messages: Any) -> None:
        raise OperationalError("broker unreachable")

    # Given the broker refuses the delivery message when the caller commits
    monkeypatch.setattr(outbox, "messages_publish", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        row = notify(template="raw_sms", to="+14155552671", context={"body": "hi"}, channels=["sms"], dedupe_key="k")[0]
    # Then the caller saw no error, the row is kept pending, and nothing reached the broker
    row.refresh_from_db()
    assert row.status == "pending"
    assert broker.delivery_ids() == []

    # When the broker is back and the outbox relay runs
    monkeypatch.undo()
    relay()
    # Then the row is enqueued for delivery, once
    assert broker.delivery_ids() == [row.pk]
    relay()
    assert broker.delivery_ids() == [row.pk]
