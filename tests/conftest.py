"""Fixtures every suite may use — real brokers and databases (``redis_url``, ``amqp_url``,
``pg_url``, ``redis_server``...), the exporter and worker processes (``start_exporter``,
``start_worker``, ``producer``) — defined in :mod:`tests.support.fixtures` and registered here
once, so no suite imports them by name.
"""

pytest_plugins = ["tests.support.fixtures"]
