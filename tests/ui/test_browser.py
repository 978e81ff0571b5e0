"""The job browser in a real headless Chromium (Debian's chromium and chromedriver, driven by
selenium; nothing downloaded) against a real ``serve``, a real Redis broker (a private
``redis-server``) and a real Celery worker: log in, open the failed list, open a failed task,
read its traceback, retry it and see the new execution succeed; cancel a waiting task; a viewer
cannot retry.

Screenshots of each page, light and dark (``prefers-color-scheme`` emulated over the DevTools
protocol), are taken on the way; with ``JOBMON_SCREENSHOTS_DIR`` set they are also saved there
(``docs/screenshots`` holds the committed ones).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.binaries import require_binary
from tests.support.waiting import wait_for
from ui.users import add_user

pytestmark = pytest.mark.integration
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
#: Body background of each theme (ui/static/jobmon.css).
BACKGROUND = {"light": "rgb(255, 255, 255)", "dark": "rgb(13, 17, 23)"}


@pytest.fixture
def browser() -> Iterator[object]:
    chromium = require_binary("chromium")
    chromedriver = require_binary("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Pages:
    """The browser on one exporter: open pages, fill forms, take screenshots."""

    def __init__(self, driver, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots
        self.saved = os.environ.get("JOBMON_SCREENSHOTS_DIR")

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def click(self, text: str) -> None:
        """Click the link or button labelled ``text`` and wait for the next page (a form's
        answer can take a second: a revoke waits for the workers' replies).

        Asked while the old document is being replaced, Chrome can answer "Node with given
        id does not belong to the document" (a plain WebDriverException, not the stale
        element the wait expects): that is asked again, and the next answer is "stale".
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        for xpath in (f"//a[normalize-space()='{text}']", f"//button[normalize-space()='{text}']"):
            found = self.driver.find_elements("xpath", xpath)
            if found:
                page = self.driver.find_element("tag name", "html")
                found[0].click()
                WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,)
                              ).until(expected_conditions.staleness_of(page))
                return
        raise AssertionError(f"no link or button {text!r} on {self.driver.current_url}:\n"
                             f"{self.text()}")

    def log_in(self, name: str) -> None:
        self.driver.find_element("id", "username").send_keys(name)
        self.driver.find_element("id", "password").send_keys(PASSWORDS[name])
        self.click("Log in")

    def screenshot(self, name: str) -> None:
        """Save the page as ``<name>-light.png`` and ``<name>-dark.png``; check each theme's
        background.
        """
        for theme in ("light", "dark"):
            self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "media": "", "features": [{"name": "prefers-color-scheme", "value": theme}]})
            background = self.driver.execute_script(
                "return getComputedStyle(document.body).backgroundColor")
            assert background == BACKGROUND[theme], (name, theme, background)
            path = self.shots / f"{name}-{theme}.png"
            self.driver.save_screenshot(str(path))
            if self.saved:
                shutil.copy(path, Path(self.saved) / path.name)
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "",
                                                                   "features": []})


def test_log_in_read_a_traceback_retry_it_cancel_a_waiting_task_and_a_viewer_cannot_retry(
        browser, redis_server, start_exporter, start_worker, producer, tmp_path):  # noqa: F811
    # A Redis of its own: no other test's worker can take the retry from queue a.
    redis_url = redis_server.url()
    users = tmp_path / "users"
    for name, role in (("alice", "operator"), ("bob", "viewer")):
        add_user(str(users), name, role, PASSWORDS[name])
    secret = tmp_path / "session-secret"
    secret.write_text(uuid.uuid4().hex * 2)
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    worker = start_worker(redis_url, "a,b",
                          env={"JOBMON_EXAMPLE_STATE_DIR": str(tmp_path / "fail-once")})
    exporter = start_exporter(redis_url, "--ui-users-file", str(users),
                              "--ui-session-secret-file", str(secret),
                              "--grafana-url", "http://grafana.example:3000",
                              "--expect", "examples.tasks.fail_once=1h",
                              "--periodic-interval", "1", history_url=history_url)
    app = producer(redis_url)
    marker = f"browser-{uuid.uuid4().hex[:8]}"
    failed = app.send_task("examples.tasks.fail_once", args=(marker,), queue="a")
    app.send_task("examples.tasks.fail_value", args=("a bad value",), queue="b")
    waiting = app.send_task("examples.tasks.add", args=(1, 2), queue="nobody-consumes")
    engine = create_history_engine(history_url)
    try:
        wait_for(lambda: (row := get_execution(engine, failed.id)) is not None
                 and row.state == "FAILURE" and row.traceback,
                 message=lambda: f"the failure in the history\n{worker.output()[-3000:]}")
        wait_for(lambda: get_execution(engine, waiting.id) is not None,
                 message="the waiting task in the history")
        pages = Pages(browser, exporter.url, tmp_path)

        # Log in: the failed list asked for comes after the login.
        pages.open("/ui/failed")
        assert browser.current_url.startswith(exporter.url + "/ui/login?next=")
        pages.screenshot("login")
        pages.log_in("alice")
        assert browser.current_url == exporter.url + "/ui/failed"
        assert "ConnectionError" in pages.text() and "first attempt fails; retry me" in \
            pages.text()
        pages.screenshot("failed")

        # The failed task: its traceback, then retry it.
        pages.click(failed.id)
        traceback = browser.find_element("id", "traceback-text").text
        assert traceback.startswith("Traceback (most recent call last):")
        assert traceback.rstrip().endswith("ConnectionError: first attempt fails; retry me")
        pages.screenshot("task-failed")
        pages.click("Retry…")
        assert "Nothing has been sent yet." in pages.text()
        assert f'["{marker}"]' in pages.text()
        pages.screenshot("retry-confirm")
        pages.click("Retry now")
        new_id = browser.find_element("id", "new-task").text
        assert "Retry sent" in pages.text() and new_id != failed.id
        pages.screenshot("retry-sent")
        pages.click(new_id)

        def succeeded() -> bool:
            browser.refresh()
            return "SUCCESS since" in pages.text()

        wait_for(succeeded, message=lambda: f"the retry succeeding\n{pages.text()}")
        assert f"Manual retry of {failed.id}" in pages.text()
        assert f"{{'args': ['{marker}'], 'kwargs': {{}}}}" in pages.text()
        pages.screenshot("task-succeeded")
        pages.open("/ui/tasks/" + failed.id)
        assert f"Manually retried as: {new_id}" in pages.text()
        assert "ui:alice" in pages.text()

        # Cancel the task nobody consumes: the worker acknowledges the revoke.
        pages.open("/ui/tasks/" + waiting.id)
        pages.click("Cancel…")
        pages.screenshot("cancel-confirm")
        pages.click("Cancel the task")
        assert "Asked: revoke of a task known as PENDING" in pages.text()
        assert f"acknowledged by\n{worker.hostname}" in pages.text()
        pages.screenshot("cancel-sent")

        # The other pages, each reached from the navigation, with something to show.
        sleeper = app.send_task("examples.tasks.sleep", args=(60,), queue="a")
        scheduled = app.send_task("examples.tasks.add", args=(2, 3), queue="a", countdown=600)
        for priority in (0, 9):
            app.send_task("examples.tasks.add", args=(priority, 1), queue="nobody-consumes",
                          priority=priority)
        wait_for(lambda: (row := get_execution(engine, sleeper.id)) is not None
                 and row.state == "STARTED", message="the sleeping task running")
        for label, expected in (("Running", sleeper.id), ("Waiting", "nobody-consumes"),
                                ("Scheduled", scheduled.id), ("Completed", new_id),
                                ("Statistics", "examples.tasks.fail_once"),
                                ("Periodic", "examples.tasks.fail_once (expect)"),
                                ("Workers", worker.hostname)):
            pages.click(label)

            def shows(expected: str = expected) -> bool:
                if expected in pages.text():
                    return True
                browser.refresh()
                return False

            wait_for(shows, message=lambda label=label: f"{label}: {pages.text()}")
            pages.screenshot(label.lower())
        pages.open("/ui/")
        assert "FAILURE" in pages.text() and "Celery overview" in pages.text()
        pages.screenshot("overview")

        # A viewer reads, and cannot retry.
        pages.click("Log out")
        pages.open("/ui/tasks/" + failed.id)
        pages.log_in("bob")
        assert "retry and cancel need an operator" in pages.text()
        assert not browser.find_elements("xpath", "//button[normalize-space()='Retry…']")
        pages.open(f"/ui/tasks/{failed.id}/retry")
        assert "403 — Not allowed" in pages.text()
        assert "Your role (viewer) cannot retry or cancel tasks" in pages.text()
        pages.screenshot("viewer-403")
        assert get_execution(engine, failed.id).manual_retry_count == 1
    finally:
        engine.dispose()
