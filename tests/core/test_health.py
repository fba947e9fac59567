from __future__ import annotations

import time

import pytest
from django.test import Client

from core.redis import get_redis
from core.services.health import BEAT_FIRED_KEY, beat_fired_record

pytestmark = pytest.mark.django_db


def test_health_is_503_naming_workers_and_beat_when_neither_runs(client: Client) -> None:
    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert set(body["down"]) == {"workers", "beat"}
    assert "never recorded a heartbeat" in body["checks"]["beat"]["error"]


def test_a_fresh_heartbeat_makes_beat_healthy_and_a_stale_one_does_not(client: Client) -> None:
    beat_fired_record()
    assert client.get("/health/").json()["checks"]["beat"]["ok"] is True

    get_redis().set(BEAT_FIRED_KEY, repr(time.time() - 300))
    beat = client.get("/health/").json()["checks"]["beat"]
    assert beat["ok"] is False and "limit 120s" in beat["error"]


def test_an_unreachable_broker_is_named(client: Client, settings: object) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # type: ignore[attr-defined]

    response = client.get("/health/")

    assert response.status_code == 503
    assert "broker" in response.json()["down"]


def test_beat_sending_the_heartbeat_is_what_counts_as_beat_alive(client: Client) -> None:
    import redis
    from django.conf import settings

    from core.tasks import beat_heartbeat

    beat_heartbeat.apply_async(headers={"periodic_task_name": "beat_heartbeat"})
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default")

    assert client.get("/health/").json()["checks"]["beat"]["ok"] is True


def test_the_report_is_computed_once_per_cache_period(client: Client, settings: object) -> None:
    settings.HEALTH_CACHE_SECONDS = 60  # type: ignore[attr-defined]
    first = client.get("/health/").json()
    beat_fired_record()  # beat comes up after the first check

    second = client.get("/health/").json()

    assert second == first  # served from the cache, no second ping broadcast
