"""The label-value tuples that key the task series, typed.

They cross module boundaries — the model counts under them, the exposition renders them, the
action API's readers group by them — and with ``--task-hostname-label`` their length changes.
Readers therefore take fields by name (``labels.queue_name``), never by position or by
unpacking, so the same code reads both shapes. Each is a ``NamedTuple``: equal to, and hashing
like, the plain tuple of its values, in the order of the metric family's label names
(:mod:`exporter.metrics.catalogue`), which is the order the exposition zips them with.
"""

from __future__ import annotations

from typing import NamedTuple


class TaskLabels(NamedTuple):
    """``(name, queue_name)``: task name (``task-sent``/``task-received`` ``name``, folded into
    ``other`` beyond ``--max-task-names``) and queue (``task-sent`` ``queue`` or
    ``routing_key``; ``unknown`` when no event said).
    """

    name: str
    queue_name: str

    def with_state(self, state: str) -> RuntimeLabels:
        """The run-time histogram's labels for an execution that ended in ``state``."""
        return RuntimeLabels(self.name, self.queue_name, state)


class WorkerTaskLabels(NamedTuple):
    """``(name, queue_name, hostname)`` with ``--task-hostname-label``: ``hostname`` is the
    worker that received or started the task (``hostname`` of its events), ``unknown`` if none.
    """

    name: str
    queue_name: str
    hostname: str

    def with_state(self, state: str) -> WorkerRuntimeLabels:
        """The run-time histogram's labels for an execution that ended in ``state``."""
        return WorkerRuntimeLabels(self.name, self.queue_name, self.hostname, state)


class RuntimeLabels(NamedTuple):
    """``(name, queue_name, state)`` of ``task_runtime_seconds``; ``state`` SUCCESS or FAILURE."""

    name: str
    queue_name: str
    state: str


class WorkerRuntimeLabels(NamedTuple):
    """``(name, queue_name, hostname, state)`` of ``task_runtime_seconds`` with
    ``--task-hostname-label``.
    """

    name: str
    queue_name: str
    hostname: str
    state: str


class ExceptionLabels(NamedTuple):
    """``(name, exception)`` of ``task_exceptions_total``: the exception class name from
    ``task-failed`` (:func:`exporter.events.parse.exception_class`).
    """

    name: str
    exception: str


#: The labels of one task's series, in either shape.
AnyTaskLabels = TaskLabels | WorkerTaskLabels
#: The labels of one run-time histogram, in either shape.
AnyRuntimeLabels = RuntimeLabels | WorkerRuntimeLabels
