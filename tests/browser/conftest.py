"""The admin in a real browser: headless Chromium driven by Selenium against a live server.

The server is pytest-django's `live_server` (a thread of this process serving the test
database; each test is transactional, so the worker and beat processes started by the
e2e fixtures see what the test and the server write, and the other way round).

Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (scripts/ensure_browser.sh,
run by `make test`, installs them); CHROMIUM_BINARY and CHROMEDRIVER_PATH point at others.
With BROWSER_SCREENSHOTS set to a folder (`make screenshots`: docs/images) every
`admin.shot(name)` also saves the page as `<name>.png` there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from core.models import User

# The e2e fixtures (real `celery worker` and `celery beat` processes), shared rather than copied.
from tests.e2e.conftest import purge_broker, start_beat, start_worker  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_PASSWORD = "pw-operator-1"
WINDOW = (1440, 900)


def _executable(variable: str, *names: str) -> str:
    path = os.environ.get(variable) or next((found for name in names if (found := shutil.which(name))), None)
    if not path or not Path(path).is_file():
        pytest.fail(
            f"the browser tests need {names[0]} ({variable} or on PATH): run scripts/ensure_browser.sh, "
            "which installs Debian's chromium and chromium-driver as root and says how otherwise",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def chrome_paths() -> tuple[str, str]:
    return (
        _executable("CHROMIUM_BINARY", "chromium", "chromium-browser"),
        _executable("CHROMEDRIVER_PATH", "chromedriver"),
    )


@pytest.fixture
def driver(chrome_paths: tuple[str, str], tmp_path: Path) -> Iterator[webdriver.Chrome]:
    binary, driver_path = chrome_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",  # a container's /dev/shm is small
        "--disable-gpu",
        "--no-first-run",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(options=options, service=service)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


class AdminBrowser:
    """What an operator does in the admin: open a page, read it, click, fill in, save a screenshot."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, shots: Path | None) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return url.removeprefix(self.base_url)

    def text(self, css: str = "body") -> str:
        return str(self.find(css).text)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def has(self, css: str) -> bool:
        return bool(self.find_all(css))

    def click_and_wait(self, element: WebElement, timeout: float = 30) -> None:
        """Click what submits a form or follows a link, and wait for the next page to replace this one."""
        page = self.find("html")
        element.click()
        WebDriverWait(self.driver, timeout).until(lambda _: _is_stale(page))
        WebDriverWait(self.driver, timeout).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    def fill(self, name: str, value: str) -> None:
        field = self.driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    def select(self, name: str, visible_text: str) -> None:
        Select(self.driver.find_element(By.NAME, name)).select_by_visible_text(visible_text)

    def messages(self) -> list[str]:
        """The admin's message list (success, warning and error notes at the top of a page)."""
        return [m.text for m in self.find_all("ul.messagelist li")]

    def row(self, text: str, css: str = "table tbody tr") -> WebElement:
        """The first table row whose text contains `text`."""
        for row in self.find_all(css):
            if text in row.text:
                return row
        raise AssertionError(f"no row with {text!r} on {self.path}:\n{self.text()}")

    def login(self, username: str, password: str) -> None:
        self.open("/admin/login/?next=/admin/")
        self.fill("username", username)
        self.fill("password", password)
        self.click_and_wait(self.find("#login-form [type=submit]"))

    def shot(self, name: str) -> None:
        """Save the whole page as docs/images/<name>.png when screenshots are asked for (make screenshots)."""
        if self.shots is None:
            return
        self.shots.mkdir(parents=True, exist_ok=True)
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(WINDOW[0], min(max(height, WINDOW[1]), 1600))
        try:
            self.find("html").screenshot(str(self.shots / f"{name}.png"))
        finally:
            self.driver.set_window_size(*WINDOW)

    def wait_until(self, predicate: Callable[[AdminBrowser], Any], *, timeout: float, message: str) -> Any:
        """Poll `predicate(self)` across reloads (a page that refreshes itself makes elements stale)."""

        def attempt(_: Any) -> Any:
            try:
                return predicate(self)
            except StaleElementReferenceException:
                return False

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(attempt)
        except Exception as exc:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message}; page {self.path}:\n{self.text()}"
            ) from exc


def _is_stale(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


@pytest.fixture
def operator(transactional_db: Any) -> User:
    """An operator: staff with every admin permission (runs jobs, edits schedules, retries dead letters)."""
    return User.objects.create_user(
        username="operator", password=OPERATOR_PASSWORD, email="ops@example.com", is_staff=True, is_superuser=True
    )


@pytest.fixture
def admin(driver: webdriver.Chrome, live_server: Any) -> AdminBrowser:
    shots = os.environ.get("BROWSER_SCREENSHOTS")
    return AdminBrowser(driver, live_server.url, (ROOT / shots) if shots else None)


@pytest.fixture
def signed_in(admin: AdminBrowser, operator: User) -> AdminBrowser:
    admin.login(operator.username, OPERATOR_PASSWORD)
    assert admin.path == "/admin/", admin.text()
    if admin.shots is not None:
        # Pictures of the page itself: the admin's navigation sidebar folded, as its « button does.
        admin.driver.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    return admin
