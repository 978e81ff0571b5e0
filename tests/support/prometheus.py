"""A real Prometheus for end-to-end tests: :func:`e2e_config` derives a configuration from the
project's ``prometheus/prometheus.yml``, :class:`Prometheus` runs ``prometheus`` with it on a
free port and queries its HTTP API.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.network import free_port
from tests.support.paths import ROOT, temp_log
from tests.support.waiting import wait_for

PROMETHEUS_DIR = ROOT / "prometheus"


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
    """A ``prometheus`` process (``binary``) on a free port with ``config`` and a TSDB in
    ``workdir``."""

    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = temp_log("prometheus-")
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
                 timeout, message=lambda: f"prometheus ready\n{self.output()}")

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
