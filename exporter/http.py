"""The HTTP side of ``serve``: ``/metrics``, ``/healthz``, ``/readyz`` and the action API mount,
and the uvicorn servers that run them until SIGINT/SIGTERM.
"""
from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from actions.http.routes import PREFIX as API_PREFIX
from exporter import __version__
from exporter.config import Settings
from exporter.history.writer import HistoryStats
from exporter.state.health import Health
from ui.app import HOW_TO_ENABLE, DisabledUi
from ui.app import PREFIX as UI_PREFIX

#: gzip level of ``/metrics``. Measured on 36 MB of exposition (500 names × 10 queues): level
#: 1 takes 54 ms for 1.41 MB, 6 takes 214 ms for 1.14 MB, 9 (prometheus-client's) 1,043 ms for
#: 1.00 MB; the text is repetitive enough that the fastest level already gives 25×.
GZIP_LEVEL = 1


class _AsgiEndpoint:
    """Wraps an ASGI callable so Starlette's ``Route`` serves it as an app at that exact path
    (a plain function would be taken for a request handler; ``mount`` would redirect
    ``/metrics`` to ``/metrics/``).
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class MetricsEndpoint:
    """``/metrics``: ``render()`` (a :meth:`~exporter.metrics.scrape.Scrape.render`: every
    source guarded, then the scrape report), always Prometheus text format 0.0.4 — OpenMetrics
    is not negotiated; Prometheus reads the text format whatever it asked for.

    Rendering runs in Starlette's thread pool, so the event loop keeps serving ``/healthz``.
    """

    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI: answer any request with the exposition."""
        body = await run_in_threadpool(self.render)
        await Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)(scope, receive, send)


def history_problem(stats: HistoryStats) -> str | None:
    """What ``/readyz`` says while the history writer's batches fail, or its processes exit
    (``stats.consecutive_failures`` > 0, from :meth:`HistoryWriter.stats
    <exporter.history.writer.HistoryWriter.stats>`), else ``None``: attempts in a row, the
    last successful write (ISO 8601 UTC, or ``never``), rows waiting in memory.
    """
    if not stats.consecutive_failures:
        return None
    last = ("never" if stats.last_write_ts is None else
            datetime.fromtimestamp(stats.last_write_ts, timezone.utc).isoformat())
    return (f"history writes are failing ({stats.consecutive_failures} attempts in a row; last "
            f"written {last}): {stats.pending_rows} rows wait in memory and are retried with "
            "backoff, events beyond --history-queue-size are dropped. The log's `history write "
            "failed` (or `history writer process exited`) lines say why; metrics are "
            "unaffected")


def create_http_app(metrics: MetricsEndpoint | None, health: Health,
                    api: Callable[..., Awaitable[None]] | None = None,
                    ui: Callable[..., Awaitable[None]] | None = None,
                    history: Callable[[], HistoryStats] | None = None) -> FastAPI:
    """The ASGI app: ``/metrics`` (``metrics``, gzip-compressed when the client accepts it;
    left out when ``metrics`` is ``None``), ``/healthz`` (200 while the process serves) and
    ``/readyz`` (200 when ``health`` says the consumer is connected to the broker, else 503,
    with ``problems`` an operator must fix — e.g. events refused for their content type — in
    its body while they last); both answer JSON
    ``{"status": ...}``. ``history`` (the history writer's ``stats``; ``None`` without a
    history) adds the problem ``history_writes`` while its writes fail
    (:func:`history_problem`, seen now): degraded, not unready — metrics still work.
    ``api`` (the action API, :func:`actions.http.routes.create_api`) is mounted at ``/api/v1``;
    ``/metrics``, ``/healthz`` and ``/readyz`` need no token. With ``--api-listen`` the
    process serves two of these apps: metrics without the API, and the API without metrics.
    ``ui`` (the job browser, :func:`ui.app.ui_from_settings`) is mounted at ``/ui``, next to
    the API. ``/`` redirects to the job browser (307), or without one — none mounted, or the
    :class:`~ui.app.DisabledUi` of ``serve`` without ``--ui-users-file`` — lists these endpoints
    (and says how to turn the job browser on when it is off).
    """
    http = FastAPI(title="celery-jobmon", version=__version__, docs_url=None, redoc_url=None,
                   openapi_url=None)
    if metrics is not None:
        compressed = GZipMiddleware(metrics, compresslevel=GZIP_LEVEL)
        http.router.routes.append(Route("/metrics", _AsgiEndpoint(compressed),
                                        methods=["GET"], include_in_schema=False))

    @http.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @http.get("/readyz")
    def readyz() -> JSONResponse:
        connected = health.broker_connected
        body: dict[str, Any] = {"status": "ready" if connected else "broker disconnected"}
        problems = health.problems()
        failing = history_problem(history()) if history is not None else None
        if failing is not None:
            problems["history_writes"] = (failing, time.time())
        if problems:
            body["problems"] = [
                {"condition": condition, "detail": detail,
                 "last_seen": datetime.fromtimestamp(seen, timezone.utc).isoformat()}
                for condition, (detail, seen) in sorted(problems.items())]
        return JSONResponse(body, status_code=200 if connected else 503)

    @http.get("/", include_in_schema=False)
    def landing() -> Response:
        if ui is not None and not isinstance(ui, DisabledUi):
            return RedirectResponse(f"{UI_PREFIX}/", status_code=307)
        return HTMLResponse(_landing_page(metrics is not None, api is not None,
                                          ui_off=ui is not None))

    if api is not None:
        mount = Mount(API_PREFIX, app=api)
        # `.` must match any character, so that a path with an encoded newline (%0A) still
        # reaches the API (its auth and its problem documents) instead of falling through.
        mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
        http.router.routes.append(mount)
        _api_problems_outside_the_mount(http)
    if ui is not None:
        http.router.routes.append(Mount(UI_PREFIX, app=ui))
    return http


def _landing_page(metrics: bool, api: bool, ui_off: bool) -> str:
    """The page ``GET /`` shows when there is no job browser to go to (as node_exporter's):
    links to what this listener serves; ``ui_off``: this listener would serve the job browser
    but it is off, and the page says how to turn it on.
    """
    links = [("/metrics", "Metrics")] if metrics else []
    links += [("/healthz", "Health"), ("/readyz", "Readiness")]
    if api:
        links.append((f"{API_PREFIX}/openapi.json", "Action API (OpenAPI document)"))
    items = "".join(f'<li><a href="{href}">{label}</a></li>' for href, label in links)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>celery-jobmon</title></head><body><h1>celery-jobmon {__version__}</h1>"
            f"<ul>{items}</ul>{f'<p>{HOW_TO_ENABLE}</p>' if ui_off else ''}</body></html>")


def _api_problems_outside_the_mount(http: FastAPI) -> None:
    """404/405 for ``/api…`` paths the mount does not take are problem documents too."""
    from actions.http.problems import problem_response

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith("/api"):
            return problem_response(exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    http.add_exception_handler(StarletteHTTPException, on_http_error)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: uvicorn re-raises a captured SIGTERM
    once it has shut down, which (default handler) kills the process before the history is
    flushed. :func:`serve_all` handles SIGINT/SIGTERM for every server instead.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: FastAPI, listen: tuple[str, int], settings: Settings) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``listen``, with TLS when ``--tls-cert``/``--tls-key``."""
    host, port = listen
    return _Server(uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
        ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
    ))


async def serve_all(servers: list[uvicorn.Server]) -> None:
    """Run the servers until SIGINT/SIGTERM (or until one stops), then stop them all."""

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
