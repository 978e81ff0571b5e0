"""A task retried already is not sent again by accident: bulk retry skips it (reason
``already-retried``, naming its retry and that retry's state) unless ``include_retried``, and
then still sends one task per job and call; a single retry warns on the dry run and is a 409
without ``force``. A real SQLite history, the fake broker of :mod:`.test_actions_api`.
"""
# ruff: noqa: F811 - the fixtures are imported from test_actions_api and used as arguments

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from actions.retry_links import RetryLink, describe_line, state_words
from exporter.history import get_execution
from exporter.history.orm import TASK_EXECUTION

from .test_actions_api import (  # noqa: F401 - fixtures
    T0,
    add_row,
    broker,
    engine,
    make_client,
    problem,
)


def finish(engine, task_id: str, state: str, at: float = T0 + 50, **fields: Any) -> None:
    """Give a retry's row the outcome its worker's events would have written at ``at``."""
    with engine.begin() as connection:
        connection.execute(update(TASK_EXECUTION).where(TASK_EXECUTION.c.task_id == task_id)
                           .values(state=state, state_ts=at, finished_at=at, **fields))


def bulk(client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/tasks/retry", json=body)
    assert response.status_code == (200 if body.get("dry_run", True) else 202), response.text
    result: dict[str, Any] = response.json()
    return result


def outcomes(result: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(i["task_id"], i["outcome"], i["reason_code"]) for i in result["items"]]


def test_bulk_retry_sends_one_task_per_job_after_its_retries_failed(make_client, engine, broker):
    client = make_client(max_manual_retries=5)
    for i in (1, 2, 3):
        add_row(engine, f"o{i}", ts=T0 + i)
    first = bulk(client, exception_type="ValueError", dry_run=False)
    assert (first["matched"], first["retried"]) == (3, 3)
    retries = {item["task_id"]: item["new_task_id"] for item in first["items"]}
    for i, original in enumerate(("o1", "o2", "o3")):
        finish(engine, retries[original], "FAILURE", T0 + 50 + i, exception_type="ValueError")

    dry = bulk(client, exception_type="ValueError")
    # Before: matched 6, would_retry 6 — the originals went out a second time.
    assert (dry["matched"], dry["skipped"]) == (6, 3)
    assert outcomes(dry) == [*((retries[o], "would_retry", None) for o in ("o3", "o2", "o1")),
                             *((o, "skipped", "already-retried") for o in ("o3", "o2", "o1"))]
    skipped = dry["items"][3]
    assert skipped["reason"] == (f"already retried: its retry {retries['o3']} FAILED "
                                 "(include_retried: true sends it)")
    assert skipped["existing_retries"] == [{"task_id": retries["o3"], "state": "FAILURE"}]

    sent_before = len(broker.sent)
    second = bulk(client, exception_type="ValueError", dry_run=False)
    assert (second["retried"], second["skipped"]) == (3, 3)
    # Before: a real run's reason said "force=true (--force) sends it anyway", which the bulk
    # body refuses (400) and its query ignores.
    assert second["items"][3]["reason"] == (
        f"this task was already retried: its retry {retries['o3']} FAILED, and "
        f"{retries['o3']}'s retry {second['items'][0]['new_task_id']} is PENDING. Sending it "
        "again would run the job once more; include_retried: true sends it.")
    assert len(broker.sent) == sent_before + 3
    assert [get_execution(engine, o).manual_retry_count for o in ("o1", "o2", "o3")] == [1, 1, 1]
    assert all(get_execution(engine, r).manual_retry_count == 1 for r in retries.values())


def test_include_retried_still_sends_only_the_newest_of_a_chain(make_client, engine, broker):
    client = make_client(max_manual_retries=5)
    add_row(engine, "o1", ts=T0 + 1)
    add_row(engine, "o2", ts=T0 + 2)
    first = bulk(client, dry_run=False)
    new = {item["task_id"]: item["new_task_id"] for item in first["items"]}
    finish(engine, new["o1"], "FAILURE", exception_type="ValueError")
    finish(engine, new["o2"], "SUCCESS")

    dry = bulk(client, include_retried=True)
    assert outcomes(dry) == [(new["o1"], "would_retry", None), ("o2", "would_retry", None),
                             ("o1", "skipped", "already-retried")]
    assert dry["items"][2]["reason"] == (
        f"already retried: its retry chain goes on with {new['o1']}, selected in this call")
    # o2's retry succeeded and is not selected: include_retried sends o2 once more, as asked.
    assert dry["items"][1]["existing_retries"] == [{"task_id": new["o2"], "state": "SUCCESS"}]
    assert outcomes(bulk(client)) == [(new["o1"], "would_retry", None),
                                      ("o2", "skipped", "already-retried"),
                                      ("o1", "skipped", "already-retried")]


def test_a_single_retry_of_a_retried_task_warns_and_needs_force(make_client, engine, broker):
    client = make_client(max_manual_retries=5)
    add_row(engine, "t1")
    new_id = client.post("/api/v1/tasks/t1/retry").json()["new_task_id"]
    finish(engine, new_id, "SUCCESS")

    dry = client.post("/api/v1/tasks/t1/retry?dry_run=true")
    assert dry.status_code == 200
    body = dry.json()
    assert body["warnings"] == [f"already retried: its retry {new_id} SUCCEEDED"]
    assert (body["force_needed"], body["existing_retries"]) == (
        True, [{"task_id": new_id, "state": "SUCCESS"}])

    refused = problem(client.post("/api/v1/tasks/t1/retry"), 409)
    assert refused["reason"] == "already-retried"
    assert refused["detail"] == (
        f"this task was already retried: its retry {new_id} SUCCEEDED. Sending it again would "
        "run the job once more; force=true (--force) sends it anyway.")
    assert refused["existing_retries"] == [{"task_id": new_id, "state": "SUCCESS"}]
    assert len(broker.sent) == 1 and get_execution(engine, "t1").manual_retry_count == 1

    forced = client.post("/api/v1/tasks/t1/retry?force=true")
    assert forced.status_code == 202, forced.text
    assert forced.json()["manual_retry_count"] == 2
    assert forced.json()["warnings"] == [f"already retried: its retry {new_id} SUCCEEDED"]
    assert len(broker.sent) == 2


def test_a_failed_retry_chain_is_named_to_its_end_and_its_end_advised(make_client, engine):
    client = make_client(max_manual_retries=5)
    add_row(engine, "t1")
    r1 = client.post("/api/v1/tasks/t1/retry").json()["new_task_id"]
    finish(engine, r1, "FAILURE")
    r2 = client.post(f"/api/v1/tasks/{r1}/retry").json()["new_task_id"]
    finish(engine, r2, "FAILURE")
    refused = problem(client.post("/api/v1/tasks/t1/retry"), 409)
    assert refused["detail"] == (
        f"this task was already retried: its retry {r1} FAILED, and {r1}'s retry {r2} FAILED. "
        f"Sending it again would run the job once more; retry {r2} instead, which continues "
        "the chain; force=true (--force) sends it anyway.")
    assert [link["task_id"] for link in refused["existing_retries"]] == [r1, r2]
    # The chain's limit still counts every retry before it.
    assert client.post(f"/api/v1/tasks/{r2}/retry?dry_run=true").status_code == 200
    limited = make_client(max_manual_retries=2)
    assert problem(limited.post(f"/api/v1/tasks/{r2}/retry"), 409)["reason"] == \
        "max-manual-retries"


def test_retry_lines_read_as_sentences():
    assert [state_words(s) for s in ("SUCCESS", "FAILURE", "REVOKED", "STARTED", None)] == [
        "SUCCEEDED", "FAILED", "was REVOKED", "is STARTED", "is no longer in the history"]
    assert describe_line([RetryLink("r1", "FAILURE"), RetryLink("r2", None)]) == (
        "its retry r1 FAILED, and r1's retry r2 is no longer in the history")


def test_the_openapi_document_describes_include_retried_and_force(make_client):
    schema = make_client().get("/api/v1/openapi.json").json()
    bulk_filter = schema["components"]["schemas"]["BulkRetryFilter"]["properties"]
    assert bulk_filter["include_retried"]["default"] is False
    assert "already-retried" in bulk_filter["include_retried"]["description"]
    parameters = {p["name"]: p for p in
                  schema["paths"]["/tasks/{task_id}/retry"]["post"]["parameters"]}
    assert "already-retried" in parameters["force"]["description"]
