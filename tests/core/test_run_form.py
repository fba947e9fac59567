"""The admin's "Run now" form: built from the job's parameter serializer; bad input queues nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.models import JobRun, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def root_client(db: Any) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-1"))
    return client


def test_a_job_with_parameters_opens_a_form_with_its_defaults(root_client: Client) -> None:
    catalog = root_client.get("/admin/core/jobcatalogentry/").content.decode()
    assert 'href="/admin/core/jobcatalogentry/sleep/run/"' in catalog

    page = root_client.get("/admin/core/jobcatalogentry/sleep/run/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="seconds"' in html and 'value="5"' in html and 'max="600"' in html
    assert "How long to sleep." in html


def test_invalid_values_are_shown_on_their_field_and_nothing_is_queued(root_client: Client) -> None:
    too_long = root_client.post("/admin/core/jobcatalogentry/sleep/run/", {"seconds": "9999"})
    assert too_long.status_code == 200
    assert too_long.context["form"].errors["seconds"]
    not_a_number = root_client.post("/admin/core/jobcatalogentry/sleep/run/", {"seconds": "soon"})
    assert "Enter a whole number." in not_a_number.content.decode()
    assert not JobRun.objects.exists()


def test_the_serializer_decides_what_the_form_cannot(root_client: Client) -> None:
    # subscription_ids: a list field typed as text; the serializer's child validation names the bad item.
    page = root_client.post("/admin/core/jobcatalogentry/subscription_charge_now/run/", {"subscription_ids": "3,x"})
    assert page.status_code == 200
    assert page.context["form"].errors["subscription_ids"] == ["item 1: A valid integer is required."]
    assert not JobRun.objects.exists()


def test_a_valid_form_queues_the_run_and_opens_its_page(
    root_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = root_client.post("/admin/core/jobcatalogentry/sleep/run/", {"seconds": "2"})
    run = JobRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/core/jobrun/{run.pk}/change/"
    assert (run.params, run.source, run.status) == ({"seconds": 2}, "admin", "queued")


def test_an_empty_field_leaves_the_jobs_default(root_client: Client, django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        root_client.post("/admin/core/jobcatalogentry/payment_timeouts/run/", {"older_than_days": ""})
    assert JobRun.objects.get().params == {}


def test_staff_without_the_run_permission_get_no_form(client: Client) -> None:
    client.force_login(User.objects.create_user("viewer", password="pw", is_staff=True))
    assert client.get("/admin/core/jobcatalogentry/sleep/run/").status_code == 403


def test_a_post_without_the_run_permission_queues_nothing(client: Client) -> None:
    client.force_login(User.objects.create_user("viewer2", password="pw", is_staff=True))
    assert client.post("/admin/core/jobcatalogentry/sleep/run/", {"seconds": "1"}).status_code == 403
    assert not JobRun.objects.exists()


def test_a_runner_who_may_not_read_runs_is_sent_back_to_the_catalog(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    from django.contrib.auth.models import Permission

    runner = User.objects.create_user("runner", password="pw", is_staff=True)
    runner.user_permissions.add(Permission.objects.get(codename="run_job"))
    client.force_login(runner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/core/jobcatalogentry/sleep/run/", {"seconds": "1"})
    assert response.status_code == 302 and response["Location"] == "/admin/core/jobcatalogentry/"
    assert JobRun.objects.get().triggered_by == runner
