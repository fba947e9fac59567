"""An operator runs a job with parameters from the admin's form and watches its progress reach 100 %."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django_celery_results.models import TaskResult

from core.models import JobRun, User
from tests.browser.conftest import AdminBrowser
from tests.support.broker import BrokerProbe

pytestmark = pytest.mark.browser

RUN_PAGE = re.compile(r"^/admin/core/jobrun/(?P<pk>[^/]+)/change/$")


def _open_sleep_form(admin: AdminBrowser) -> None:
    admin.open("/admin/core/jobcatalogentry/")
    run_now = admin.row("sleep").find_element("partial link text", "Run now")
    assert run_now.get_attribute("href").endswith("/admin/core/jobcatalogentry/sleep/run/")
    admin.click_and_wait(run_now)
    assert admin.path == "/admin/core/jobcatalogentry/sleep/run/"


def _submit_parameters(admin: AdminBrowser, seconds: str) -> None:
    admin.fill("seconds", seconds)
    field = admin.driver.find_element("name", "seconds")
    form = field.find_element("xpath", "./ancestor::form")
    # The browser's own check (a number input's max) would stop the request before the server
    # saw it; what is tested here is the server's answer, which every other client gets too.
    admin.driver.execute_script("arguments[0].noValidate = true", form)
    admin.click_and_wait(form.find_element("css selector", "[type=submit]"))


def test_bad_parameters_are_shown_again_with_the_fields_error_and_nothing_is_queued(
    signed_in: AdminBrowser, broker: BrokerProbe
) -> None:
    # Given the sleep job's form, its default filled in
    admin = signed_in
    _open_sleep_form(admin)
    assert admin.find("[name=seconds]").get_attribute("value") == "5"

    # When the operator asks for more than the job allows
    _submit_parameters(admin, "601")

    # Then the same form comes back with the field's error and their value, and nothing was queued
    assert admin.path == "/admin/core/jobcatalogentry/sleep/run/"
    errors = admin.text(".errorlist")
    assert "600" in errors, errors
    assert admin.find("[name=seconds]").get_attribute("value") == "601"
    admin.shot("run-form-error")
    assert not JobRun.objects.filter(job_key="sleep").exists()
    assert broker.tasks("default") == []
    assert not TaskResult.objects.exists()


@pytest.mark.e2e
def test_a_job_run_from_the_form_shows_its_progress_until_100_percent(
    signed_in: AdminBrowser, operator: User, start_worker: Callable[..., Any]
) -> None:
    # Given a worker on the default queue
    worker = start_worker(queues="default")
    admin = signed_in

    # When the operator runs sleep for 8 seconds from the catalog's "Run now" form
    _open_sleep_form(admin)
    _submit_parameters(admin, "8")

    # Then they land on the run's page
    match = RUN_PAGE.match(admin.path)
    assert match, admin.path
    run = JobRun.objects.get(pk=match["pk"])
    assert (run.job_key, run.params, run.source, run.triggered_by_id) == ("sleep", {"seconds": 8}, "admin", operator.pk)
    assert run.task_id in admin.find("#run-flower-link").get_attribute("href")

    # And, as the page reloads itself, the bar moves through the seconds slept and ends at 100 %
    seen: list[tuple[int, str]] = []

    def finished(page: AdminBrowser) -> bool:
        value = int(float(page.find("#run-progress").get_attribute("value") or 0))
        text = page.text("#run-progress-text")
        if not seen or seen[-1] != (value, text):
            seen.append((value, text))
            if 0 < value < 100:
                page.shot("run-progress")
        return value == 100

    admin.wait_until(finished, timeout=40, message=f"the run's progress to reach 100 %; worker log {worker.log}")
    assert admin.text("#run-progress-text").startswith("100% (8 / 8)"), seen
    assert any(0 < value < 100 for value, _ in seen), f"no progress seen between 0 and 100 %: {seen}"
    assert [value for value, _ in seen] == sorted(value for value, _ in seen), seen
    run.refresh_from_db()
    assert run.status == JobRun.Status.SUCCEEDED

    # And the run list shows the run with its progress column
    admin.open("/admin/core/jobrun/")
    assert "progress" in admin.text("#result_list thead").lower()
    assert "100%" in admin.row("sleep", "#result_list tbody tr").text
