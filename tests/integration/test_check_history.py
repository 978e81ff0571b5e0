"""`celery-jobmon check` probes the history database `serve` would write (--history-url,
JOBMON_HISTORY_URL, --no-history), and prints nothing of alembic's on stderr."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from exporter.history import head_revision, upgrade
from tests.support.exporter import run_cli
from tests.support.network import free_port


def check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """The history row and stderr of a check against a closed broker port."""
    result = run_cli("check", "--broker-url", f"redis://127.0.0.1:{free_port()}/0",
                     "--listen-seconds", "0.5", *args,
                     env={"XDG_DATA_HOME": str(tmp_path / "data"), **(env or {})})
    assert result.returncode == 1, result.stderr  # the broker is down
    rows = [line for line in result.stdout.splitlines() if "history database" in line]
    assert len(rows) == 1, result.stdout
    after = result.stdout.splitlines()[result.stdout.splitlines().index(rows[0]) + 1:]
    return "\n".join([rows[0], *after]), result.stderr


def test_check_reports_a_writable_history_and_its_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    upgrade(url)
    row, stderr = check(tmp_path, "--history-url", url)
    assert row == f"[ ok ] history database: writable; schema at revision {head_revision()}"
    assert stderr == ""  # no alembic INFO lines
    row, _ = check(tmp_path, env={"JOBMON_HISTORY_URL": f"sqlite:///{tmp_path / 'new.db'}"})
    assert row == "[ ok ] history database: writable; empty: serve creates the schema"
    assert not (tmp_path / "data").exists()  # the given URL, not the default file


def test_check_uses_serves_default_file(tmp_path):
    row, _ = check(tmp_path)
    assert row == "[ ok ] history database: writable; empty: serve creates the schema"
    assert (tmp_path / "data" / "celery-jobmon" / "history.sqlite3").exists()


def test_check_fails_a_read_only_history(tmp_path):
    path = tmp_path / "h.sqlite3"
    upgrade(f"sqlite:///{path}")
    row, stderr = check(tmp_path, "--history-url", f"sqlite:///file:{path}?mode=ro&uri=true")
    assert row == ("[FAIL] history database: not writable: OperationalError: "
                   "(sqlite3.OperationalError) attempt to write a readonly database\n"
                   "       fix: check --history-url and that the database exists and accepts "
                   "writes (celery-jobmon db upgrade)")
    assert stderr == ""


def test_check_skips_the_history_with_no_history(tmp_path):
    row, _ = check(tmp_path, "--no-history",
                   env={"JOBMON_HISTORY_URL": f"sqlite:///{tmp_path / 'h.db'}"})
    assert row == "[ ?? ] history database: skipped (--no-history)"
    assert not (tmp_path / "h.db").exists()


def test_check_passes_a_postgresql_role_that_may_write_rows_but_not_create_tables(tmp_path):
    """`serve --no-history-upgrade` needs only row rights on a schema an admin created: the
    probe writes a row (rolled back), it does not need CREATE.
    """
    suffix = uuid.uuid4().hex[:8]
    database, role = f"smallfix_check_{suffix}", f"smallfix_dml_{suffix}"
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    admin.execute(f"CREATE DATABASE {database}")
    try:
        upgrade(f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}",
                             autocommit=True) as owner:
            owner.execute(f"CREATE ROLE {role} LOGIN")
            owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            owner.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                          f"TO {role}")
            row, _ = check(tmp_path, "--history-url",
                           f"postgresql+psycopg://{role}@127.0.0.1:5432/{database}")
            assert row == ("[ ok ] history database: writable; schema at revision "
                           f"{head_revision()}")
            count = owner.execute("SELECT count(*) FROM task_execution").fetchone()
            assert count == (0,)  # rolled back
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()
