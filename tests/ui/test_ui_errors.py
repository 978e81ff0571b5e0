"""The job browser when something unexpected happens: a bug in a page is an HTML page with an
error id and time (the traceback goes to the log only); templates are read once, so files
replaced under a running exporter (an in-place ``pip install``) cannot break its pages.
"""

from __future__ import annotations

import logging
import os
import re

import jinja2

from tests.ui.conftest import login
from ui.templating import templates


def test_an_unexpected_error_is_a_page_with_an_id_and_the_traceback_only_in_the_log(
        client, monkeypatch, caplog):
    from actions import reads

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, detail s3cret-password")

    login(client, "bob")
    monkeypatch.setattr(reads, "workers", broken)
    with caplog.at_level(logging.ERROR, logger="ui.app"):
        page = client.get("/ui/workers")
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
    match = re.search(r"error ([0-9a-f]{12}) at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC)",
                      page.text)
    assert match, page.text
    assert "Traceback" not in page.text and "RuntimeError" not in page.text
    assert "s3cret" not in page.text and 'href="/ui/workers"' in page.text  # the navigation
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.getMessage() == (
        f"ui page failed error_id={match.group(1)} method=GET path=/ui/workers")
    assert record.exc_info[0] is RuntimeError


def test_templates_are_read_once_not_again_when_their_files_change(tmp_path):
    # The job browser's own environment, over a directory this test may change.
    env = templates.env.overlay(loader=jinja2.FileSystemLoader(tmp_path))
    page = tmp_path / "page.html"
    page.write_text("version 1")
    assert env.get_template("page.html").render() == "version 1"
    page.write_text("version 2 {{ a_name_the_running_code_does_not_pass }}")
    os.utime(page, (1_000_000_000, 1_000_000_000))
    assert env.get_template("page.html").render() == "version 1"
