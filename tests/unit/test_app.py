from __future__ import annotations

from actions.broker import make_action_app
from exporter.app import make_celery_app
from exporter.config import Settings


def test_broker_url_setting_wins_over_celery_broker_url_env(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://elsewhere:6379/9")
    settings = Settings(broker_url="redis://127.0.0.1:6379/3")
    for app in (make_celery_app(settings), make_action_app(settings)):
        for conn in (app.connection_for_read(), app.connection_for_write()):
            assert (conn.hostname, conn.port, conn.virtual_host) == ("127.0.0.1", 6379, "3")
