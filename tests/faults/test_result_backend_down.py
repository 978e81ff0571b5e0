"""``POST /retry`` while the result backend (a private redis-server) is down or hung.

Before: the request blocked ~20 s and answered 500, and Celery logged CRITICAL "The Celery
application must be restarted" — the actions' app subscribed to every retried task's result on
the backend as it sent it, and gave up after 20 reconnects.
"""

from __future__ import annotations

import os
import signal
import time

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api, problem
from tests.support.waiting import wait_for

TOKEN = "backend-down-token-0123456789abcdef"


def test_retry_with_the_result_backend_down_is_a_prompt_503_naming_it(
        redis_url, redis_server, monkeypatch, producer, start_exporter, start_worker):
    backend = redis_server.url()
    monkeypatch.setenv("CELERY_RESULT_BACKEND", backend)
    monkeypatch.setenv("CELERY_RESULT_EXTENDED", "1")
    exporter = start_exporter(redis_url, "--api-token", TOKEN, "--result-backend", backend)
    worker = start_worker(redis_url, "b")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname)
             == 1, 90, message=lambda: f"worker up\n{worker.output()[-2000:]}")
    failed = producer(redis_url).send_task("examples.tasks.fail_value", ("boom",), queue="b")
    engine = create_history_engine(exporter.history_url)
    wait_for(lambda: (row := get_execution(engine, failed.id)) is not None
             and row.state == "FAILURE", 60,
             message=lambda: f"the task failed\n{exporter.output()[-3000:]}")
    api = Api(exporter.url, TOKEN, timeout=40)

    redis_server.kill()
    started = time.monotonic()
    body = problem(api.post(f"/tasks/{failed.id}/retry"), 503)
    assert time.monotonic() - started < 3
    assert body["detail"] == (
        "the result backend did not answer (ConnectionError: Error 111 connecting to "
        f"127.0.0.1:{redis_server.port}. Connection refused.): it holds the task's original "
        "arguments (--result-backend); nothing was sent, try again once it answers")

    redis_server.start()
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # hung: accepts, never answers
    try:
        started = time.monotonic()
        body = problem(api.post(f"/tasks/{failed.id}/retry"), 503)
        assert 4.5 < time.monotonic() - started < 8  # the backend's 5 s timeout, once
        # redis-py 8.2 names the address where 8.1 said "socket".
        assert any(body["detail"].startswith(
            f"the result backend did not answer (TimeoutError: Timeout reading from {where})")
            for where in ("socket", f"127.0.0.1:{redis_server.port}")), body["detail"]
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert get_execution(engine, failed.id).manual_retry_count == 0

    # Back (an empty backend: the stored result is gone): the history's repr is used.
    done = api.post(f"/tasks/{failed.id}/retry")
    assert done.status_code == 202, done.text
    assert done.json()["sent"]["args"] == ["boom"]
    assert done.json()["sent"]["argument_source"] == "history_repr"
    output = exporter.output()
    assert "CRITICAL" not in output and "must be restarted" not in output, output
    engine.dispose()
