"""App assembly: wire settings, Celery app, model, threads and the HTTP server together."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import celery
import uvicorn
from celery import Celery
from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from actions.api import create_api
from actions.broker import make_action_app
from actions.wiring import action_context

from . import __version__
from .config import Settings
from .consumer import EventConsumer
from .exposition import ModelExposition
from .history_collector import HistoryCollector
from .history_setup import OpenHistory, open_history
from .model import Model
from .poll_collector import PollCollector
from .poller import Poller
from .secrets import mask_url

#: Where the action API is mounted.
API_PREFIX = "/api/v1"
#: gzip level of ``/metrics``. Measured on 36 MB of exposition (500 names × 10 queues): level
#: 1 takes 54 ms for 1.41 MB, 6 takes 214 ms for 1.14 MB, 9 (prometheus-client's) 1,043 ms for
#: 1.00 MB; the text is repetitive enough that the fastest level already gives 25×.
GZIP_LEVEL = 1

log = logging.getLogger(__name__)


def make_celery_app(settings: Settings) -> Celery:
    """A Celery app for the exporter's own use (events, control); not set as current.

    The exporter's event queue gets ``event_queue_ttl``/``event_queue_expires`` from the
    settings (RabbitMQ honours them; Redis ignores them).
    """
    app = Celery("celery-jobmon", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        # Celery's conf prefers $CELERY_BROKER_URL over the broker given to the app; the read
        # and write URLs win over both, so --broker-url (or JOBMON_BROKER_URL) is what is used.
        broker_read_url=settings.broker_url,
        broker_write_url=settings.broker_url,
        broker_transport_options=dict(settings.transport_options),
        broker_connection_retry_on_startup=True,
        event_queue_ttl=settings.event_queue_ttl,
        event_queue_expires=settings.event_queue_expires,
        accept_content=list(settings.accept_content),
    )
    return app


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
    """``/metrics``: the model's families (:class:`~exporter.exposition.ModelExposition`, cached
    per series) followed by ``registry``'s (poller and history collectors, rendered by
    prometheus-client's ``generate_latest``), always Prometheus text format 0.0.4 — OpenMetrics
    is not negotiated; Prometheus reads the text format whatever it asked for.

    Rendering runs in Starlette's thread pool (the event loop keeps serving ``/healthz``); one
    render at a time, since the exposition's cache is not thread-safe.
    """

    def __init__(self, model: Model, exposition: ModelExposition,
                 registry: CollectorRegistry) -> None:
        self._model = model
        self._exposition = exposition
        self._registry = registry
        self._lock = threading.Lock()

    def render(self) -> bytes:
        """The whole exposition, UTF-8 text."""
        with self._lock:
            parts = self._exposition.chunks(self._model.snapshot())
        parts.append(generate_latest(self._registry))
        return b"".join(parts)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI: answer any request with the exposition."""
        body = await run_in_threadpool(self.render)
        await Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)(scope, receive, send)


def create_http_app(metrics: MetricsEndpoint | None, model: Model,
                    api: Callable[..., Awaitable[None]] | None = None) -> FastAPI:
    """The ASGI app: ``/metrics`` (``metrics``, gzip-compressed when the client accepts it;
    left out when ``metrics`` is ``None``), ``/healthz`` (200 while the process serves) and
    ``/readyz`` (200 when connected to the broker, else 503); both answer JSON
    ``{"status": ...}``.
    ``api`` (the action API, :func:`actions.api.create_api`) is mounted at ``/api/v1``;
    ``/metrics``, ``/healthz`` and ``/readyz`` need no token. With ``--api-listen`` the
    process serves two of these apps: metrics without the API, and the API without metrics.
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
        connected = model.snapshot().broker_connected
        return JSONResponse({"status": "ready" if connected else "broker disconnected"},
                            status_code=200 if connected else 503)

    if api is not None:
        mount = Mount(API_PREFIX, app=api)
        # `.` must match any character, so that a path with an encoded newline (%0A) still
        # reaches the API (its auth and its problem documents) instead of falling through.
        mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
        http.router.routes.append(mount)
        _api_problems_outside_the_mount(http)
    return http


def _api_problems_outside_the_mount(http: FastAPI) -> None:
    """404/405 for ``/api…`` paths the mount does not take are problem documents too."""
    from actions.problems import problem_response

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith("/api"):
            return problem_response(exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    http.add_exception_handler(StarletteHTTPException, on_http_error)


@dataclass
class Service:
    """Everything `celery-jobmon serve` runs: model, ``/metrics``, threads and the ASGI app."""

    settings: Settings
    model: Model
    metrics: MetricsEndpoint
    consumer: EventConsumer
    poller: Poller
    http: FastAPI

    history: OpenHistory | None = None
    #: The Celery app the action API sends and revokes with (closed on stop).
    action_app: Celery | None = None
    #: The action API's own app when it listens apart (``--api-listen``), else ``None``.
    api_http: FastAPI | None = None

    def start(self) -> None:
        """Start the history writer, then the event consumer and poller threads."""
        if self.history is not None:
            self.history.writer.start()
        self.consumer.start()
        self.poller.start()

    def stop(self) -> None:
        """Stop the poller and the consumer, then write what the history still holds."""
        self.poller.stop()
        self.consumer.stop()
        if self.history is not None:
            self.history.close()
        if self.action_app is not None:
            self.action_app.close()


def build_service(settings: Settings) -> Service:
    """Wire a :class:`Service` from validated settings; nothing is started or connected to
    the broker (the history database is opened and migrated, see :func:`open_history`).

    Raises:
        HistoryUnavailable: the history cannot be opened and ``--history-required`` is set.

    """
    history = open_history(settings)
    model = Model(
        runtime_buckets=settings.runtime_buckets,
        queue_wait_buckets=settings.queue_wait_buckets,
        max_tasks=settings.max_tasks_in_memory,
        max_task_names=settings.max_task_names,
        worker_timeout=settings.worker_timeout,
        worker_retention=settings.worker_retention,
        task_lost_grace=settings.task_lost_grace,
        hostname_label=settings.task_hostname_label,
        history=history.writer.submit if history is not None else None,
    )
    if history is not None:
        model.warm(history.unfinished)
    exposition = ModelExposition(
        settings.metric_prefix, {"version": __version__, "celery_version": celery.__version__},
        hostname_label=settings.task_hostname_label)
    registry = CollectorRegistry(auto_describe=False)
    app = make_celery_app(settings)
    consumer = EventConsumer(app, model, accept=settings.accept_content,
                             reconnect_max_interval=settings.reconnect_max_interval,
                             redis_fast_path=settings.redis_fast_path)
    poller = Poller(app, model, interval=settings.inspect_interval,
                    timeout=settings.inspect_timeout, enable_events=settings.enable_events,
                    queues=settings.queues, queue_forget_after=settings.queue_forget_after,
                    sent_time=model.sent_time)
    registry.register(PollCollector(poller.latest, settings.metric_prefix))
    registry.register(HistoryCollector(
        history.writer.stats if history is not None else None, settings.metric_prefix))
    metrics = MetricsEndpoint(model, exposition, registry)
    action_app = make_action_app(settings)
    context = action_context(settings, history=history.engine if history is not None else None,
                             app=action_app, model=model, poll_latest=poller.latest)
    api = create_api(context, token=settings.api_token,
                     max_body_bytes=settings.api_max_body_bytes, secrets=settings.secrets())
    if settings.api_listen is not None and api is not None:
        return Service(settings, model, metrics, consumer, poller,
                       create_http_app(metrics, model), history, action_app,
                       api_http=create_http_app(None, model, api))
    return Service(settings, model, metrics, consumer, poller,
                   create_http_app(metrics, model, api), history, action_app)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: uvicorn re-raises a captured SIGTERM
    once it has shut down, which (default handler) kills the process before the history is
    flushed. :func:`_serve_all` handles SIGINT/SIGTERM for every server instead.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: FastAPI, listen: tuple[str, int], settings: Settings) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``listen``, with TLS when ``--tls-cert``/``--tls-key``."""
    host, port = listen
    return _Server(uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
        ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
    ))


async def _serve_all(servers: list[uvicorn.Server]) -> None:
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


def serve(settings: Settings) -> None:
    """Run the exporter until SIGINT/SIGTERM: threads in the background, uvicorn here (one
    server, or two with ``--api-listen``).
    """
    service = build_service(settings)
    host, port = settings.listen
    scheme = "https" if settings.tls_cert else "http"
    api_where = "on /api/v1" if settings.api_token else "off (no --api-token)"
    if settings.api_token and settings.api_listen is not None:
        api_where = f"{scheme}://{settings.api_listen[0]}:{settings.api_listen[1]}/api/v1"
    log.info("starting version=%s broker=%s listen=%s://%s:%d action_api=%s",
             __version__, mask_url(settings.broker_url), scheme, host, port, api_where)
    service.start()
    servers = [_server(service.http, settings.listen, settings)]
    if service.api_http is not None and settings.api_listen is not None:
        servers.append(_server(service.api_http, settings.api_listen, settings))
    try:
        asyncio.run(_serve_all(servers))
    finally:
        # SIGTERM lands here too: stop consuming, then write what the history still holds.
        service.stop()
        log.info("stopped")
