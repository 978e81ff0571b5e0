"""Workers on a ``global_keyprefix`` the exporter was not given (issue 19 item 5): the exporter
finds kombu's bindings under the other prefix on Redis and says so — a warning, a
``/readyz`` problem and ``celery_jobmon_redis_other_keyprefixes`` — instead of reading 0
silently. Before: nothing said anything.
"""

from __future__ import annotations

import pytest
from celery import Celery

from tests.support.exporter import log_lines
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_bindings_under_another_keyprefix_are_reported(redis_server, start_exporter):
    redis_url = redis_server.url()
    app = Celery("prefixed", broker=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": "app1:"}
    app.send_task("examples.tasks.add", (1, 2), queue="a")  # declares app1:_kombu.binding.a
    app.close()

    exporter = start_exporter(redis_url)

    def problem() -> str | None:
        return next((p["detail"] for p in exporter.get("/readyz").json().get("problems", ())
                     if p["condition"] == "global_keyprefix"), None)

    detail = wait_for(problem, 30, message=lambda: f"the problem\n{exporter.output()[-2000:]}")
    assert detail.startswith("Redis holds kombu queue bindings under global_keyprefix "
                             "'app1:', this exporter reads '': workers using it are invisible")
    assert exporter.metrics().value("celery_jobmon_redis_other_keyprefixes") == 1
    assert len(log_lines(exporter.output(), "level=WARNING .*global_keyprefix 'app1:'")) == 1

    told = start_exporter(redis_url, "--broker-transport-option", "global_keyprefix=app1:")
    wait_for(lambda: told.metrics().value("celery_jobmon_redis_other_keyprefixes") == 0, 30,
             message=lambda: f"no other prefix\n{told.output()[-2000:]}")
    assert "problems" not in told.get("/readyz").json()
    assert told.metrics().value("celery_queue_length", queue_name="a", priority="0") == 1
