"""Render time of the job browser's pages over a history of 1,000,000 executions.

The history holds ``--rows`` executions spread over the last ``--days`` days (about 33,000 a
day with the defaults): 50 task names with Zipf-like frequencies (the rarest about 1/200 of
the rows), 5 queues, 10 workers, 5 % FAILURE with 8 exception classes and a traceback, 100
STARTED in the last 10 minutes, 500 PENDING in the last hour, the rest SUCCESS with a run time.
Each page is requested through the real app (``create_ui`` inside ``create_http_app``, a
logged-in viewer, Starlette's TestClient: routing, sessions, CSRF middleware, templates and
the SQL) ``--requests`` times after 3 warm-up requests; printed: p50 and p95 in milliseconds.

The Running page is measured with the events saying no worker is up, so it reads the history
only: asking the workers (``inspect active``) adds their round trip, as on the Scheduled page,
which is not measured. The broker is kombu's ``memory://``: no page measured here touches it.

    python benchmarks/ui_pages.py                         # 1,000,000 rows, SQLite and PostgreSQL
    python benchmarks/ui_pages.py --rows 200000 --backend sqlite

PostgreSQL: a temporary database is created through ``--pg-admin`` and dropped afterwards
(``VACUUM ANALYZE`` after the fill, as autovacuum would do). SQLite: a temporary file, no
``ANALYZE`` (the exporter never runs one).

After the fill the hourly and daily statistics (:mod:`exporter.history.rollup`) are built, as
the history writer of a running exporter has them (its time is printed); ``--no-rollup``
measures without them, as in the first minutes after the upgrade to migration 0005.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import insert
from sqlalchemy.engine import Engine, make_url
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import postgres_url, sqlite_url  # noqa: E402

from actions.wiring import action_context  # noqa: E402
from exporter.config import Settings  # noqa: E402
from exporter.history import create_history_engine, list_executions, upgrade  # noqa: E402
from exporter.history.orm import TASK_EXECUTION  # noqa: E402
from exporter.history.rollup import build  # noqa: E402
from exporter.http import create_http_app  # noqa: E402
from exporter.state.health import Health  # noqa: E402
from ui.access import UiContext  # noqa: E402
from ui.app import create_ui  # noqa: E402
from ui.users import add_user, load_users  # noqa: E402

NAMES = [f"app.tasks.t{k:02d}" for k in range(50)]
WEIGHTS = [1 / (k + 1) for k in range(50)]
QUEUES = ["default", "mail", "billing", "reports", "low"]
HOSTS = [f"celery@worker-{k}" for k in range(10)]
EXCEPTIONS = ["ValueError", "KeyError", "TimeoutError", "ConnectionError", "PaymentDeclined",
              "IntegrityError", "RuntimeError", "OSError"]
TRACEBACK = "Traceback (most recent call last):\n" + "  File \"app/tasks.py\", line 42\n" * 12
CHUNK = 20_000


class NoWorkersUp:
    """The live model of an exporter whose events say no worker is up (nobody is asked)."""

    def running(self) -> dict[Any, int]:
        return {}

    def worker_states(self) -> tuple[()]:
        return ()


def rows(count: int, days: float, now: float, seed: int = 1) -> Any:
    """``count`` task_execution rows in chunks of :data:`CHUNK`, oldest first."""
    rng = random.Random(seed)
    span = days * 86400.0
    chunk: list[dict[str, Any]] = []
    for i in range(count):
        ts = now - span + span * (i + 1) / count
        name = rng.choices(NAMES, WEIGHTS)[0]
        runtime = rng.expovariate(1 / (0.05 + NAMES.index(name) * 0.02))
        if i >= count - 100:
            state, ts = "STARTED", now - 600 + 6 * (i - count + 100)
        elif i >= count - 600:
            state, ts = "PENDING", now - 3600 + 7 * (i - count + 600)
        else:
            state = "FAILURE" if rng.random() < 0.05 else "SUCCESS"
        failed = state == "FAILURE"
        exception = rng.choice(EXCEPTIONS)
        chunk.append({
            "task_id": str(uuid.UUID(int=rng.getrandbits(128))), "name": name, "state": state,
            "state_ts": ts, "queue": QUEUES[i % 5], "routing_key": QUEUES[i % 5],
            "exchange": "", "hostname": None if state == "PENDING" else HOSTS[i % 10],
            "args": f"({i}, 2)", "kwargs": "{}", "sent_at": ts - runtime - 0.01,
            "received_at": ts - runtime - 0.005,
            "started_at": None if state == "PENDING" else ts - runtime,
            "finished_at": ts if state in ("SUCCESS", "FAILURE") else None,
            "runtime": runtime if state in ("SUCCESS", "FAILURE") else None,
            "result": "4" if state == "SUCCESS" else None,
            "exception_type": exception if failed else None,
            "exception_message": f"{exception} in step {i % 7}\ndetails" if failed else None,
            "traceback": TRACEBACK + f"{exception}: step {i % 7}" if failed else None,
            "exception_at": ts if failed else None, "updated_at": ts,
        })
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fill(engine: Engine, count: int, days: float, now: float) -> float:
    """Insert the rows; returns the seconds it took."""
    begin = time.perf_counter()
    for chunk in rows(count, days, now):
        with engine.begin() as connection:
            connection.execute(insert(TASK_EXECUTION), chunk)
    return time.perf_counter() - begin


def client_for(engine: Engine, users: str, now: float) -> TestClient:
    """The real app over ``engine``, a viewer logged in."""
    ctx = action_context(Settings(broker_url="memory://", inspect_timeout=1.0), history=engine)
    ctx.live = NoWorkersUp()
    ui = create_ui(UiContext(ctx, load_users(users)), session_secret="bench" * 8,
                   secure_cookies=False)
    client = TestClient(create_http_app(None, Health(), None, ui), follow_redirects=False)
    page = client.get("/ui/login").text
    token = page.split('name="csrftoken" value="')[1].split('"')[0]
    response = client.post("/ui/login", data={"username": "viewer", "password": "bench-pass",
                                               "csrftoken": token})
    assert response.status_code == 303, response.text
    return client


def pages(engine: Engine, now: float) -> list[tuple[str, str]]:
    """(label, path) of each page measured; ids and cursors taken from the data."""
    newest = list_executions(engine, states=["SUCCESS"], limit=50)
    failure = list_executions(engine, states=["FAILURE"], limit=1).items[0]
    rare, common = NAMES[-1], NAMES[0]
    day = 86400.0
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - 10 * day))
    until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - 9 * day))
    return [
        ("overview", "/ui/"),
        ("failed", "/ui/failed"),
        ("failed ?name=rare", f"/ui/failed?name={rare}"),
        ("completed", "/ui/completed"),
        ("completed page 2", f"/ui/completed?cursor={newest.next_cursor}"),
        ("completed ?name=common", f"/ui/completed?name={common}"),
        ("completed ?name=rare", f"/ui/completed?name={rare}"),
        ("completed ?queue=", "/ui/completed?queue=billing"),
        ("completed 1 day, 9 days ago", f"/ui/completed?since={since}&until={until}"),
        ("completed ?name=rare&range", f"/ui/completed?name={rare}&since={since}&until={until}"),
        ("statistics 1h", "/ui/statistics"),
        ("statistics 1d", "/ui/statistics?window=1d"),
        ("statistics 1d sort=p95", "/ui/statistics?window=1d&sort=p95"),
        ("statistics 7d", "/ui/statistics?window=7d"),
        ("task detail", f"/ui/tasks/{failure.task_id}"),
        ("running", "/ui/running"),
        ("workers", "/ui/workers"),
    ]


def measure(client: TestClient, path: str, requests: int) -> tuple[float, float]:
    """p50 and p95 in milliseconds of ``requests`` GETs of ``path`` (after 3 warm-ups)."""
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
    times = []
    for _ in range(requests):
        begin = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - begin) * 1000)
    cuts = statistics.quantiles(times, n=20, method="inclusive")
    return statistics.median(times), cuts[18]


def run(label: str, url: str, args: argparse.Namespace, users: str) -> None:
    """Fill a history at ``url``, build its statistics (unless --no-rollup), print the pages."""
    engine = create_history_engine(url)
    upgrade(engine)
    now = time.time()
    seconds = fill(engine, args.rows, args.days, now)
    print(f"{label}: {args.rows} rows over {args.days:g} days filled in {seconds:.0f} s")
    if engine.dialect.name == "postgresql":
        admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(sql.SQL("VACUUM ANALYZE"))
    if args.rollup:
        begin = time.perf_counter()
        while build(engine, now, budget=60.0):
            pass
        print(f"{label}: hourly and daily statistics built in {time.perf_counter() - begin:.1f} s")
    client = client_for(engine, users, now)
    print(f"{'page':<32} {'p50 ms':>8} {'p95 ms':>8}")
    for name, path in pages(engine, now):
        p50, p95 = measure(client, path, args.requests)
        flag = "" if p95 < 100 else "  over 100 ms"
        print(f"{name:<32} {p50:8.1f} {p95:8.1f}{flag}")
    client.close()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--no-rollup", dest="rollup", action="store_false",
                        help="do not build the hourly statistics before measuring")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="libpq URL of a database from which a temporary one is created")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobmon-bench-users-") as directory:
        users = str(Path(directory) / "users")
        add_user(users, "viewer", "viewer", "bench-pass")
        if args.backend in ("sqlite", "both"):
            with sqlite_url() as url:
                run("sqlite", url, args, users)
        if args.backend in ("postgresql", "both"):
            with postgres_url(args.pg_admin) as url:
                run("postgresql", url, args, users)


if __name__ == "__main__":
    main()
