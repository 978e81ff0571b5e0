"""``celery-jobmon history prune`` and ``tasks`` against a real SQLite history file: what a
limit of 0 means, which environment variables they read, what a missing database file gives.
"""

from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from exporter.cli.commands import main
from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave no JOBMON_* from the developer's shell in play."""
    for name in list(os.environ):
        if name.startswith("JOBMON_"):
            monkeypatch.delenv(name)


@pytest.fixture
def history(tmp_path) -> str:
    """An SQLite history URL holding 5 failed executions (``t0``..``t4``, in 2023)."""
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    engine = create_history_engine(url)
    upgrade(engine)
    with engine.begin() as connection:
        for i in range(5):
            connection.execute(insert(TASK_EXECUTION).values(
                task_id=f"t{i}", name="app.charge", state="FAILURE", state_ts=T0 + i,
                updated_at=T0 + i, finished_at=T0 + i))
    engine.dispose()
    return url


def rows(url: str) -> int:
    engine = create_history_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(
                select(func.count()).select_from(TASK_EXECUTION)).scalar_one())
    finally:
        engine.dispose()


def invoke(args: list[str], env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, args, env=env)


@pytest.mark.parametrize("limits", [["--max-rows", "0"], ["--older-than", "0"],
                                    ["--max-rows", "0", "--older-than", "0"]])
def test_prune_takes_a_limit_of_0_as_no_limit_like_serve_and_deletes_nothing(history, limits):
    result = invoke(["history", "prune", "--history-url", history, *limits])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        "Error: nothing to prune: give --older-than or --max-rows above 0 (0 is no limit, as "
        "for serve's --history-retention and --history-max-rows)")
    assert rows(history) == 5


def test_prune_reads_serves_retention_variables_and_no_generic_ones(history):
    # serve's own settings with their "no limit" 0s: nothing to prune, nothing deleted.
    serve_env = {"JOBMON_HISTORY_RETENTION": "0", "JOBMON_HISTORY_MAX_ROWS": "0"}
    assert invoke(["history", "prune", "--history-url", history], serve_env).exit_code == 2
    # Names another command could mean something else by are not read.
    generic = {"JOBMON_MAX_ROWS": "0", "JOBMON_OLDER_THAN": "0s", "JOBMON_DRY_RUN": "1"}
    assert invoke(["history", "prune", "--history-url", history], generic).exit_code == 2
    assert rows(history) == 5
    dry = invoke(["history", "prune", "--history-url", history],
                 {"JOBMON_HISTORY_MAX_ROWS": "3"} | generic)
    assert (dry.exit_code, dry.output) == (0, "deleted 2 executions\n")
    assert rows(history) == 3
    aged = invoke(["history", "prune", "--history-url", history, "--dry-run"],
                  {"JOBMON_HISTORY_RETENTION": "1d"})
    assert (aged.exit_code, aged.output) == (0, "would delete 3 executions\n")
    help_text = invoke(["history", "prune", "--help"]).output
    assert "JOBMON_HISTORY_RETENTION" in help_text and "JOBMON_HISTORY_MAX_ROWS" in help_text
    assert "JOBMON_DRY_RUN" not in help_text


def test_tasks_and_prune_name_a_missing_sqlite_file_and_create_nothing(tmp_path):
    path = tmp_path / "x" / "nonexist.sqlite3"
    for args in (["tasks"], ["history", "prune", "--max-rows", "1"]):
        result = invoke([*args, "--history-url", f"sqlite:///{path}"])
        assert (result.exit_code, result.output) == (1, (
            f"Error: no history database at {path}: check --history-url (JOBMON_HISTORY_URL); "
            "`serve` creates it when it starts with that URL\n")), result.output
    assert not path.exists() and not path.parent.exists()


def test_tasks_on_a_database_without_the_history_says_how_to_create_it(tmp_path):
    path = tmp_path / "empty.sqlite3"
    path.write_bytes(b"")
    result = invoke(["tasks", "--history-url", f"sqlite:///{path}"])
    assert (result.exit_code, result.output) == (1, (
        f"Error: no history in {path} (no schema): check --history-url (JOBMON_HISTORY_URL); "
        "`serve` creates it when it starts with that URL, or `celery-jobmon db upgrade`\n"))


def test_tasks_lists_an_existing_history_without_http_status_in_errors(history):
    listed = invoke(["tasks", "--history-url", history, "--limit", "2"])
    assert listed.exit_code == 0 and [line.split()[0] for line in
                                      listed.output.splitlines()][:3] == ["STATE", "FAILURE",
                                                                          "FAILURE"]
    bad = invoke(["tasks", "--history-url", history, "--cursor", "nonsense"])
    assert (bad.exit_code, bad.output) == (1, "Error: Invalid parameter: cursor: not a cursor "
                                               "this API returned (pass next_cursor unchanged)\n")
