"""Alembic migrations of the history schema (run by :func:`exporter.history.db.upgrade`)."""
