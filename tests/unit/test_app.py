from __future__ import annotations

import pytest

from actions.broker import make_action_app
from exporter.app import make_celery_app
from exporter.config import Settings
from exporter.history.process import WriterProcess
from exporter.history.writer import HistoryWriter


def test_broker_url_setting_wins_over_celery_broker_url_env(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://elsewhere:6379/9")
    settings = Settings(broker_url="redis://127.0.0.1:6379/3")
    for app in (make_celery_app(settings), make_action_app(settings)):
        for conn in (app.connection_for_read(), app.connection_for_write()):
            assert (conn.hostname, conn.port, conn.virtual_host) == ("127.0.0.1", 6379, "3")


@pytest.mark.parametrize(("writer", "kind"), [("process", WriterProcess),
                                              ("thread", HistoryWriter)])
def test_stop_applies_the_events_held_for_their_task_sent(tmp_path, writer, kind):
    # A task-received (and more) whose task-sent has not arrived is held for up to 2 s; a stop
    # meanwhile must still count it and write it to the history (before: lost at shutdown).
    # Either history writer (--history-writer).
    from exporter.app import build_service
    from exporter.config import Settings
    from exporter.history import create_history_engine, get_execution
    from tests.support.events import Events

    history = f"sqlite:///{tmp_path / 'history.sqlite'}"
    service = build_service(Settings(broker_url="memory://localhost//", history_url=history,
                                     history_writer=writer, repair=False).validate())
    assert type(service.history.writer) is kind
    service.history.writer.start()
    ev = Events()
    now = service.model.clock()
    service.model.process_many([ev.received("u1", now, "app.add"), ev.started("u1", now)])
    assert service.model.held_events() == 2
    service.stop()
    assert service.model.held_events() == 0
    row = get_execution(create_history_engine(history), "u1")
    assert (row.state, row.name) == ("STARTED", "app.add")
