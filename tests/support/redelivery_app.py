"""The example app (:mod:`examples.tasks`) with Redis redelivering an unacknowledged message
after 2 s instead of an hour (``visibility_timeout``), checked every second
(``unacked_restore_interval``): a task held for its ETA by one worker is soon held by the
others too, as happens on a real cluster to an ETA further away than the timeout. ``celery
-A tests.support.redelivery_app worker``; the task names stay ``examples.tasks.*``.
"""

from __future__ import annotations

from examples.tasks import app

app.conf.broker_transport_options = {"visibility_timeout": 2, "unacked_restore_interval": 1}
