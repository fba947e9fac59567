"""Every admin page (GET), as staff and anonymous, on `make run`'s SQLite configuration.

The pages come from the URL resolver's admin namespace, so a newly registered model or custom
admin view is covered at once; a route whose parameters the suite cannot fill fails, naming
itself. Object pages open the first demo row (or a missing id, which the admin redirects).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.smoke.conftest import World

# Values for the custom admin views' own parameters.
KEYS = {"core_jobcatalogentry_run": "sleep", "core_jobcatalogentry_resume": "price_history"}


def _admin_routes() -> Iterator[tuple[str, str | None]]:
    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> Iterator[tuple[str, str | None]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern.name

    for top in get_resolver().url_patterns:
        if isinstance(top, URLResolver) and top.namespace == "admin":
            yield from walk(top.url_patterns, str(top.pattern))


ROUTES = sorted(_admin_routes(), key=lambda r: r[0])


def _first_pk(route: str) -> str:
    app_label, model_name = route.split("/")[1:3]
    model = apps.get_model(app_label, model_name)
    pk = model._default_manager.order_by("pk").values_list("pk", flat=True).first()
    return "0" if pk is None else str(pk)


def _path(route: str, name: str | None, world: World) -> str:
    """The URL to GET for an admin route."""
    if route == "admin/(?P<url>.*)$":
        return "/admin/no-such-page/"
    if route.startswith("admin/^(?P<app_label>"):
        return "/admin/payments/"
    if name == "view_on_site":
        from django.contrib.contenttypes.models import ContentType

        from core.models import User

        return f"/admin/r/{ContentType.objects.get_for_model(User).pk}/{world.users['staff'].pk}/"
    path = route
    if "<str:key>" in path:
        assert name in KEYS, f"admin route {route} ({name}) needs a key in tests/smoke/test_admin.py KEYS"
        path = path.replace("<str:key>", KEYS[name])
    if "<path:object_id>" in path or "<id>" in path:
        pk = _first_pk(route)
        path = path.replace("<path:object_id>", pk).replace("<id>", pk)
    assert not re.search(r"[<>()^$?*]", path), (
        f"admin route {route} ({name}) has parameters tests/smoke/test_admin.py cannot fill: teach _path"
    )
    return "/" + path


@pytest.mark.parametrize("persona", ["staff", "anonymous"])
@pytest.mark.parametrize(("route", "name"), ROUTES, ids=[route for route, _ in ROUTES])
def test_the_admin_page_renders_without_a_server_error(
    world: World, route: str, name: str | None, persona: str
) -> None:
    client = Client()
    if persona == "staff":
        client.force_login(world.users["staff"])

    path = _path(route, name, world)
    response = client.get(path)

    where = f"GET {path} as {persona}: {response.status_code}"
    assert response.status_code < 500, where
    if persona == "staff" and name and name.endswith("_changelist"):
        assert response.status_code == 200, where
    if persona == "anonymous" and response.status_code == 302:
        assert response["Location"].startswith(("/admin/login/", "/admin/")), where
    if persona == "anonymous" and name and name.endswith(("_changelist", "_change", "_add")):
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), where
