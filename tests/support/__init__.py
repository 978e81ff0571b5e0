"""Shared helpers of the test suite: import them from here, never from a ``conftest.py``.

- :mod:`tests.support.clock`: :class:`FakeClock`, the exporter clock moved by hand (pure tests).
- :mod:`tests.support.events`: :func:`task_event` and :func:`worker_event`, the one builder of
  Celery event dicts, and :class:`Events`, Celery-shaped shorthands on top of it.
- :mod:`tests.support.waiting`: :func:`wait_for` (poll until true) and :func:`assert_stays`
  (must hold for a while) instead of fixed sleeps.
- :mod:`tests.support.binaries`: :func:`require_binary`, skip locally, fail with ``CI=true``.
- :mod:`tests.support.paths`: the repository root.
- :mod:`tests.support.network`: :func:`free_port` and :class:`TcpProxy` (cut a connection).
- :mod:`tests.support.exporter`: :class:`Exporter`, a ``celery-jobmon serve`` subprocess;
  :class:`Metrics`, parsed ``/metrics``; :func:`run_cli`; :func:`log_lines`.
- :mod:`tests.support.worker`: :class:`Worker`, a ``celery worker`` subprocess.
- :mod:`tests.support.redis_server`: :class:`PrivateRedis`, a ``redis-server`` of a test's own.
- :mod:`tests.support.prometheus`: :class:`Prometheus`, a ``prometheus`` subprocess, and the
  configuration it is started with.
- :mod:`tests.support.fixtures`: the fixtures the suites share (brokers, producer, exporter
  and worker starters, databases), registered for every suite by ``tests/conftest.py``.
"""
