"""Alembic environment of the history schema.

Run through :func:`exporter.history.db.upgrade`, which passes an open connection in
``config.attributes["connection"]``; the plain ``alembic`` command works too with
``-x url=...`` or ``sqlalchemy.url`` set. Offline mode (``--sql``) renders the SQL script.
Logging is left as the application configured it (no ``fileConfig``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from exporter.history.db import VERSION_TABLE, create_history_engine
from exporter.history.orm import HistoryBase

config = context.config
target_metadata = HistoryBase.metadata


def _url() -> str | None:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url")


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: later migrations use batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Render the migrations as SQL for the URL's dialect."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the given connection, or on a new engine for the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = create_history_engine(_url())
    try:
        with engine.begin() as new_connection:
            _configure(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
