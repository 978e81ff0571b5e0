"""A beat schedule for the example app: ``celery -A examples.beat beat`` sends two periodic
tasks to the workers of examples/tasks.py, and ``celery-jobmon serve --app examples.beat:app``
watches them.

``add-every``: ``examples.tasks.add(2, 3)``, which succeeds; ``report-every``:
``examples.tasks.fail_value("report broke")``, which fails (queue ``b``). Both run every
``JOBMON_EXAMPLE_BEAT_EVERY`` seconds (default 60). With RedBeat (``-S
redbeat.RedBeatScheduler``) the entries live in the broker's Redis.
"""

from __future__ import annotations

import os

from examples.tasks import app

EVERY = float(os.environ.get("JOBMON_EXAMPLE_BEAT_EVERY", "60"))

# `celery -A examples.beat beat -S redbeat.RedBeatScheduler` keeps the schedule in the broker's
# Redis (celery-jobmon serve --redbeat-url with the same URL reads it there).
app.conf.redbeat_redis_url = app.conf.broker_url
app.conf.beat_schedule = {
    "add-every": {"task": "examples.tasks.add", "schedule": EVERY, "args": (2, 3)},
    "report-every": {"task": "examples.tasks.fail_value", "schedule": EVERY,
                     "args": ("report broke",)},
}
