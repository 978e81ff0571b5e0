"""Fault-injection tests: real processes, real outages, exact outcomes.

Reuses the integration fixtures (``redis_url``, ``amqp_url``, ``pg_url``, ``redis_server``,
``producer``, ``start_exporter``, ``start_worker``) and helpers (:class:`Exporter`,
:class:`Worker`, :class:`TcpProxy`, :func:`wait_for`, :class:`Metrics`). A missing service
fails a test, never skips it.

``JOBMON_FAULT_OUTAGE_SECONDS`` (default 30) sets how long the broker outages last.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import *  # noqa: F403 (fixtures are found by name)
from tests.integration.conftest import ROOT, free_port, wait_for

#: Exporter flags for tests that do not need the poller: its first round still runs at start,
#: and a SIGTERM does not wait for an inspect broadcast in flight (about 2 s per exporter).
QUIET_POLLER = ("--inspect-interval", "30s")
#: How long the broker outages of test_broker_outage last, seconds.
OUTAGE_SECONDS = float(os.environ.get("JOBMON_FAULT_OUTAGE_SECONDS", "30"))

pytestmark = pytest.mark.integration


def total(metrics: Any, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    return sum(value for key, value in metrics.samples.get(name, {}).items()
               if set(labels.items()) <= set(key))


def log_lines(text: str, pattern: str) -> list[str]:
    """Lines of ``text`` matching the regular expression ``pattern``."""
    return [line for line in text.splitlines() if re.search(pattern, line)]


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free port, with extra ``args``
    (``--requirepass``, ``--client-output-buffer-limit``...)."""

    def __init__(self, *args: str) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install -y redis-server)"
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jobmon-fault-redis-")
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", self.dir, *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.password: str | None = None
        if "--requirepass" in args:
            self.password = args[args.index("--requirepass") + 1]

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: self.client().ping(), 10, what="private redis-server")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis() -> Iterator[Callable[..., PrivateRedis]]:
    """Start private redis-servers with extra arguments; all are killed afterwards."""
    started: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(*args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def own_redis_url(private_redis: Callable[..., PrivateRedis]) -> str:
    """A broker URL on a private ``redis-server`` of this test: nothing else — another test,
    another suite running at the same time — can flush it or publish to it."""
    return private_redis().url(0)


@pytest.fixture(params=["redis", "amqp"])
def any_broker_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on a private Redis and on a RabbitMQ vhost of its own."""
    name = "own_redis_url" if request.param == "redis" else "amqp_url"
    return str(request.getfixturevalue(name))


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def tmp_history(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.sqlite3'}"
