"""The repairer of ``serve``, wired from the settings: the result backend when
``--result-backend`` is set, the workers always, on a Celery app of its own.
"""

from __future__ import annotations

from exporter.config import Settings
from exporter.repair.repairer import Repairer
from exporter.repair.sources import ResultBackendSource, WorkerSource, make_repair_app
from exporter.state.health import Health
from exporter.state.model import Model


def make_repairer(settings: Settings, model: Model, health: Health) -> Repairer:
    """A repairer (not started) for ``model`` and ``health`` as ``settings`` say
    (``--repair-interval``, ``--repair-batch``, ``--inspect-timeout``, ``--result-backend``);
    its Celery app is closed when it stops. Nothing connects until its first round.
    """
    app = make_repair_app(settings)
    return Repairer(
        model, health,
        backend=ResultBackendSource(app) if settings.result_backend else None,
        workers=WorkerSource(app, settings.inspect_timeout),
        interval=settings.repair_interval, batch=settings.repair_batch,
        capacity=settings.max_tasks_in_memory, close=app.close,
    )
