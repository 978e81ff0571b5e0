"""Secrets never leave the process: broker passwords (single URL, failover list, Sentinel), the
history database password and a result backend password appear in no log line at any level, in
no `/metrics` sample, in no error and in no `check` output.

Real processes only: a private ``redis-server --requirepass`` (and a Sentinel in front of it),
PostgreSQL reached with a password in the URL (trust auth accepts any password, so the URL is
real and works), ``celery-jobmon serve --log-level debug``, a worker, ``check``, ``db upgrade``.
Every captured byte is searched for every secret value, percent-encoded forms included.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from tests.support.exporter import Exporter, log_lines, run_cli
from tests.support.network import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
BROKER_SECRET = "brk-Pw_7hQ9z"
WRONG_SECRET = "wrong-Pw_3kX1"
HISTORY_SECRET = "hist-Pw_5tM2"
SENTINEL_SECRET = "snt-Pw_8vR4"
BACKEND_SECRET = "rb-Pw_2nJ6"
OPTION_SECRET = "opt-Pw_9cW3"
ALL = (BROKER_SECRET, WRONG_SECRET, HISTORY_SECRET, SENTINEL_SECRET, BACKEND_SECRET,
       OPTION_SECRET)


def assert_clean(text: str, where: str) -> None:
    for secret in ALL:
        for form in {secret, quote(secret, safe="")}:
            assert form not in text, f"{form!r} leaked in {where}:\n" + "\n".join(
                line for line in text.splitlines() if form in line)[:2000]


@pytest.fixture
def broker(private_redis):
    return private_redis("--requirepass", BROKER_SECRET)


@pytest.fixture
def history_url(pg_url) -> str:
    return make_url(pg_url).set(password=HISTORY_SECRET).render_as_string(hide_password=False)


def _stop_all(*exporters: Exporter) -> None:
    """SIGTERM every exporter at once, then wait (each takes a few seconds to drain)."""
    for exporter in exporters:
        if exporter.proc.poll() is None:
            exporter.proc.terminate()
    for exporter in exporters:
        exporter.stop()


def _scrape_all(exporter: Exporter) -> str:
    paths = ("/metrics", "/healthz", "/readyz", "/api/v1/tasks", "/api/v1/openapi.json",
             "/nope")
    return "\n".join(exporter.get(path).text for path in paths)


def test_serve_at_debug_level_leaks_no_broker_or_history_password(broker, history_url,
                                                                  producer, start_worker):
    url = broker.url(0)
    exporter = Exporter(url, history_url=history_url)
    try:
        exporter.wait_ready()
        worker = start_worker(url, "a")
        wait_for(lambda: exporter.metrics().value("celery_worker_up",
                                                  hostname=worker.hostname) == 1,
                 60, message="worker up")
        app = producer(url)
        app.send_task("examples.tasks.add", (1, 2), queue="a")
        app.send_task("examples.tasks.fail_value", ("nope",), queue="a")
        wait_for(lambda: exporter.metrics().value("celery_task_failed_total",
                                                  name="examples.tasks.fail_value",
                                                  queue_name="a") == 1, 30, message="tasks done")
        assert exporter.metrics().value("celery_jobmon_history_enabled") == 1
        outputs = _scrape_all(exporter)
        # A broker restart: reconnect attempts and errors are logged too.
        failed_before = len(log_lines(exporter.output(), "broker unreachable"))
        broker.kill()
        wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 0, 10)
        wait_for(lambda: len(log_lines(exporter.output(), "broker unreachable"))
                 > failed_before, 10, message="a failed reconnect attempt logged")
        broker.start()
        wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 1, 20)
        outputs += _scrape_all(exporter)
    finally:
        exporter.stop()
    log = exporter.output()
    assert "level=DEBUG" in log and "broker unreachable" in log  # the noisy paths did run
    assert_clean(log, "the serve log")
    assert_clean(outputs, "HTTP answers")


def test_failover_list_and_wrong_password_leak_nothing(broker, tmp_path):
    dead = free_port()
    failover = (f"redis://:{BROKER_SECRET}@127.0.0.1:{dead}/0;"
                f"redis://:{BROKER_SECRET}@127.0.0.1:{broker.port}/0")
    first = Exporter(failover, "--broker-transport-option", f"sentinel_password={OPTION_SECRET}",
                     history_url=f"sqlite:///{tmp_path / 'a.sqlite3'}")
    wrong = Exporter(f"redis://:{WRONG_SECRET}@127.0.0.1:{broker.port}/0",
                     history_url=f"sqlite:///{tmp_path / 'b.sqlite3'}")
    try:
        first.wait_ready()  # connected through the second URL of the list
        wait_for(lambda: wrong.get("/healthz").status_code == 200, 30, message="serving")
        # A few refused attempts (AUTH fails) and poll rounds, all logged.
        wait_for(lambda: len(log_lines(wrong.output(), "broker unreachable")) >= 2
                 and log_lines(wrong.output(), "poll call failed"), 15,
                 message=lambda: f"refused attempts and failed poll rounds\n{wrong.output()}")
        assert wrong.get("/readyz").status_code == 503
        outputs = _scrape_all(first) + _scrape_all(wrong)
    finally:
        _stop_all(first, wrong)
    assert "AuthenticationError" in wrong.output() or "invalid password" in wrong.output()
    assert_clean(first.output(), "the failover exporter's log")
    assert_clean(wrong.output(), "the wrong-password exporter's log")
    assert_clean(outputs, "HTTP answers")


def _sentinel(tmp_path: Path, master_port: int, *extra: str) -> tuple[int, subprocess.Popen]:
    port = free_port()
    config = tmp_path / f"sentinel-{port}.conf"
    config.write_text("\n".join([
        f"port {port}", "bind 127.0.0.1", f"dir {tmp_path}",
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1",
        f"sentinel auth-pass mymaster {BROKER_SECRET}", *extra, ""]))
    proc = subprocess.Popen(["redis-server", str(config), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return port, proc


def _sentinel_exporter(tmp_path: Path, port: int, *options: str) -> Exporter:
    return Exporter(f"sentinel://:{BROKER_SECRET}@127.0.0.1:{port}/0",
                    "--broker-transport-option", "master_name=mymaster", *options,
                    history_url=f"sqlite:///{tmp_path / f'{port}.sqlite3'}")


def test_sentinel_broker_password_leaks_nothing(broker, tmp_path):
    port, sentinel = _sentinel(tmp_path, broker.port)
    exporter = _sentinel_exporter(tmp_path, port)
    try:
        exporter.wait_ready()
        outputs = _scrape_all(exporter)
    finally:
        exporter.stop()
        sentinel.kill()
        sentinel.wait()
    assert_clean(exporter.output(), "the sentinel exporter's log")
    assert_clean(outputs, "HTTP answers")


def test_sentinel_kwargs_password_works_and_leaks_nothing(broker, tmp_path):
    port, sentinel = _sentinel(tmp_path, broker.port, f"requirepass {SENTINEL_SECRET}")
    exporter = _sentinel_exporter(
        tmp_path, port, "--broker-transport-option",
        "sentinel_kwargs=" + json.dumps({"password": SENTINEL_SECRET}))
    try:
        exporter.wait_ready()  # 30 s: 8 s timed out at load 11; passing costs nothing
        outputs = _scrape_all(exporter)
    finally:
        exporter.stop()
        sentinel.kill()
        sentinel.wait()
    assert_clean(exporter.output(), "the sentinel exporter's log")
    assert_clean(outputs, "HTTP answers")


def test_check_and_db_commands_leak_nothing(broker, history_url):
    env = {"CELERY_RESULT_BACKEND": f"redis://:{BACKEND_SECRET}@127.0.0.1:{broker.port}/1"}
    unreachable = make_url(history_url).set(port=free_port()).render_as_string(
        hide_password=False)
    commands = [
        (("check", "--broker-url", broker.url(0), "--listen-seconds", "1", "--log-level",
          "debug", "--app", "examples.tasks:app"), env),
        (("check", "--broker-url", f"redis://:{WRONG_SECRET}@127.0.0.1:{broker.port}/0",
          "--listen-seconds", "1", "--log-level", "debug"), None),
        (("db", "upgrade", "--history-url", unreachable), None),
        (("history", "prune", "--older-than", "1d", "--history-url", unreachable), None),
        (("db", "upgrade", "--history-url", history_url), None),
    ]
    with ThreadPoolExecutor(len(commands)) as pool:
        good, bad, upgrade, prune, upgraded = pool.map(
            lambda command: run_cli(*command[0], env=command[1]), commands)
    assert "result backend" in good.stdout and "[FAIL] broker" in bad.stdout
    assert (upgrade.returncode, prune.returncode, upgraded.returncode) == (1, 1, 0)
    for name, result in (("check", good), ("check with a wrong password", bad),
                         ("db upgrade (unreachable)", upgrade),
                         ("history prune (unreachable)", prune), ("db upgrade", upgraded)):
        assert_clean(result.stdout + result.stderr, name)
