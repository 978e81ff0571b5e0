"""celery-jobmon exporter: Celery events, inspect replies and queues as Prometheus metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("celery-jobmon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
