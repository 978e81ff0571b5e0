"""App assembly: wire settings, Celery app, model, threads and the HTTP server together."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from celery import Celery
from fastapi import FastAPI

from actions.broker import make_action_app
from actions.follow_up import CancelFollowUp
from actions.http.routes import PREFIX as API_PREFIX
from actions.http.routes import create_api
from actions.wiring import action_context
from exporter import __version__
from exporter.celery_app import exporter_app
from exporter.config import Settings
from exporter.events.consumer import EventConsumer
from exporter.history.setup import OpenHistory, open_history
from exporter.history.workflow import warm_tracker
from exporter.http import MetricsEndpoint, create_http_app, make_server, serve_all
from exporter.metrics.scrape import Scrape, exporter_sources
from exporter.periodic.setup import make_tracker
from exporter.periodic.tracker import PeriodicTracker
from exporter.poll.poller import Poller
from exporter.repair.repairer import Repairer
from exporter.repair.setup import make_repairer
from exporter.secrets import mask_url
from exporter.state.health import Health
from exporter.state.model import Model
from exporter.state.workflows import WorkflowTracker
from ui.app import ui_from_settings

log = logging.getLogger(__name__)


def make_celery_app(settings: Settings) -> Celery:
    """The app of the event consumer and the poller (events, control; no result backend).

    The exporter's event queue gets ``event_queue_ttl``/``event_queue_expires`` from the
    settings (RabbitMQ honours them; Redis ignores them).
    """
    return exporter_app(settings, "celery-jobmon", event_queue_ttl=settings.event_queue_ttl,
                        event_queue_expires=settings.event_queue_expires)


@dataclass
class Service:
    """Everything `celery-jobmon serve` runs: model, ``/metrics``, threads and the ASGI app."""

    settings: Settings
    model: Model
    health: Health
    metrics: MetricsEndpoint
    consumer: EventConsumer
    poller: Poller
    http: FastAPI

    history: OpenHistory | None = None
    #: The Celery app the action API sends and revokes with (closed on stop).
    action_app: Celery | None = None
    #: The action API's own app when it listens apart (``--api-listen``), else ``None``.
    api_http: FastAPI | None = None
    #: The repairer of lost events (``--no-repair``: ``None``).
    repairer: Repairer | None = None
    #: Records the outcome of cancel requests (``None``: no history); started at start-up too,
    #: for the requests a restart or the ``cancel`` command left open.
    follow_up: CancelFollowUp | None = None
    #: Watches the periodic entries (``None``: no schedule source given, or no history).
    periodic: PeriodicTracker | None = None

    def start(self) -> None:
        """Start the history writer, then the event consumer, poller, repairer and periodic
        tracker threads.
        """
        if self.history is not None:
            self.history.writer.start()
        self.consumer.start()
        self.poller.start()
        if self.repairer is not None:
            self.repairer.start()
        if self.follow_up is not None:
            self.follow_up.watch()
        if self.periodic is not None:
            self.periodic.start()

    def stop(self) -> None:
        """Stop the repairer, the periodic tracker, the poller and the consumer, then write
        what the history still holds (a repair applied before the stop is written too).
        """
        if self.repairer is not None:
            self.repairer.stop()
        if self.periodic is not None:
            self.periodic.stop()
        self.poller.stop()
        self.consumer.stop()
        # Events still held for their task-sent are applied, so the history writes them too.
        self.model.release_held()
        if self.history is not None:
            self.history.close()
        if self.action_app is not None:
            self.action_app.close()


def build_service(settings: Settings) -> Service:
    """Wire a :class:`Service` from validated settings; nothing is started or connected to
    the broker (the history database is opened and migrated, see :func:`open_history`).

    Raises:
        HistoryUnavailable: the history cannot be opened and ``--history-required`` is set.
        UsersFileError: ``--ui-users-file`` cannot be read or has invalid lines.

    """
    history = open_history(settings)
    workflows = WorkflowTracker(settings.chord_stuck_after, settings.max_tasks_in_memory)
    model = Model(
        runtime_buckets=settings.runtime_buckets,
        queue_wait_buckets=settings.queue_wait_buckets,
        max_tasks=settings.max_tasks_in_memory,
        max_task_names=settings.max_task_names,
        worker_timeout=settings.worker_timeout,
        worker_retention=settings.worker_retention,
        task_lost_grace=settings.task_lost_grace,
        clock_offset_warning=settings.clock_offset_warning,
        solo_busy_timeout=settings.solo_busy_timeout,
        history_exclude=settings.history_exclude_tasks,
        hostname_label=settings.task_hostname_label,
        history=history.writer.submit if history is not None else None,
        workflows=workflows,
    )
    if history is not None:
        model.warm(history.unfinished)
        warm_tracker(workflows, history.engine, settings.history_retention or 7 * 86400.0,
                     settings.max_tasks_in_memory, model.names.label)
    health = Health(external_url=settings.external_url)
    repairer = make_repairer(settings, model, health) if settings.repair else None
    if repairer is not None and history is not None:
        repairer.suspect((task.task_id for task in history.unfinished), "restart")
    app = make_celery_app(settings)
    consumer = EventConsumer(app, model, health, accept=settings.accept_content,
                             reconnect_max_interval=settings.reconnect_max_interval,
                             redis_fast_path=settings.redis_fast_path,
                             amqp_fast_path=settings.amqp_fast_path,
                             amqp_reader=settings.amqp_reader)
    poller = Poller(app, model, health, interval=settings.inspect_interval,
                    timeout=settings.inspect_timeout, enable_events=settings.enable_events,
                    queues=settings.queues, queue_forget_after=settings.queue_forget_after,
                    management_url=settings.rabbitmq_management_url,
                    sent_time=model.sent_time)
    periodic = make_tracker(settings, history.engine if history is not None else None)
    metrics = MetricsEndpoint(Scrape(exporter_sources(
        settings.metric_prefix, model, health, poller.latest,
        history.writer.stats if history is not None else None,
        hostname_label=settings.task_hostname_label, const_labels=settings.const_labels,
        periodic_latest=periodic.latest if periodic is not None else None,
        workflows=workflows),
        settings.metric_prefix, const_labels=settings.const_labels).render)
    action_app = make_action_app(settings)
    context = action_context(settings, history=history.engine if history is not None else None,
                             app=action_app, model=model, poll_latest=poller.latest)
    api = create_api(context, token=settings.api_token,
                     max_body_bytes=settings.api_max_body_bytes, secrets=settings.secrets())
    ui = ui_from_settings(settings, context,
                          periodic_latest=periodic.latest if periodic is not None else None)
    writes = history.writer.stats if history is not None else None
    if settings.api_listen is not None and api is not None:
        return Service(settings, model, health, metrics, consumer, poller,
                       create_http_app(metrics, health, history=writes), history, action_app,
                       api_http=create_http_app(None, health, api, ui, writes),
                       repairer=repairer, follow_up=context.follow_up, periodic=periodic)
    return Service(settings, model, health, metrics, consumer, poller,
                   create_http_app(metrics, health, api, ui, writes), history, action_app,
                   repairer=repairer, follow_up=context.follow_up, periodic=periodic)


def serve(settings: Settings) -> None:
    """Run the exporter until SIGINT/SIGTERM: threads in the background, uvicorn here (one
    server, or two with ``--api-listen``).
    """
    service = build_service(settings)
    host, port = settings.listen
    scheme = "https" if settings.tls_cert else "http"
    api_where = f"on {API_PREFIX}" if settings.api_token else "off (no --api-token)"
    if settings.api_token and settings.api_listen is not None:
        api_where = f"{scheme}://{settings.api_listen[0]}:{settings.api_listen[1]}{API_PREFIX}"
    log.info("starting version=%s broker=%s listen=%s://%s:%d action_api=%s",
             __version__, mask_url(settings.broker_url), scheme, host, port, api_where)
    service.start()
    servers = [make_server(service.http, settings.listen, settings)]
    if service.api_http is not None and settings.api_listen is not None:
        servers.append(make_server(service.api_http, settings.api_listen, settings))
    try:
        asyncio.run(serve_all(servers))
    finally:
        # SIGTERM lands here too: stop consuming, then write what the history still holds.
        service.stop()
        log.info("stopped")
