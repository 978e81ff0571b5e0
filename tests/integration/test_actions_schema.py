"""Property-based run of schemathesis against a live exporter's /api/v1/openapi.json: generated
valid and invalid requests to every operation never get a server error, and every response
matches the document (status, content type, body schema).
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from exporter.history import create_history_engine
from tests.support.waiting import wait_for

from .test_actions_api import AUTH, TOKEN, Api, row_in

pytestmark = pytest.mark.integration
MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


class NonConforming(AssertionError):
    """A response the checks refused, described (operation, mode, request, response, why)."""


def fuzz(operation, mode, base_url: str, statuses: dict[int, int]) -> list[str]:
    """Run ``MAX_EXAMPLES`` generated cases of one operation; the failure found, described.

    Only a response the checks refuse is a finding, returned so that the next operation
    still runs; anything else (the exporter unreachable, an error of the generator or of
    hypothesis) propagates and fails the test.
    """

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck), derandomize=True)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=base_url, headers=AUTH, timeout=15)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS, headers=AUTH)
        except FailureGroup as exc:  # what the checks refused: describe it
            raise NonConforming(f"{operation.label} {mode.value}: {response.request.method} "
                                f"{response.request.url} → {response.status_code} "
                                f"{response.text[:300]}\n{str(exc)[:500]}") from exc

    try:
        run()
    except NonConforming as failure:  # the minimal failing case, as hypothesis replays it
        return [str(failure)]
    return []


def test_generated_requests_never_get_a_server_error(redis_url, history_url, producer,
                                                     start_exporter, start_worker):
    exporter = start_exporter(redis_url, "--api-token", TOKEN, "--inspect-timeout", "300ms",
                              history_url=history_url)
    worker = start_worker(redis_url)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(redis_url)
    engine = create_history_engine(exporter.history_url)
    for result in [app.send_task("examples.tasks.fail_value", ("boom",), queue="b"),
                   app.send_task("examples.tasks.add", (1, 2), queue="a")]:
        row_in(engine, result.id, "FAILURE", "SUCCESS")
    engine.dispose()
    wait_for(lambda: Api(exporter.url).get("/queues").status_code == 200, 10, message="poll round")
    load_all_checks()
    schema = schemathesis.openapi.from_url(exporter.url + "/api/v1/openapi.json", headers=AUTH)
    base_url = exporter.url + "/api/v1"
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz(operation, mode, base_url, statuses)
    assert not failures, "\n\n".join(failures[:10])
    assert sum(statuses.values()) >= 9 * 2 * 10
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > 50  # both modes got through
    assert not [status for status in statuses if status >= 500]
    assert "Traceback" not in exporter.output()
