"""Where the history lives by default, and how URLs are shown."""

from __future__ import annotations

from pathlib import Path

from exporter.history.db import (
    create_history_engine,
    default_history_url,
    head_revision,
    safe_url,
    upgrade,
)


def test_default_url_is_a_sqlite_file_under_xdg_data_home(tmp_path):
    url = default_history_url({"XDG_DATA_HOME": str(tmp_path / "data")})
    assert url == f"sqlite:///{tmp_path}/data/celery-jobmon/history.sqlite3"
    assert (tmp_path / "data" / "celery-jobmon").is_dir()


def test_default_url_falls_back_to_local_share_for_unset_or_relative_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = f"sqlite:///{tmp_path}/.local/share/celery-jobmon/history.sqlite3"
    assert default_history_url({}) == expected
    assert default_history_url({"XDG_DATA_HOME": "relative/dir"}) == expected
    assert Path(tmp_path, ".local", "share", "celery-jobmon").is_dir()


def test_urls_in_logs_hide_the_password():
    engine = create_history_engine("postgresql+psycopg://jobmon:s3cret@db.example:5432/history")
    assert safe_url(engine) == "postgresql+psycopg://jobmon:***@db.example:5432/history"
    assert "s3cret" not in safe_url("postgresql://u:s3cret@h/d")
    engine.dispose()


def test_the_schema_upgrade_is_logged_only_when_it_changes_something(tmp_path, caplog):
    # Before: "history schema upgraded" at every start, even with nothing to do.
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    with caplog.at_level("INFO", logger="exporter.history.db"):
        upgrade(url)
        upgrade(url)
    assert [r.getMessage().split(" url=")[0] for r in caplog.records] == [
        "history schema upgraded"]
    assert caplog.records[0].getMessage().endswith(f"from=empty revision={head_revision()}")
