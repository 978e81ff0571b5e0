"""Retry arguments with a real worker, result backend and exporter: the backend's values win
(a ``datetime`` argument goes back as a ``datetime``), and a repr the producer masked is never
re-sent.

Before: the datetime task was refused (409 "JSON cannot carry it", advising to turn on
``result_extended``, which was on); without a result backend the masked ``'***'`` was re-sent
and the task ran with the string ``'***'``.
"""

from __future__ import annotations

import datetime

import pytest
from celery import Celery

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api, problem
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "retry-arguments-token-0123456789abcdef"
FAIL = "examples.tasks.fail_value"


def worker_up(exporter, worker) -> None:
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname)
             == 1, 90, message=lambda: f"worker up\n{worker.output()[-2000:]}")


def failed_row(engine, task_id: str, exporter):
    return wait_for(lambda: (row := get_execution(engine, task_id)) is not None
                    and row.state == "FAILURE" and row, 60,
                    message=lambda: f"{task_id} failed: {get_execution(engine, task_id)}\n"
                                    f"{exporter.output()[-4000:]}")


def test_a_datetime_argument_stored_by_the_backend_is_resent_exactly(
        redis_url, monkeypatch, producer, start_exporter, start_worker):
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_url)
    monkeypatch.setenv("CELERY_RESULT_EXTENDED", "1")
    exporter = start_exporter(redis_url, "--api-token", TOKEN, "--result-backend", redis_url)
    worker_up(exporter, start_worker(redis_url, "b"))
    when = datetime.datetime(2026, 12, 3, 8, 30, 15, 250000, tzinfo=datetime.timezone.utc)
    failed = producer(redis_url).send_task(FAIL, (when,), queue="b")
    engine = create_history_engine(exporter.history_url)
    row = failed_row(engine, failed.id, exporter)
    assert row.args == f"({when!r},)"  # not a literal: only the backend knows the value

    done = Api(exporter.url, TOKEN).post(f"/tasks/{failed.id}/retry")
    assert done.status_code == 202, done.text
    assert done.json()["sent"]["args"] == ["2026-12-03T08:30:15.250000Z"]
    assert done.json()["sent"]["argument_source"] == "result_backend"
    new_id = done.json()["new_task_id"]
    failed_row(engine, new_id, exporter)
    backend = Celery(backend=redis_url, set_as_current=False)
    assert backend.AsyncResult(new_id).args == [when]
    backend.close()
    engine.dispose()


def test_a_masked_repr_is_refused_without_a_result_backend(redis_url, producer, start_exporter,
                                                           start_worker):
    exporter = start_exporter(redis_url, "--api-token", TOKEN)
    worker_up(exporter, start_worker(redis_url, "b"))
    failed = producer(redis_url).send_task(FAIL, kwargs={"message": "s3cret"}, queue="b",
                                           kwargsrepr="{'message': '***'}")
    engine = create_history_engine(exporter.history_url)
    assert failed_row(engine, failed.id, exporter).kwargs == "{'message': '***'}"

    body = problem(Api(exporter.url, TOKEN).post(f"/tasks/{failed.id}/retry"), 409)
    assert body["reason"] == "arguments-unavailable"
    assert body["detail"].startswith(
        "the original arguments are not known exactly: result backend: none configured "
        "(--result-backend); history: kwargs['message'] is a string of asterisks in the repr: "
        "the producer masked the value (argsrepr/kwargsrepr), and it is not in the history. "
        "To retry such tasks, store the arguments with the result")
    assert get_execution(engine, failed.id).manual_retry_count == 0
    engine.dispose()
