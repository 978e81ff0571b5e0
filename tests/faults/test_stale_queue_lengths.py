"""During a broker outage the queue series keep their last values, marked stale by
``celery_jobmon_queue_lengths_age_seconds``, and ``GET /queues`` keeps listing them.

Before: one round after the broker went away every ``celery_queue_length`` series disappeared
and ``GET /queues`` was empty, so queue alerts went to "no data" for the whole outage.
"""

from __future__ import annotations

from tests.support.api import Api
from tests.support.waiting import assert_stays, wait_for

TOKEN = "stale-queues-token-0123456789abcdef"


def fresh(metrics) -> bool:
    """The lengths were read in the poller's last round (near its end)."""
    return (metrics.value("celery_jobmon_queue_lengths_age_seconds")
            < metrics.value("celery_jobmon_poll_age_seconds") + 1.5)


def test_queue_lengths_stay_stale_through_a_redis_outage(redis_server, producer,
                                                         start_exporter):
    url = redis_server.url()
    exporter = start_exporter(url, "--queue", "a", "--api-token", TOKEN)
    app = producer(url)
    for i in range(3):
        app.send_task("examples.tasks.add", (i, i), queue="a")  # no worker: they wait
    wait_for(lambda: exporter.metrics().value("celery_queue_length", queue_name="a",
                                              priority="0") == 3, 30, message="3 waiting")
    assert fresh(exporter.metrics())

    redis_server.kill()
    wait_for(lambda: exporter.metrics().value("celery_jobmon_queue_lengths_age_seconds") > 4,
             30, message=lambda: f"the lengths age\n{exporter.output()[-2000:]}")
    assert_stays(lambda: exporter.metrics().value("celery_queue_length", queue_name="a",
                                                  priority="0") == 3, 3,
                 message="the last length stays")
    api = Api(exporter.url, TOKEN)
    # Rounds ended since the broker went away (their lengths are older than the round).
    report = wait_for(lambda: (body := api.get("/queues").json())["lengths_age_seconds"]
                      > body["poll_age_seconds"] + 2 and body, 30, message="a stale round")
    assert [(q["name"], q["length"]) for q in report["queues"]] == [("a", 3)]
    assert report["lengths_read_at"] < report["polled_at"]

    redis_server.start()  # an empty Redis: the queue is read again, fresh
    wait_for(lambda: exporter.metrics().value("celery_queue_length", queue_name="a",
                                              priority="0") == 0, 60,
             message=lambda: f"read again\n{exporter.output()[-2000:]}")
    assert fresh(exporter.metrics())
