"""``python -m exporter`` runs the ``celery-jobmon`` command line."""

from exporter.cli.commands import main

main()
