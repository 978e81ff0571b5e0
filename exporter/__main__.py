"""``python -m exporter`` runs the ``celery-jobmon`` command line."""

from .cli import main

main()
