"""Fixtures for tests against real brokers, real Celery workers and a real exporter process.

They are defined in :mod:`tests.support.fixtures` (shared with the fault suite); process
wrappers and helpers are in :mod:`tests.support`. Services: Redis 127.0.0.1:6379, RabbitMQ
127.0.0.1:5672 (guest/guest) and PostgreSQL 127.0.0.1:5432, started by the machine or by
`.ci/run`. A missing service fails the test (never a skip). Each test gets its own Redis
database or RabbitMQ vhost, so tests cannot see each other's queues and events.
"""

from tests.support.fixtures import (  # noqa: F401 (pytest finds fixtures by name)
    amqp_url,
    broker_url,
    history_url,
    pg_url,
    producer,
    redis_server,
    redis_url,
    start_exporter,
    start_worker,
)
