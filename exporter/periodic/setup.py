"""The periodic tracker of ``serve``, wired from the settings: one source per option given
(``--app``, ``--redbeat-url``, ``--django-beat-url``, ``--expect``), the history's engine.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import Engine, create_engine

from exporter.config import Settings
from exporter.history import safe_url
from exporter.periodic.schedules import expected_entry
from exporter.periodic.sources import (
    AppSource,
    DjangoBeatSource,
    ExpectSource,
    RedBeatSource,
    Source,
)
from exporter.periodic.tracker import PeriodicTracker

log = logging.getLogger(__name__)


def make_sources(settings: Settings) -> list[Source]:
    """The schedule sources ``settings`` name, in priority order: app, RedBeat,
    django-celery-beat, ``--expect`` (nothing is connected or imported yet).
    """
    # Schedules of the sources without an app of their own follow --beat-timezone.
    app = Celery("celery-jobmon-periodic", set_as_current=False)
    app.conf.timezone = settings.beat_timezone
    sources: list[Source] = []
    if settings.beat_app is not None:
        sources.append(AppSource(settings.beat_app))
    if settings.redbeat_url is not None:
        sources.append(RedBeatSource(settings.redbeat_url, settings.redbeat_key_prefix, app))
    if settings.django_beat_url is not None:
        # A plain engine: the Django project's database keeps its own settings (no WAL).
        engine = create_engine(settings.django_beat_url, pool_pre_ping=True)
        log.info("periodic source django-celery-beat url=%s", safe_url(engine))
        sources.append(DjangoBeatSource(engine, app))
    if settings.expect:
        sources.append(ExpectSource([expected_entry(task, seconds, app)
                                     for task, seconds in settings.expect]))
    return sources


def make_tracker(settings: Settings, history: Engine | None) -> PeriodicTracker | None:
    """A periodic tracker (not started) as ``settings`` say, or ``None`` when no schedule
    source is given — or when the history is off or could not be opened: the runs are read
    from it (logged as a warning; the periodic families are then absent).
    """
    sources = make_sources(settings) if _any_source(settings) else []
    if not sources:
        return None
    if history is None:
        log.warning("periodic tasks not watched: their runs are read from the history, which "
                    "is off or could not be opened (sources=%s)",
                    ",".join(source.name for source in sources))
        return None
    log.info("periodic tasks watched sources=%s interval=%.3gs grace=%.3gs",
             ",".join(source.name for source in sources), settings.periodic_interval,
             settings.periodic_grace)
    return PeriodicTracker(sources, history, interval=settings.periodic_interval,
                           grace=settings.periodic_grace)


def _any_source(settings: Settings) -> bool:
    return any((settings.beat_app, settings.redbeat_url, settings.django_beat_url,
                settings.expect))
