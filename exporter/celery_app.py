"""The Celery apps the exporter makes for itself, from its settings — one recipe, so that every
one of them connects where ``--broker-url`` says, with the same transport options and content
types, whatever ``$CELERY_BROKER_URL``/``$CELERY_RESULT_BACKEND`` say.

Each part of ``serve`` that talks to the broker has an app of its own (the event consumer and
the poller, the action API, the repairer): a result backend client is per app and thread, and
one part's broadcasts and publishes stay apart from another's.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from exporter.config import Settings

#: Seconds a result backend (Redis) may take to connect or answer before a read fails.
BACKEND_TIMEOUT = 5.0


def exporter_app(settings: Settings, name: str, *, result_backend: bool = False,
                 **conf: Any) -> Celery:
    """A Celery app named ``name`` on the settings' broker (not set as current).

    Args:
        settings: broker URL, transport options, accepted content types, result backend.
        name: the app's main name (``celery-jobmon``, ``celery-jobmon-actions``, …).
        result_backend: give it ``--result-backend`` (when set), with short timeouts.
        conf: more Celery settings for this app.

    """
    backend = settings.result_backend if result_backend else None
    app = Celery(name, broker=settings.broker_url, backend=backend, set_as_current=False)
    if backend:
        # Celery's conf prefers $CELERY_RESULT_BACKEND over the app's own: the flag must win
        # (and no backend must mean none).
        app.backend_cls = backend
    app.conf.update(
        # Celery's conf prefers $CELERY_BROKER_URL over the broker given to the app; the read
        # and write URLs win over both, so --broker-url (or JOBMON_BROKER_URL) is what is used.
        broker_read_url=settings.broker_url,
        broker_write_url=settings.broker_url,
        broker_transport_options=dict(settings.transport_options),
        broker_connection_retry_on_startup=True,
        accept_content=list(settings.accept_content),
        **conf,
    )
    if backend:
        app.conf.update(result_accept_content=list(settings.accept_content),
                        redis_socket_connect_timeout=BACKEND_TIMEOUT,
                        redis_socket_timeout=BACKEND_TIMEOUT)
    return app
