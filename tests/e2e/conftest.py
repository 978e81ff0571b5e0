"""Fixtures for the end-to-end tests: a real ``prometheus`` loading the project's rules and
scraping a real exporter, and a PostgreSQL database for the exporter's history.

Prometheus and promtool come from Debian's ``prometheus`` package; a missing binary skips
locally and fails with CI=true. Redis db 9 is this suite's own; each PostgreSQL database is
created with a unique name and dropped afterwards. Process helpers (Exporter, Worker,
wait_for, free_port) are the integration suite's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml
from sqlalchemy import Engine, create_engine

from tests.integration.conftest import Worker, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "prometheus"
E2E_REDIS_DB = 9
BROKER_URL = f"redis://127.0.0.1:6379/{E2E_REDIS_DB}"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/{db}"


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; skip when missing, or fail when CI=true."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: apt-get install -y --no-install-recommends {package}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def e2e_config(exporter_address: str, interval: str = "1s") -> dict[str, Any]:
    """prometheus/prometheus.yml for a test: the same rule files (absolute paths), the
    celery-jobmon job scraping ``exporter_address``, scrape and evaluation every ``interval``,
    no Alertmanager and no other job.
    """
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    config.pop("alerting")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "celery-jobmon")
    job["static_configs"] = [{"targets": [exporter_address]}]
    config["scrape_configs"] = [job]
    return config


class Prometheus:
    """A ``prometheus`` process on a free port with a temporary TSDB."""

    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = tempfile.NamedTemporaryFile(prefix="prometheus-", suffix=".log",
                                               delete=False, mode="w+")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config_file}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.proc.poll() is None
                 and httpx.get(self.url + "/-/ready", timeout=2).status_code == 200,
                 timeout, what=f"prometheus ready\n{self.output()}")

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>; the JSON body, whatever the status (errors included)."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def query(self, expr: str) -> dict[str, Any]:
        """Instant query at the current time: the JSON body (``status``, ``data``/``error``)."""
        return self.api("query", query=expr)

    def values(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """``(labels, value)`` of each series an instant query returns; fails on an error."""
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        return [(series["metric"], float(series["value"][1]))
                for series in body["data"]["result"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def e2e_redis() -> Iterator[str]:
    """The broker URL of this suite's Redis database, emptied before and after."""
    client = redis.Redis("127.0.0.1", 6379, db=E2E_REDIS_DB)
    client.flushdb()
    yield BROKER_URL
    client.flushdb()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a new, uniquely named PostgreSQL database (dropped afterwards)."""
    name = f"jobmon_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES.format(db=name).replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(POSTGRES.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def history_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the history database, for the test's own reads."""
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def stop_worker_now(worker: Worker) -> None:
    """Cold shutdown (SIGQUIT): a task still sleeping must not hold the suite up."""
    if worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGQUIT)
        try:
            worker.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    worker.stop()


def settle(problems: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Call ``problems`` until it returns something empty or ``timeout`` runs out; return its
    last result (for the test to assert empty, with the leftovers in the failure message).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = problems()
        if not result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)
