"""The ``celery-jobmon`` command line: commands, their options, and ``check``."""
