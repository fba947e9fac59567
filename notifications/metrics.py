"""Notifications' families on /metrics (registered with core.metrics in NotificationsConfig.ready)."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric


def notification_metrics() -> Iterator[Metric]:
    from notifications.models import Channel, Notification

    dead = GaugeMetricFamily(
        "notifications_dead_letters",
        "Notifications failed for good (retries exhausted), by channel",
        labels=["channel"],
    )
    waiting = GaugeMetricFamily("notifications_pending", "Notifications not yet sent, by channel", labels=["channel"])
    rows = Notification.objects.filter(status__in=["failed", "pending", "sending"]).values("channel", "status")
    counts = {(r["channel"], r["status"]): r["n"] for r in rows.annotate(n=Count("id"))}
    for channel in Channel.values:
        dead.add_metric([channel], counts.get((channel, "failed"), 0))
        waiting.add_metric([channel], counts.get((channel, "pending"), 0) + counts.get((channel, "sending"), 0))
    yield dead
    yield waiting
