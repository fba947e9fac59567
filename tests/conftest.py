"""Shared fixtures: a clean Redis for every test and the data migrations' rows; the support plugins."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings

pytest_plugins = [
    "tests.support.broker",
    "tests.support.personas",
]


def _assert_test_redis(url: str) -> None:
    # Guard against wiping a developer's Redis: the suite only flushes its own databases.
    db = int(url.rsplit("/", 1)[-1] or 0)
    # The environment, not settings.SETTINGS_MODULE: an override (live_server's ALLOWED_HOSTS) hides the latter.
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    assert module.endswith(".test") and db >= 2, f"refusing to flush {url}"


@pytest.fixture(autouse=True)
def clean_redis() -> Iterator[None]:
    from core.redis import get_redis

    _assert_test_redis(settings.REDIS_URL)
    get_redis().flushdb()
    yield


@pytest.fixture(autouse=True)
def migration_data(request: pytest.FixtureRequest) -> None:
    """Rows that data migrations install (notification templates, the `eic` group).

    A `transactional_db` test truncates every table when it ends, data-migration rows
    included, so each test that uses the database gets them back first.
    """
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if marker is None and not names & {"db", "transactional_db"}:
        return
    transactional = "transactional_db" in names or bool(
        marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0]))
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    from django.contrib.auth.models import Group

    from logistics.models import EIC_GROUP
    from notifications.services.templates import notification_templates_install_defaults

    notification_templates_install_defaults()
    Group.objects.get_or_create(name=EIC_GROUP)
