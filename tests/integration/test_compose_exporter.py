"""The docker-compose stack's exporter settings on a real ``serve`` (no Docker engine here):
the exporter service's environment, its users file mounted where the environment says, the
broker and history swapped for a private redis-server and a SQLite file. The job browser takes
the documented demo login, and ``/metrics`` tells the alerts and dashboards where it is.
"""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from tests.support.paths import ROOT

pytestmark = pytest.mark.integration

#: Set by the Exporter's flags (own port, broker, history) instead.
REPLACED = {"JOBMON_BROKER_URL", "JOBMON_LISTEN", "JOBMON_HISTORY_URL"}


def test_compose_exporter_serves_the_job_browser_and_its_url(redis_server, start_exporter,
                                                             monkeypatch):
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["exporter"]
    mounted = {target: ROOT / source for source, target, _ in
               (volume.split(":") for volume in service["volumes"])}
    for name, value in service["environment"].items():
        if name not in REPLACED:
            monkeypatch.setenv(name, str(mounted.get(value, value)))
    exporter = start_exporter(redis_server.url())

    assert exporter.metrics().value("celery_jobmon_ui_info",
                                    external_url="http://localhost:9808/ui") == 1
    with httpx.Client(base_url=exporter.url, timeout=10) as browser:
        form = browser.get("/ui/login")
        assert form.status_code == 200, form.text
        token = re.search(r'name="csrftoken" value="([^"]+)"', form.text)
        assert token is not None, form.text
        landed = browser.post("/ui/login", data={
            "username": "demo", "password": "jobmon-demo", "csrftoken": token.group(1),
            "next": "/ui/"})
        assert (landed.status_code, landed.headers.get("location")) == (303, "/ui/")
        overview = browser.get("/ui/")
        assert overview.status_code == 200
        assert "http://localhost:3000/d/" in overview.text  # the links back to Grafana
