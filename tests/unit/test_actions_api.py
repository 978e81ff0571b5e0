"""The action API in process: a real SQLite history, a fake broker that records what it is asked
to do. Statuses, problem documents, eligibility rules and what gets sent and recorded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from actions.broker import HeldTask, Outgoing, QueueCheck, RevokeReplies
from actions.context import ActionContext, KnownTask
from actions.errors import BrokerUnavailable, NotSupported
from actions.follow_up import CancelFollowUp
from actions.http.auth import Verdict, authorize
from actions.http.routes import create_api
from actions.retry import NO_OUTCOME_WARNING
from actions.schemas import CancelResult
from actions.text import cancel_text
from exporter.history import create_history_engine, get_execution, record_action, upgrade
from exporter.history.audit import SettleResult, judge_cancel, settle_cancels
from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION
from exporter.poll.redis_queues import PendingMessage
from exporter.poll.snapshot import PollSnapshot, QueueState, WorkerPollState
from exporter.state.labels import TaskLabels
from tests.support.waiting import assert_stays, wait_for

TOKEN = "unit-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000.0
PROBLEM = "application/problem+json"


class FakeBroker:
    """Records sends and revokes; answers queries from its attributes."""

    def __init__(self) -> None:
        self.sent: list[tuple[Outgoing, str]] = []
        self.revoked: list[tuple[str, bool, str | None]] = []
        self.held: HeldTask | None = None
        self.meta: dict[str, Mapping[str, Any]] = {}
        self.result_backend = True
        self.down = False
        self.pending_messages: list[PendingMessage] | None = []
        #: What check_queue answers (None: a broker that cannot tell, like Redis).
        self.queues: dict[str, QueueCheck] | None = None
        #: What revoke answers, and the pool worker_pool reports per worker.
        self.replies = RevokeReplies(("w@h",), (), {}, 1.0)
        self.pools: dict[str, str] = {}

    @property
    def has_result_backend(self) -> bool:
        return self.result_backend

    def send(self, message: Outgoing, task_id: str) -> None:
        if self.down:
            raise BrokerUnavailable("the broker did not answer (ConnectionError)")
        self.sent.append((message, task_id))

    def check_queue(self, queue: str) -> QueueCheck | None:
        if self.queues is None:
            return None
        return self.queues.get(queue, QueueCheck(queue, False, None, None, "/"))

    def revoke(self, task_id: str, *, terminate: bool, signal: str | None,
               workers: int | None) -> RevokeReplies:
        self.revoked.append((task_id, terminate, signal))
        return self.replies

    def worker_pool(self, hostname: str) -> str | None:
        return self.pools.get(hostname)

    def find_held(self, task_id: str, workers: int | None) -> HeldTask | None:
        return self.held if self.held and task_id == "held" else None

    def pending(self, queue: str, offset: int, limit: int) -> list[PendingMessage]:
        if self.pending_messages is None:
            raise NotSupported("waiting messages can be listed on Redis brokers only")
        return self.pending_messages[offset:offset + limit]

    def stored_meta(self, task_id: str) -> Mapping[str, Any] | None:
        return self.meta.get(task_id, {"status": "PENDING", "result": None})


@pytest.fixture
def engine(tmp_path):
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def add_row(engine, task_id: str, state: str = "FAILURE", ts: float = T0, **fields: Any) -> None:
    values = {"task_id": task_id, "name": "app.charge", "state": state, "state_ts": ts,
              "queue": "b", "routing_key": "b", "args": "(1, 'a')", "kwargs": "{'x': 2}",
              "exception_type": "ValueError", "updated_at": ts,
              "finished_at": ts if state in ("FAILURE", "SUCCESS", "REVOKED") else None}
    values.update(fields)
    with engine.begin() as connection:
        connection.execute(insert(TASK_EXECUTION).values(**values))


@pytest.fixture
def broker():
    return FakeBroker()


@pytest.fixture
def make_client(engine, broker):
    def make(token: str | None = TOKEN, history: Any = engine, **context: Any) -> TestClient:
        context.setdefault("max_manual_retries", 2)
        ctx = ActionContext(broker=broker, history=history, clock=lambda: T0 + 100, **context)
        root = FastAPI()
        root.mount("/api/v1", create_api(ctx, token=token, max_body_bytes=2048,
                                         secrets={"s3cret-password"}))
        return TestClient(root, headers=AUTH)

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def problem(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"]
    return body


# -- auth and the problem format ----------------------------------------------------------


@pytest.mark.parametrize(("header", "verdict"), [
    (None, Verdict.MISSING), (b"Basic abc", Verdict.MISSING), (b"Bearer", Verdict.INVALID),
    (b"Bearer wrong", Verdict.INVALID), (f"bearer  {TOKEN} ".encode(), Verdict.OK),
    (f"Bearer {TOKEN}".encode(), Verdict.OK), ("Bearer ünï".encode(), Verdict.INVALID),
])
def test_authorize_compares_the_bearer_token(header, verdict):
    assert authorize(TOKEN.encode(), header) is verdict
    assert authorize(None, header) is Verdict.NOT_CONFIGURED


def test_without_a_token_every_route_is_403_saying_how_to_set_one(make_client):
    client = make_client(token=None)
    for path in ("/api/v1/tasks", "/api/v1/openapi.json", "/api/v1/nowhere"):
        body = problem(client.get(path), 403)
        assert "JOBMON_API_TOKEN" in body["detail"] and TOKEN not in body["detail"]


def test_missing_and_wrong_tokens_are_401_with_www_authenticate(client):
    missing = client.get("/api/v1/tasks", headers={"Authorization": ""})
    assert problem(missing, 401)["title"] == "Authentication required"
    assert missing.headers["www-authenticate"] == 'Bearer realm="celery-jobmon"'
    wrong = client.get("/api/v1/tasks", headers={"Authorization": "Bearer nope"})
    assert problem(wrong, 401)["title"] == "Invalid token"
    assert wrong.headers["www-authenticate"].endswith('error="invalid_token"')


@pytest.mark.parametrize(("path", "error"), [
    ("/api/v1/tasks?limit=0", "limit: Input should be greater than or equal to 1"),
    ("/api/v1/tasks?limit=1001", "limit: Input should be less than or equal to 1000"),
    ("/api/v1/tasks?limit=x", "limit: Input should be a valid integer"),
    ("/api/v1/tasks?since=tomorrow", "since: an ISO 8601 time"),
    ("/api/v1/tasks?since=10&until=5", "until: must be later than since"),
    ("/api/v1/tasks?cursor=garbage", "cursor: not a cursor this API returned"),
    ("/api/v1/tasks?state=sideways", "state: unknown state 'sideways'"),
    ("/api/v1/tasks?name=%0A", "name: 1 to 255 characters"),
    ("/api/v1/stats/tasks?window=0", "window: greater than 0"),
    ("/api/v1/queues/a/pending?offset=-1", "offset: Input should be greater than or equal"),
])
def test_bad_parameters_are_400_problems_never_422(client, path, error):
    body = problem(client.get(path), 400)
    assert body["detail"].startswith(error), body


def test_validation_errors_list_every_parameter(client):
    body = problem(client.get("/api/v1/tasks?limit=0&since=" + "x" * 100), 400)
    assert [e["loc"] for e in body["errors"]] == [["query", "since"], ["query", "limit"]]


def test_bodies_above_the_limit_are_413_declared_or_streamed(client):
    declared = client.post("/api/v1/tasks/retry", content=b"{}" + b" " * 4096,
                           headers={"content-type": "application/json"})
    assert problem(declared, 413)["detail"].startswith("request bodies are limited to 2048")

    def chunks():
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    streamed = client.post("/api/v1/tasks/retry", content=chunks(),
                           headers={"content-type": "application/json"})
    problem(streamed, 413)


def test_unknown_paths_and_methods_are_problems_too(client):
    assert problem(client.get("/api/v1/nowhere"), 404)["type"] == "about:blank"
    response = client.delete("/api/v1/tasks")
    problem(response, 405)
    assert response.headers["allow"] == "GET"


def test_history_disabled_is_503_for_history_reads(make_client):
    client = make_client(history=None)
    body = problem(client.get("/api/v1/tasks"), 503)
    assert body["title"] == "History disabled" and "--no-history" in body["detail"]
    problem(client.post("/api/v1/tasks/x/retry"), 503)


def test_the_openapi_document_has_bearer_auth_problems_and_no_422(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["security"] == [{"bearerAuth": []}]
    assert schema["servers"] == [{"url": "/api/v1"}]
    retry = schema["paths"]["/tasks/{task_id}/retry"]["post"]["responses"]
    assert set(retry) == {"200", "202", "400", "401", "403", "404", "409", "413", "503"}
    assert list(retry["409"]["content"]) == [PROBLEM]
    assert "422" not in str(schema) and "HTTPValidationError" not in str(schema)
    detail = schema["components"]["schemas"]["TaskDetail"]["properties"]
    assert detail["finished_at"]["anyOf"][0]["format"] == "date-time"
    assert detail["runtime_seconds"]["description"].startswith("Seconds it ran")


# -- retry --------------------------------------------------------------------------------


def test_retry_sends_the_stored_arguments_and_records_the_link(client, engine, broker):
    add_row(engine, "t1")
    broker.meta["t1"] = {"status": "FAILURE", "args": [1, "a"], "kwargs": {"x": [2]}}
    dry = client.post("/api/v1/tasks/t1/retry?dry_run=true")
    assert dry.status_code == 200
    assert dry.json()["sent"] == {"task_name": "app.charge", "args": [1, "a"],
                                  "kwargs": {"x": [2]}, "queue": "b", "routing_key": "b",
                                  "exchange": "", "priority": None,
                                  "argument_source": "result_backend"}
    assert (dry.json()["queue_check"], dry.json()["warnings"]) == (None, [])
    assert broker.sent == []

    done = client.post("/api/v1/tasks/t1/retry")
    assert done.status_code == 202
    new_id = done.json()["new_task_id"]
    assert broker.sent == [(Outgoing("app.charge", [1, "a"], {"x": [2]}, "b", "b", "", None),
                            new_id)]
    original, new = get_execution(engine, "t1"), get_execution(engine, new_id)
    assert (original.manual_retry_count, original.updated_by_action) == (1, "retry")
    assert (new.state, new.retry_of, new.created_by_action, new.args) == (
        "PENDING", "t1", "retry", "(1, 'a')")
    with engine.connect() as connection:
        audit = connection.execute(select(ACTION_AUDIT)).mappings().one()
    assert (audit["actor"], audit["action"], audit["task_id"], audit["at"]) == (
        "api", "retry", "t1", T0 + 100)
    assert audit["detail"]["new_task_id"] == new_id
    assert client.get("/api/v1/tasks/t1").json()["manual_retries"] == [new_id]


def test_retry_eligibility_refusals_are_409_with_a_reason(client, engine):
    add_row(engine, "ok", "SUCCESS")
    add_row(engine, "revoked", "REVOKED")
    add_row(engine, "used", manual_retry_count=2)
    add_row(engine, "root", manual_retry_count=1)
    add_row(engine, "mid", retry_of="root", manual_retry_count=1)
    add_row(engine, "child", retry_of="mid")  # the third manual retry of the chain
    add_row(engine, "nameless", name=None)
    add_row(engine, "nowhere", queue=None)
    expected = {"ok": "state", "revoked": "state", "used": "max-manual-retries",
                "child": "max-manual-retries", "nameless": "name-unknown",
                "nowhere": "queue-unknown"}
    for task_id, reason in expected.items():
        body = problem(client.post(f"/api/v1/tasks/{task_id}/retry"), 409)
        assert body["reason"] == reason, (task_id, body)
    revoked = problem(client.post("/api/v1/tasks/revoked/retry"), 409)
    assert "include_revoked=true" in revoked["detail"]
    assert client.post("/api/v1/tasks/revoked/retry?include_revoked=true").status_code == 202
    problem(client.post("/api/v1/tasks/unknown/retry"), 404)


def test_lost_and_cancelled_executions_are_retried_with_a_warning(client, engine):
    # Before: 409 "only FAILURE tasks are retried", while the CeleryTaskLost runbook says to
    # retry the lost executions that are safe to run again.
    for state in ("LOST", "CANCELLED"):
        add_row(engine, state.lower(), state)
        dry = client.post(f"/api/v1/tasks/{state.lower()}/retry?dry_run=true").json()
        assert dry["warnings"][0] == (
            f"the task is {state}: it ended with no outcome, and part of its work may be done. "
            "If it is acks_late, the broker delivers it again by itself under the same id "
            "(RabbitMQ at once, Redis after its visibility_timeout, 1 hour by default): retry "
            "it only if that did not happen, or if running it twice is safe"), dry
        sent = client.post(f"/api/v1/tasks/{state.lower()}/retry")
        assert sent.status_code == 202, sent.text
        assert sent.json()["warnings"][0] == dry["warnings"][0]


def test_retry_checks_the_queue_it_publishes_to(client, engine, broker):
    add_row(engine, "t1", routing_key="b.key", exchange="tasks")
    broker.queues = {"b": QueueCheck("b", True, 3, 0, "jobs")}
    dry = client.post("/api/v1/tasks/t1/retry?dry_run=true").json()
    # The original went through exchange "tasks"; the retry goes to queue b by name.
    assert (dry["sent"]["exchange"], dry["sent"]["routing_key"]) == ("", "b")
    assert dry["queue_check"] == {"queue": "b", "exists": True, "messages": 3, "consumers": 0}
    assert dry["warnings"] == [
        "no consumer on queue 'b' now: the retry waits there until a worker consumes it"]
    broker.queues = {}
    for path in ("/api/v1/tasks/t1/retry?dry_run=true", "/api/v1/tasks/t1/retry"):
        body = problem(client.post(path), 409)
        assert (body["title"], body["reason"], body["type"]) == (
            "Broker refused", "queue-missing", "tag:celery-jobmon,2025:problem:broker-refused")
        assert body["detail"].startswith("RabbitMQ has no queue 'b' in vhost '/' (404 NOT_FOUND")
    assert broker.sent == []
    bulk = client.post("/api/v1/tasks/retry", json={"dry_run": False}).json()
    assert [(i["outcome"], i["reason"][:26]) for i in bulk["items"]] == [
        ("skipped", "RabbitMQ has no queue 'b' ")]


def test_retry_with_the_broker_down_is_503_and_records_nothing(client, engine, broker):
    add_row(engine, "t1")
    broker.down = True
    problem(client.post("/api/v1/tasks/t1/retry"), 503)
    assert get_execution(engine, "t1").manual_retry_count == 0


def test_list_filters_by_exception_type(client, engine):
    add_row(engine, "v1", ts=T0 + 1)
    add_row(engine, "k1", ts=T0 + 2, exception_type="KeyError")
    add_row(engine, "k2", ts=T0 + 3, exception_type="KeyError")
    page = client.get("/api/v1/tasks", params={"exception_type": "KeyError", "limit": 1}).json()
    assert [item["task_id"] for item in page["items"]] == ["k2"]
    rest = client.get("/api/v1/tasks", params={"exception_type": "KeyError",
                                               "cursor": page["next_cursor"]}).json()
    assert ([item["task_id"] for item in rest["items"]], rest["next_cursor"]) == (["k1"], None)


def test_exception_type_selects_failures_only(client, engine):
    # task-retried stores the exception too: a task that retried and then succeeded (or is
    # retrying still) raised KeyError but did not fail with it.
    add_row(engine, "failed", ts=T0 + 1, exception_type="KeyError")
    add_row(engine, "retried-then-succeeded", "SUCCESS", ts=T0 + 2, exception_type="KeyError")
    add_row(engine, "retrying", "RETRY", ts=T0 + 3, exception_type="KeyError")
    page = client.get("/api/v1/tasks", params={"exception_type": "KeyError"}).json()
    assert [item["task_id"] for item in page["items"]] == ["failed"]
    with_state = client.get("/api/v1/tasks", params={"exception_type": "KeyError",
                                                     "state": "SUCCESS"}).json()
    assert with_state == {"items": [], "next_cursor": None}
    parameter = next(p for p in client.get("/api/v1/openapi.json").json()["paths"][
        "/tasks"]["get"]["parameters"] if p["name"] == "exception_type")
    assert parameter["description"] == (
        "Executions that failed with this exception class (exact name, `ValueError`): state "
        "FAILURE only. A task that raised it, retried itself and then succeeded is not listed.")


def test_bulk_retry_is_a_dry_run_by_default_and_filters(client, engine, broker):
    add_row(engine, "v1", ts=T0 + 1)
    add_row(engine, "v2", ts=T0 + 2, args="(1, 2")  # not a literal: skipped with the reason
    add_row(engine, "k1", ts=T0 + 3, exception_type="KeyError")
    add_row(engine, "s1", "SUCCESS", ts=T0 + 4)
    dry = client.post("/api/v1/tasks/retry", json={"exception_type": "ValueError"})
    assert dry.status_code == 200
    body = dry.json()
    assert (body["dry_run"], body["matched"], body["retried"], body["skipped"], body["more"]) \
        == (True, 2, 0, 1, False)
    assert [(i["task_id"], i["outcome"]) for i in body["items"]] == [
        ("v2", "skipped"), ("v1", "would_retry")]
    # Each one says what it is (before: task ids only).
    assert [(i["name"], i["exception_type"]) for i in body["items"]] == [
        ("app.charge", "ValueError")] * 2
    assert "not a Python literal" in body["items"][0]["reason"]
    assert broker.sent == []

    limited = client.post("/api/v1/tasks/retry", json={"limit": 1}).json()
    assert (limited["matched"], limited["more"]) == (1, True)
    assert limited["items"][0]["task_id"] == "k1"

    done = client.post("/api/v1/tasks/retry", json={"dry_run": False, "since": T0 + 0.5,
                                                    "until": "2023-11-14T22:13:22.5Z"})
    assert done.status_code == 202
    assert [i["outcome"] for i in done.json()["items"]] == ["skipped", "retried"]
    assert [task_id for _, task_id in broker.sent] == [done.json()["items"][1]["new_task_id"]]
    problem(client.post("/api/v1/tasks/retry", json={"limit": 1001}), 400)
    problem(client.post("/api/v1/tasks/retry", json={"name": ""}), 400)
    assert problem(client.post("/api/v1/tasks/retry", json={"queue": "a\x00b"}), 400)[
        "detail"].startswith("queue: 1 to 255 characters")
    problem(client.post("/api/v1/tasks/retry", json=[1]), 400)


def test_bulk_retry_takes_lost_and_cancelled_executions_when_asked(client, engine, broker):
    # Before: a bulk retry selected FAILURE (and REVOKED) only, while a single retry takes LOST
    # and CANCELLED executions and the CeleryTaskLost runbook says to retry them: after a
    # worker crash, each had to be retried by hand.
    add_row(engine, "failed", ts=T0 + 1)
    add_row(engine, "lost", "LOST", ts=T0 + 2, exception_type=None)
    add_row(engine, "cancelled", "CANCELLED", ts=T0 + 3, exception_type=None)
    add_row(engine, "revoked", "REVOKED", ts=T0 + 4, exception_type=None)
    failures = client.post("/api/v1/tasks/retry", json={}).json()
    assert [i["task_id"] for i in failures["items"]] == ["failed"]
    assert failures["items"][0]["warnings"] == []

    dry = client.post("/api/v1/tasks/retry", json={"include_no_outcome": True}).json()
    assert [(i["task_id"], i["outcome"]) for i in dry["items"]] == [
        ("cancelled", "would_retry"), ("lost", "would_retry"), ("failed", "would_retry")]
    assert [i["warnings"][:1] for i in dry["items"]] == [
        [NO_OUTCOME_WARNING.format(state="CANCELLED")], [NO_OUTCOME_WARNING.format(state="LOST")],
        []]
    every = client.post("/api/v1/tasks/retry", json={"include_no_outcome": True,
                                                     "include_revoked": True}).json()
    assert [i["task_id"] for i in every["items"]] == ["revoked", "cancelled", "lost", "failed"]
    assert broker.sent == []

    done = client.post("/api/v1/tasks/retry", json={"include_no_outcome": True, "since": T0 + 1.5,
                                                    "dry_run": False})
    assert done.status_code == 202, done.text
    assert [(i["task_id"], i["outcome"]) for i in done.json()["items"]] == [
        ("cancelled", "retried"), ("lost", "retried")]
    assert [task_id for _, task_id in broker.sent] == [
        i["new_task_id"] for i in done.json()["items"]]
    assert done.json()["items"][1]["warnings"][0] == NO_OUTCOME_WARNING.format(state="LOST")
    problem(client.post("/api/v1/tasks/retry", json={"include_no_outcome": "maybe"}), 400)


@pytest.mark.parametrize("field, value", [
    ("include_no_outcome", "yes"), ("include_no_outcome", 1), ("dry_run", "false"),
    ("include_revoked", 0), ("since", True), ("until", False), ("limit", True), ("limit", "2")])
def test_a_bulk_retry_body_of_the_wrong_json_type_is_a_400(client, engine, broker, field, value):
    # Before: coerced — "dry_run": "false" sent the retries (202), "since": true meant the
    # epoch's first second, "limit": "2" two executions.
    add_row(engine, "failed", ts=T0 + 1)
    body = problem(client.post("/api/v1/tasks/retry", json={field: value}), 400)
    assert [error["loc"] for error in body["errors"]] == [["body", field]], body
    assert broker.sent == []


# -- cancel -------------------------------------------------------------------------------


def cancel_audit(engine, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as connection:
        rows = connection.execute(select(ACTION_AUDIT.c.action, ACTION_AUDIT.c.detail).where(
            ACTION_AUDIT.c.task_id == task_id).order_by(ACTION_AUDIT.c.id)).all()
    return [(action, detail) for action, detail in rows]


def test_cancel_revokes_waiting_tasks_and_records_the_request(client, engine, broker):
    add_row(engine, "waiting", "RECEIVED")
    response = client.post("/api/v1/tasks/waiting/cancel")
    assert response.status_code == 202
    assert response.json() == {
        "task_id": "waiting", "action": "revoke", "signal": None, "previous_state": "RECEIVED",
        "state_source": "history", "hostname": None, "pool": None, "workers_up": None,
        "acknowledged_by": ["w@h"], "terminated_by": [], "refused_by": {}, "warnings": []}
    assert broker.revoked == [("waiting", False, None)]
    row = get_execution(engine, "waiting")
    assert (row.state, row.updated_by_action) == ("RECEIVED", "cancel")
    (action, detail), = cancel_audit(engine, "waiting")
    assert (action, detail["requested"], detail["acknowledged_by"]) == ("cancel", "revoke",
                                                                         ["w@h"])
    assert "outcome" not in detail


def test_cancel_terminates_running_tasks_only_when_asked(client, engine, broker):
    add_row(engine, "running", "STARTED", hostname="w@h", started_at=T0 - 1)
    broker.pools = {"w@h": "prefork"}
    broker.replies = RevokeReplies(("other@h", "w@h"), ("w@h",), {}, 1.0)
    assert problem(client.post("/api/v1/tasks/running/cancel"), 409)["reason"] == "running"
    problem(client.post("/api/v1/tasks/running/cancel?signal=SIGKILL"), 400)
    problem(client.post("/api/v1/tasks/running/cancel?terminate=true&signal=SIGSTOP"), 400)
    response = client.post("/api/v1/tasks/running/cancel?terminate=true&signal=SIGKILL")
    assert response.status_code == 202
    body = response.json()
    assert {k: body[k] for k in ("action", "signal", "hostname", "pool", "acknowledged_by",
                                 "terminated_by", "warnings")} == {
        "action": "terminate", "signal": "SIGKILL", "hostname": "w@h", "pool": "prefork",
        "acknowledged_by": ["other@h", "w@h"], "terminated_by": ["w@h"], "warnings": []}
    assert broker.revoked == [("running", True, "SIGKILL")]
    assert get_execution(engine, "running").state == "STARTED"  # until task-revoked comes


def test_terminate_depends_on_the_pool_running_the_task(make_client, engine, broker):
    add_row(engine, "t", "STARTED", hostname="w@h", started_at=T0 - 1)
    snapshot = PollSnapshot(T0, 0.1, pools={"w@h": "threads"})
    client = make_client(poll_latest=lambda: snapshot)
    body = problem(client.post("/api/v1/tasks/t/cancel?terminate=true"), 409)
    assert (body["reason"], body["hostname"], body["pool"]) == (
        "pool-cannot-terminate", "w@h", "threads")
    assert body["detail"].startswith("the task runs on w@h, whose pool is threads (-P threads)")
    assert broker.revoked == [] and cancel_audit(engine, "t") == []

    broker.replies = RevokeReplies((), (), {}, 1.0)  # a busy solo worker does not answer
    snapshot = PollSnapshot(T0, 0.1, pools={"w@h": "solo"})
    body = client.post("/api/v1/tasks/t/cancel?terminate=true").json()
    assert (body["pool"], body["acknowledged_by"]) == ("solo", [])
    assert body["warnings"][0].startswith("w@h runs the solo pool (-P solo): it reads control "
                                          "messages only between tasks")
    # The command line has no poll snapshot: it asks the worker (inspect stats).
    broker.pools = {"w@h": "threads"}
    assert problem(make_client().post("/api/v1/tasks/t/cancel?terminate=true"), 409)[
        "reason"] == "pool-cannot-terminate"


def test_a_revoke_no_worker_acknowledged_says_it_is_lost(make_client, engine, broker, make_model):
    add_row(engine, "lost", "PENDING")
    broker.replies = RevokeReplies((), (), {}, 1.0)
    body = make_client(live=make_model()).post("/api/v1/tasks/lost/cancel").json()
    assert (body["workers_up"], body["acknowledged_by"]) == (0, [])
    assert body["warnings"][0].startswith(
        "no worker acknowledged the revoke within 1 s, and no worker is up by its heartbeats: "
        "the revoke is lost.")


@pytest.mark.parametrize(("request_detail", "row", "expected"), [
    ({"previous_state": "PENDING", "started_at": None},
     {"state": "REVOKED", "revoke_reason": "revoked"}, ("honoured", "task-revoked (revoked)")),
    ({"previous_state": "STARTED", "started_at": T0},
     {"state": "REVOKED", "revoke_reason": "terminated", "revoke_signal": 15},
     ("honoured", "task-revoked (terminated, signal 15)")),
    # A repair set the state (the event was lost): the evidence names the source.
    ({"previous_state": "PENDING", "started_at": None},
     {"state": "REVOKED", "revoke_reason": "revoked", "state_source": "result_backend"},
     ("honoured", "REVOKED in the result backend (revoked)")),
    ({"previous_state": "STARTED", "started_at": T0}, {"state": "STARTED", "started_at": T0},
     None),
    ({"previous_state": "PENDING", "started_at": None}, {"state": "RECEIVED"}, None),
    ({"previous_state": "PENDING", "started_at": None},
     {"state": "STARTED", "started_at": T0 + 5},
     ("not-honoured", "the task started after the request (now STARTED)")),
    ({"previous_state": "STARTED", "started_at": T0}, {"state": "SUCCESS", "started_at": T0},
     ("not-honoured", "the task ran to its end (SUCCESS) after the request")),
    ({"previous_state": "RECEIVED"}, {"state": "LOST"},
     ("unknown", "the task ended LOST: neither revoked nor run to its end")),
    ({"previous_state": "RECEIVED"}, None, None),
])
def test_a_cancel_outcome_is_judged_from_the_row_alone(request_detail, row, expected):
    assert judge_cancel(request_detail, row) == expected


def test_outcomes_are_recorded_once_and_shown_with_the_request(client, engine, broker):
    add_row(engine, "w1", "PENDING")
    assert client.post("/api/v1/tasks/w1/cancel").status_code == 202
    assert settle_cancels(engine, at=T0 + 101) == SettleResult([], 1)
    detail = client.get("/api/v1/tasks/w1").json()["cancel_requests"]
    assert [(r["action"], r["outcome"], r["acknowledged_by"]) for r in detail] == [
        ("revoke", "pending", ["w@h"])]
    with engine.begin() as connection:  # the worker's task-revoked, as the writer stores it
        connection.execute(TASK_EXECUTION.update().where(TASK_EXECUTION.c.task_id == "w1")
                           .values(state="REVOKED", revoke_reason="revoked"))
    assert settle_cancels(engine, at=T0 + 102) == SettleResult([("w1", "honoured")], 0)
    assert settle_cancels(engine, at=T0 + 103) == SettleResult([], 0)
    (_, request), (action, outcome) = cancel_audit(engine, "w1")
    assert (action, outcome) == ("cancel-outcome", {
        "outcome": "honoured", "state": "REVOKED", "evidence": "task-revoked (revoked)",
        "request_id": 1})
    detail = client.get("/api/v1/tasks/w1").json()["cancel_requests"]
    assert [(r["outcome"], r["evidence"], r["outcome_at"]) for r in detail] == [
        ("honoured", "task-revoked (revoked)", "2023-11-14T22:15:02Z")]


def test_the_follow_up_records_the_outcome_and_then_stops(engine):
    add_row(engine, "w1", "PENDING")
    record_action(engine, actor="api", action="cancel", task_id="w1",
                  detail={"requested": "revoke", "previous_state": "PENDING"}, at=T0)
    follow_up = CancelFollowUp(engine, clock=lambda: T0 + 1, interval=0.01)
    try:
        follow_up.watch()
        assert_stays(lambda: follow_up._thread is not None, 0.2, message="following")
        with engine.begin() as connection:
            connection.execute(TASK_EXECUTION.update().where(TASK_EXECUTION.c.task_id == "w1")
                               .values(state="STARTED", started_at=T0 + 0.5))
        wait_for(lambda: follow_up._thread is None, 5, message="the thread ended")
    finally:
        follow_up.stop()
    assert [action for action, _ in cancel_audit(engine, "w1")] == ["cancel", "cancel-outcome"]
    assert cancel_audit(engine, "w1")[1][1]["outcome"] == "not-honoured"


def test_the_command_line_prints_what_was_asked_and_who_acknowledged():
    result = CancelResult(
        task_id="t1", action="terminate", signal="SIGTERM", previous_state="STARTED",
        state_source="events", hostname="w@h", pool="solo", workers_up=1, acknowledged_by=[],
        warnings=["w@h runs the solo pool"])
    assert cancel_text(result) == (
        "asked to terminate t1 with SIGTERM on w@h (solo) (was STARTED, known from events): "
        "acknowledged by no worker\nwarning: w@h runs the solo pool")


def test_cancel_of_finished_or_unknown_tasks(client, engine, broker):
    for state in ("SUCCESS", "FAILURE", "REVOKED", "REJECTED"):
        add_row(engine, state.lower(), state)
        body = problem(client.post(f"/api/v1/tasks/{state.lower()}/cancel"), 409)
        assert body["reason"] == "finished" and state in body["detail"]
    problem(client.post("/api/v1/tasks/nobody-knows/cancel"), 404)
    broker.held = HeldTask("w@h", "scheduled", "app.later")
    held = client.post("/api/v1/tasks/held/cancel")
    assert (held.json()["previous_state"], held.json()["state_source"]) == ("RECEIVED",
                                                                            "workers")
    assert broker.revoked == [("held", False, None)]


def test_live_events_are_trusted_over_the_history(make_client, engine, broker):
    add_row(engine, "t", "RECEIVED")
    client = make_client(known_task=lambda task_id: KnownTask("STARTED", "app.charge", "b"))
    body = problem(client.post("/api/v1/tasks/t/cancel"), 409)
    assert body["reason"] == "running"


# -- reads --------------------------------------------------------------------------------


def test_task_detail_renders_times_as_iso_8601_utc(client, engine):
    add_row(engine, "t1", ts=T0, started_at=T0 - 2.5, runtime=2.5, traceback="Traceback …")
    body = client.get("/api/v1/tasks/t1").json()
    assert (body["finished_at"], body["started_at"]) == ("2023-11-14T22:13:20Z",
                                                         "2023-11-14T22:13:17.500000Z")
    assert (body["runtime_seconds"], body["traceback"], body["manual_retries"]) == (
        2.5, "Traceback …", [])


def test_task_detail_says_where_its_state_came_from(client, engine):
    add_row(engine, "repaired", "SUCCESS", state_source="result_backend")
    add_row(engine, "seen")
    assert client.get("/api/v1/tasks/repaired").json()["state_source"] == "result_backend"
    assert client.get("/api/v1/tasks/seen").json()["state_source"] == "events"


def test_task_list_pages_with_a_cursor(client, engine):
    for i in range(5):
        add_row(engine, f"t{i}", ts=T0 + i)
    first = client.get("/api/v1/tasks?limit=2&state=failed").json()
    second = client.get(f"/api/v1/tasks?limit=2&cursor={first['next_cursor']}").json()
    third = client.get(f"/api/v1/tasks?limit=2&cursor={second['next_cursor']}").json()
    ids = [t["task_id"] for page in (first, second, third) for t in page["items"]]
    assert ids == ["t4", "t3", "t2", "t1", "t0"] and third["next_cursor"] is None
    since = client.get(f"/api/v1/tasks?since={T0 + 3}").json()["items"]
    assert [t["task_id"] for t in since] == ["t4", "t3"]


def test_stats_flag_slow_tasks(make_client, engine):
    add_row(engine, "fast", "SUCCESS", ts=T0 + 50, runtime=1.0, name="app.fast")
    add_row(engine, "slow", "SUCCESS", ts=T0 + 60, runtime=9.0, name="app.slow")
    add_row(engine, "old", "SUCCESS", ts=T0 - 7200, runtime=1.0, name="app.old")
    client = make_client(slow_threshold=5.0)
    body = client.get("/api/v1/stats/tasks?window=1h").json()
    assert [(t["name"], t["count"], t["slow"]) for t in body["tasks"]] == [
        ("app.fast", 1, False), ("app.slow", 1, True)]
    assert (body["window_seconds"], body["slow_threshold_seconds"]) == (3600.0, 5.0)


def test_queues_and_workers_come_from_the_snapshots(make_client, broker):
    snapshot = PollSnapshot(
        taken_at=T0 + 99, duration=0.1,
        queues=(QueueState("a", {"0": 2, "3": 1}, 1, T0 + 40),),
        reserved={TaskLabels("app.x", "a"): 2, TaskLabels("app.y", "b"): 1},
        scheduled={TaskLabels("app.x", "a"): 1},
        workers=(WorkerPollState("w@h", 4, 1.5, 0.5, 1024, "prefork"),),
        pools={"w@h": "prefork"}, queues_read_at=T0 + 90,
    )
    client = make_client(poll_latest=lambda: snapshot)
    assert client.get("/api/v1/queues").json() == {
        "polled_at": "2023-11-14T22:14:59Z", "poll_age_seconds": 1.0,
        "lengths_read_at": "2023-11-14T22:14:50Z", "lengths_age_seconds": 10.0,
        "queues": [{"name": "a", "length": 3, "lengths_by_priority": {"0": 2, "3": 1},
                    "consumers": 1, "oldest_message_age_seconds": 60.0, "running": 0,
                    "reserved": 2, "scheduled": 1}]}
    assert client.get("/api/v1/workers").json()["workers"] == [{
        "hostname": "w@h", "up": True, "active": None, "processed": None,
        "last_heartbeat": None, "pool": "prefork", "pool_size": 4, "cpu_user_seconds": 1.5,
        "cpu_system_seconds": 0.5, "max_rss_bytes": 1024}]
    assert problem(make_client().get("/api/v1/queues"), 503)["title"] == "Not ready"


@pytest.mark.parametrize("hostname_label", [False, True])
def test_queues_count_running_tasks_of_a_real_model_with_or_without_the_hostname_label(
        make_client, make_model, ev, hostname_label):
    # With --task-hostname-label the model keys running tasks (name, queue_name, hostname):
    # /queues unpacked them as pairs and answered 500 while a task ran.
    model = make_model(hostname_label=hostname_label)
    model.process_many([ev.sent("u1", T0, "app.x", queue="a"),
                        ev.received("u1", T0, "app.x", hostname="w@h"),
                        ev.started("u1", T0 + 1, hostname="w@h"),
                        ev.heartbeat("w@h", T0 + 1, active=1, processed=1)])
    snapshot = PollSnapshot(taken_at=T0 + 99, duration=0.1, queues=(QueueState("a", {"0": 0}),))
    client = make_client(poll_latest=lambda: snapshot, live=model)
    queues = client.get("/api/v1/queues")
    assert queues.status_code == 200, queues.text
    assert [(q["name"], q["running"]) for q in queues.json()["queues"]] == [("a", 1)]
    workers = client.get("/api/v1/workers").json()["workers"]
    assert [(w["hostname"], w["up"], w["active"]) for w in workers] == [("w@h", True, 1)]


def test_pending_messages_page_and_rabbitmq_is_501(client, broker):
    broker.pending_messages = [PendingMessage(f"id{i}", "app.x", None, None, "(1,)", "{}", 0)
                               for i in range(3)]
    page = client.get("/api/v1/queues/a/pending?offset=1&limit=1").json()
    assert [(m["position"], m["task_id"]) for m in page["messages"]] == [(1, "id1")]
    broker.pending_messages = None
    assert "Redis" in problem(client.get("/api/v1/queues/a/pending"), 501)["detail"]


def test_secrets_in_error_details_are_masked(make_client, engine, broker):
    def leaky(task_id):
        raise ConnectionError("redis://:s3cret-password@host refused")

    broker.stored_meta = leaky  # type: ignore[method-assign]
    add_row(engine, "t1", args=None)
    body = problem(make_client().post("/api/v1/tasks/t1/retry"), 503)
    assert "s3cret-password" not in body["detail"] and "**" in body["detail"]


@pytest.mark.parametrize("task_id,status", [
    ("..%2F..%2Fetc%2Fpasswd", 404), ("x' OR 1=1 --", 404), ("🙂", 404),
    ("%00", 400), ("a" * 300, 400),  # control characters, over 255 characters: bad input
])
def test_hostile_task_ids_are_problems_never_errors(client, engine, task_id, status):
    add_row(engine, "real", "FAILURE")
    problem(client.get(f"/api/v1/tasks/{task_id}"), status)
    assert client.get("/api/v1/tasks/real").status_code == 200  # the table is intact


@pytest.mark.parametrize("cursor", ["eyJ4IjoxfQ", "AAAA", "'; DROP TABLE x; --", "%FF%FE"])
def test_tampered_cursors_are_400(client, cursor):
    problem(client.get(f"/api/v1/tasks?cursor={cursor}"), 400)
