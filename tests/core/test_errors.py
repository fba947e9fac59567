"""One error vocabulary: every API error is `{"detail", "errors"}`, the CLI exits by kind, the admin says it."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from core.errors import Conflict, Invalid, NotFound, PermissionDenied, Unavailable, command_error

pytestmark = pytest.mark.django_db


def _is_error_body(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"detail", "errors"} and isinstance(body["detail"], str)


@pytest.mark.parametrize(
    "path", ["/api/v1/no-such-thing/", "/api/nothing-here", "/api/v1/admin/jobs/sleep/nope/", "/api/driver/x/y/"]
)
def test_an_unknown_url_under_api_answers_json_404_not_an_html_page(staff_client: APIClient, path: str) -> None:
    response = staff_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert _is_error_body(response.json()) and path in response.json()["detail"]


def test_a_post_to_an_unknown_api_url_is_the_same_json_404_not_a_csrf_page() -> None:
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/api/v1/nothing/", {"a": 1})
    assert response.status_code == 404 and _is_error_body(response.json())


def test_an_api_url_missing_only_its_trailing_slash_is_redirected(staff_client: APIClient) -> None:
    response = staff_client.get("/api/v1/admin/jobs")
    assert response.status_code == 301
    assert response["Location"].endswith("/api/v1/admin/jobs/")


def test_a_page_outside_the_api_keeps_djangos_own_404(client: Any) -> None:
    assert client.get("/no-such-page/").status_code == 404
    assert not client.get("/no-such-page/")["Content-Type"].startswith("application/json")


def test_invalid_input_names_the_field_in_errors(staff_client: APIClient) -> None:
    response = staff_client.post(
        "/api/v1/admin/jobs/payment_timeouts/trigger/", {"params": {"older_than_days": 0}}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert _is_error_body(body) and "older_than_days" in body["errors"]
    assert "older_than_days" in body["detail"]


def test_a_serializer_error_has_the_same_shape(staff_client: APIClient) -> None:
    response = staff_client.post("/api/v1/admin/jobs/sleep/trigger/", {"async": "maybe"}, format="json")
    assert response.status_code == 400
    assert _is_error_body(response.json()) and "async" in response.json()["errors"]


@pytest.mark.parametrize(
    ("client_name", "status"), [("anon_client", 401), ("customer_client", 403)], ids=["anonymous", "not-staff"]
)
def test_authentication_and_permission_errors_have_the_same_shape(
    request: pytest.FixtureRequest, client_name: str, status: int
) -> None:
    response = request.getfixturevalue(client_name).get("/api/v1/admin/jobs/")
    assert response.status_code == status and _is_error_body(response.json())


def test_a_wrong_method_has_the_same_shape(staff_client: APIClient) -> None:
    response = staff_client.delete("/api/v1/admin/jobs/")
    assert response.status_code == 405 and _is_error_body(response.json())


def test_an_unknown_job_is_404_with_the_same_shape(staff_client: APIClient) -> None:
    response = staff_client.get("/api/v1/admin/jobs/nope/")
    assert response.status_code == 404 and _is_error_body(response.json())
    assert "nope" in response.json()["detail"]


@pytest.mark.parametrize(
    ("error", "status", "exit_code"),
    [
        (Invalid({"days": ["Must be at least 1."]}), 400, 2),
        (PermissionDenied(), 403, 1),
        (NotFound("No order 7."), 404, 2),
        (Conflict("offer expired"), 409, 1),
        (Unavailable("broker down"), 503, 1),
    ],
)
def test_each_error_has_one_status_and_one_exit_code(error: Any, status: int, exit_code: int) -> None:
    assert error.status_code == status
    translated = command_error(error)
    assert isinstance(translated, CommandError) and translated.returncode == exit_code
    assert error.detail in str(translated)


def test_invalid_lists_each_field_and_reason_in_its_text() -> None:
    error = Invalid({"days_threshold": ["Ensure this value is less than or equal to 365."], "x": "bad"})
    assert error.errors == {"days_threshold": ["Ensure this value is less than or equal to 365."], "x": ["bad"]}
    assert "days_threshold: Ensure this value is less than or equal to 365." in error.as_text()
    assert error.as_body() == {"detail": error.detail, "errors": error.errors}


def test_the_cli_prints_the_reason_and_exits_2_for_an_unknown_job() -> None:
    with pytest.raises(CommandError) as raised:
        call_command("jobs", "run", "nope", stdout=StringIO())
    assert raised.value.returncode == 2 and "Unknown job 'nope'" in str(raised.value)
