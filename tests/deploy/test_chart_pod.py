"""The chart's pod, run as a process (no Kubernetes here): the container's arguments and
environment as ``helm template`` renders them — Secret entries resolved, the mounted Secret files
written, the emptyDir a fresh folder, only the addresses moved to free loopback ports — start a
real ``celery-jobmon serve`` against real services, whose probes answer on the paths and port the
chart gives, and which stops within the pod's grace period. As ``readOnlyRootFilesystem`` says,
it runs in a mount namespace of its own (``unshare -m``) where ``/`` is read-only and only
``/tmp`` (the pod's emptyDirs live there) and ``/dev/shm`` stay writable.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.chart import container, one, rendered
from tests.support.binaries import require_binary, unavailable
from tests.support.exporter import Metrics
from tests.support.network import free_port
from tests.support.paths import ROOT, temp_log
from tests.support.waiting import wait_for

SECRET_MOUNT = "/etc/celery-jobmon/secrets"


def read_only_root(command: list[str]) -> list[str]:
    """``command`` in a mount namespace where ``/`` is read-only but ``/tmp``."""
    unshare = require_binary("unshare", "util-linux")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        unavailable(f"unshare -m not permitted here: {probe.stderr.decode().strip()}")
    script = 'mount --bind /tmp /tmp && mount -o remount,ro,bind / && exec "$@"'
    return [unshare, "-m", "sh", "-c", script, "sh", *command]


class Pod:
    """``celery-jobmon serve`` with a rendered container's arguments and environment."""

    def __init__(self, objects: list[dict[str, Any]], folder: Path,
                 replace: dict[str, str]) -> None:
        main = container(objects)
        secrets = [o for o in objects if o["kind"] == "Secret"]
        secret = secrets[0]["stringData"] if secrets else {}
        mounted = folder / "secrets"
        mounted.mkdir()
        for key, value in secret.items():
            (mounted / key).write_text(value)
        self.env: dict[str, str] = {}
        for entry in main["env"]:
            if "valueFrom" in entry:
                value = secret[entry["valueFrom"]["secretKeyRef"]["key"]]
            else:
                value = entry["value"].replace(SECRET_MOUNT, str(mounted))
            self.env[entry["name"]] = replace.get(entry["name"], value)
        self.container = main
        self.grace = one(objects, "Deployment")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"]
        self.log = temp_log("chart-pod-")
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith("JOBMON_") and k != "CELERY_BROKER_URL"}
        command = [sys.executable, "-m", "exporter", *main["args"]]
        self.proc = subprocess.Popen(read_only_root(command), env={**clean, **self.env},
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "http://" + self.env["JOBMON_LISTEN"]

    def probe(self, name: str) -> int:
        """The status code of the container's ``name`` probe (its path, on the listen port)."""
        path = self.container[name]["httpGet"]["path"]
        return httpx.get(self.url + path, timeout=5).status_code

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def wait_ready(self) -> None:
        wait_for(lambda: self.proc.poll() is None and self.probe("readinessProbe") == 200,
                 30, message=lambda: f"pod ready\n{self.output()}")

    def terminate(self) -> int:
        """SIGTERM, as the kubelet sends it; the exit status within the grace period."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(self.grace)


@pytest.fixture
def start_pod(tmp_path: Path) -> Iterator[Callable[..., Pod]]:
    pods: list[Pod] = []

    def start(values_file: str, **replace: str) -> Pod:
        pod = Pod(rendered(values_file), tmp_path, replace)
        pods.append(pod)
        return pod

    yield start
    for pod in pods:
        if pod.proc.poll() is None:
            pod.proc.kill()
            pod.proc.wait()


def test_the_pod_sees_a_read_only_root_but_tmp():
    check = subprocess.run(read_only_root(["sh", "-c", "test ! -w / && test -w /tmp"]))
    assert check.returncode == 0


def test_the_minimal_release_serves_and_keeps_its_history_in_the_empty_dir(
        start_pod, redis_url, tmp_path):
    objects = rendered("minimal-values.yaml")
    main = container(objects)
    assert main["ports"] == [{"name": "http", "containerPort": 9808, "protocol": "TCP"}]
    assert {e["name"]: e.get("value") for e in main["env"]}["JOBMON_LISTEN"] == "0.0.0.0:9808"
    data = tmp_path / "data"
    data.mkdir()
    pod = start_pod("minimal-values.yaml", JOBMON_BROKER_URL=redis_url,
                    JOBMON_LISTEN=f"127.0.0.1:{free_port()}", XDG_DATA_HOME=str(data))
    pod.wait_ready()
    assert pod.probe("livenessProbe") == 200
    assert pod.probe("startupProbe") == 200
    metrics = Metrics(httpx.get(pod.url + "/metrics", timeout=5).text)
    assert metrics.value("celery_jobmon_history_enabled") == 1
    assert metrics.value("celery_jobmon_broker_connected") == 1
    assert (data / "celery-jobmon" / "history.sqlite3").is_file()
    assert "Read-only file system" not in pod.output()
    assert pod.terminate() == 0, pod.output()


def test_the_full_release_serves_api_and_ui_with_its_secrets(
        start_pod, amqp_url, redis_url, pg_url, tmp_path):
    api_port = free_port()
    pod = start_pod(
        "full-values.yaml", JOBMON_BROKER_URL=amqp_url, JOBMON_HISTORY_URL=pg_url,
        JOBMON_RESULT_BACKEND=redis_url, JOBMON_REDBEAT_URL=redis_url,
        JOBMON_DJANGO_BEAT_URL=pg_url,
        JOBMON_RABBITMQ_MANAGEMENT_URL="http://guest:guest@127.0.0.1:15672",
        JOBMON_LISTEN=f"127.0.0.1:{free_port()}", JOBMON_API_LISTEN=f"127.0.0.1:{api_port}",
        XDG_DATA_HOME=str(tmp_path))
    pod.wait_ready()
    token = pod.env["JOBMON_API_TOKEN"]
    api = f"http://127.0.0.1:{api_port}"
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(api + "/api/v1/workers", headers=bearer, timeout=5).status_code == 200
    assert httpx.get(api + "/api/v1/workers", timeout=5).status_code == 401
    # config.apiListen: the API and the job browser leave the main port for their own.
    assert httpx.get(pod.url + "/api/v1/workers", headers=bearer, timeout=5).status_code == 404
    assert httpx.get(pod.url + "/ui/login", timeout=5).status_code == 404
    # The users file and the session key are the Secret's entries, mounted as files: alice
    # (ci/full-values.yaml) logs in.
    with httpx.Client(base_url=api, timeout=10) as client:
        form = client.get("/ui/login")
        assert form.status_code == 200
        csrf = re.search(r'name="csrftoken" value="([^"]+)"', form.text)
        assert csrf, form.text
        answer = client.post("/ui/login", data={
            "username": "alice", "password": "example-password",
            "csrftoken": csrf.group(1), "next": "/ui/"})
        assert (answer.status_code, answer.headers.get("location")) == (303, "/ui/"), answer.text
        assert client.get("/ui/").status_code == 200
    # config.constLabel: every series carries region and env.
    metrics = Metrics(httpx.get(pod.url + "/metrics", timeout=5).text)
    assert metrics.value("celery_jobmon_history_enabled", region="eu", env="prod") == 1
    assert metrics.value("celery_jobmon_broker_connected", region="eu", env="prod") == 1
    assert pod.terminate() == 0, pod.output()
