"""Where a retry gets the original arguments from, in order of trust.

1. **The result backend** (``--result-backend``), when the workers store the request with the
   result (``result_extended=True``): ``AsyncResult(task_id).args/kwargs`` are the real values
   (as the result serializer round-trips them: JSON turns tuples into lists).
2. **The history's argument reprs** (from ``task-sent``/``task-received``), when they are plain
   Python literals (:func:`ast.literal_eval`), were not cut by ``--history-max-field-bytes``
   (``*_truncated``) and were not shortened by the producer: Celery builds them with
   ``saferepr(args, 1024)`` and ``task_repr_maxlevels``, which writes ``...`` for what it
   leaves out — a value that still parses but is not the original (``'abc...'``, ``{...}``).
   A string of asterisks only (``'***'``) is a value the producer masked in its
   ``argsrepr``/``kwargsrepr``, not the value: such reprs are never re-sent.
3. Otherwise no retry: :class:`~actions.errors.NotEligible` (``arguments-unavailable``)
   saying exactly why, and — when storing them would help — how to turn on
   ``result_extended``. When the backend holds the arguments but they cannot be sent, the reprs
   do not stand in for them.

The values must also survive the JSON task serializer (kombu's JSON, as Celery sends): ``str``,
``int``, finite ``float``, ``bool``, ``None``, lists/tuples, dicts with string keys, and the
types kombu carries with a ``__type__`` marker (:data:`KOMBU_JSON_TYPES`: a ``datetime``
argument stored by the backend is re-sent as a ``datetime``). :func:`parse_repr_arguments` and
:func:`check_json` are pure.
"""

from __future__ import annotations

import ast
import datetime
import decimal
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actions.errors import BrokerUnavailable, NotEligible, broker_errors
from exporter.history import Execution
from exporter.logs import describe

#: Celery's ``amqp.argsrepr_maxsize``/``kwargsrepr_maxsize``: a repr this long (or longer) that
#: contains ``...`` may have been shortened by the producer.
PRODUCER_REPR_MAXSIZE = 1024
#: Margin under :data:`PRODUCER_REPR_MAXSIZE`: saferepr stops *after* passing the size.
_PRODUCER_MARGIN = 32
#: Deepest nesting of argument values accepted.
MAX_DEPTH = 64
#: Values kombu's JSON serializer carries with a ``__type__`` marker and decodes to an equal
#: value (a unit test round-trips each through kombu).
KOMBU_JSON_TYPES = (datetime.datetime, datetime.date, datetime.time, decimal.Decimal,
                    uuid.UUID)
#: A repr'd string that is only asterisks: the producer masked the value (``argsrepr``).
_MASKED = re.compile(r"\*{3,}")
HOW_TO_ENABLE = ("store the arguments with the result: set result_backend and "
                 "result_extended=True in the workers' Celery config, and give the exporter "
                 "the same backend with --result-backend / JOBMON_RESULT_BACKEND")


@dataclass(frozen=True)
class Arguments:
    """Arguments to re-send: ``args`` (list), ``kwargs`` (dict), where they came from
    (``result_backend`` or ``history_repr``) and the queue the backend stored (else ``None``).
    """

    args: list[Any]
    kwargs: dict[str, Any]
    source: str
    queue: str | None = None


class Unusable(ValueError):
    """One argument source cannot give the arguments; the message says why."""


class StoredButUnsendable(Unusable):
    """The result backend holds the arguments, but they cannot be re-sent as JSON."""


class NotStored(Unusable):
    """The result backend stores no arguments (``result_extended`` off, or no backend): turning
    it on would help.
    """


def check_json(value: Any, path: str = "args", depth: int = 0) -> Any:
    """``value`` with tuples as lists, when it survives the JSON task serializer (nested at
    most :data:`MAX_DEPTH` levels; :data:`KOMBU_JSON_TYPES` kept as they are).

    Raises:
        Unusable: naming the first value that does not (its path and type).

    """
    if depth > MAX_DEPTH:
        raise Unusable(f"{path} is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (str, bool, int, *KOMBU_JSON_TYPES)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unusable(f"{path} is {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, (list, tuple)):
        return [check_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Unusable(f"{path} has a key of type {type(key).__name__}, which JSON "
                               "cannot carry")
            result[key] = check_json(item, f"{path}[{key[:40]!r}]", depth + 1)
        return result
    if value is Ellipsis or (isinstance(value, (set, frozenset)) and Ellipsis in value):
        raise Unusable(f"{path} contains `...`: the producer shortened the repr "
                       "(task_repr_maxlevels)")
    raise Unusable(f"{path} is of type {type(value).__name__}, which JSON cannot carry")


def find_masked(value: Any, path: str) -> str | None:
    """The path of the first string of asterisks only (``'***'``) in a parsed repr, else
    ``None``.
    """
    if isinstance(value, str):
        return path if _MASKED.fullmatch(value) else None
    if isinstance(value, (list, tuple)):
        items: Any = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{path}[{key!r:.40}]", item) for key, item in value.items())
    else:
        return None
    return next((found for sub, item in items if (found := find_masked(item, sub))), None)


def _literal(text: str | None, truncated: bool, field: str) -> Any:
    if text is None:
        raise Unusable(f"the history has no {field} repr (no task-sent/task-received seen)")
    if truncated:
        raise Unusable(f"the history cut the {field} repr at --history-max-field-bytes")
    if _MASKED.fullmatch(text.strip(" '\"")):
        raise Unusable(f"the producer masked the {field} repr ({text[:20]}): the values are "
                       "not in the history")
    if "..." in text and len(text) >= PRODUCER_REPR_MAXSIZE - _PRODUCER_MARGIN:
        raise Unusable(f"the {field} repr is {len(text)} characters with `...`: the producer "
                       f"may have shortened it (Celery caps reprs at {PRODUCER_REPR_MAXSIZE})")
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise Unusable(f"the {field} repr is not a Python literal") from None


def parse_repr_arguments(args: str | None, args_truncated: bool, kwargs: str | None,
                         kwargs_truncated: bool) -> tuple[list[Any], dict[str, Any]]:
    """Parse the history's argument reprs (``"(1, 'a')"``, ``"{'x': 1}"``).

    Raises:
        Unusable: missing, cut, possibly shortened by the producer, not a literal, of the wrong
            shape, or holding a value JSON cannot carry.

    """
    parsed_args = _literal(args, args_truncated, "args")
    parsed_kwargs = _literal(kwargs, kwargs_truncated, "kwargs")
    if not isinstance(parsed_args, (list, tuple)):
        raise Unusable("the args repr is not a tuple or list")
    if not isinstance(parsed_kwargs, dict):
        raise Unusable("the kwargs repr is not a dict")
    masked = find_masked(parsed_args, "args") or find_masked(parsed_kwargs, "kwargs")
    if masked:
        raise Unusable(f"{masked} is a string of asterisks in the repr: the producer masked "
                       "the value (argsrepr/kwargsrepr), and it is not in the history")
    return check_json(parsed_args, "args"), check_json(parsed_kwargs, "kwargs")


#: Reads the stored request of a task from the result backend: ``task_id`` → the backend's
#: meta dict (``{"status", "args", "kwargs", ...}``) or ``None`` when there is no backend.
StoredMeta = Callable[[str], Mapping[str, Any] | None]


def from_result_backend(meta: Mapping[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """The arguments in a result backend's meta dict.

    Raises:
        NotStored: no meta (no backend), or stored without ``result_extended`` (no ``args``).
        StoredButUnsendable: the arguments are there but the JSON task serializer cannot
            carry them.
        Unusable: the backend has no result for the task (expired, another backend).

    """
    if meta is None:
        raise NotStored("no --result-backend is configured")
    if meta.get("args") is None and meta.get("kwargs") is None:
        status = meta.get("status")
        if status in (None, "PENDING"):
            raise Unusable("the result backend has no result for this task (expired, or "
                           "workers use another backend)")
        raise NotStored("the result backend stores no arguments (workers without "
                        "result_extended=True)")
    args, kwargs = meta.get("args") or [], meta.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise StoredButUnsendable("the result backend's args/kwargs are not a list and a dict")
    try:
        return check_json(args, "args"), check_json(kwargs, "kwargs")
    except Unusable as exc:
        raise StoredButUnsendable(f"it holds the arguments, but {exc}") from None


def resolve_arguments(row: Execution, stored_meta: StoredMeta | None) -> Arguments:
    """The arguments to retry ``row`` with: the result backend first, then the reprs.

    Raises:
        NotEligible: ``reason="arguments-unavailable"``, every source's reason in the detail.
        BrokerUnavailable: the result backend did not answer (the reprs are not used then).

    """
    reasons: list[str] = []
    storing_helps = stored_meta is None
    if stored_meta is not None:
        try:
            with broker_errors("result backend"):
                meta = stored_meta(row.task_id)
            args, kwargs = from_result_backend(meta)
            queue = meta.get("queue") if meta is not None else None
            return Arguments(args, kwargs, "result_backend",
                             queue if isinstance(queue, str) and queue else None)
        except StoredButUnsendable as exc:
            raise NotEligible(f"the original arguments cannot be re-sent: result backend: "
                              f"{exc}", reason="arguments-unavailable") from None
        except Unusable as exc:
            storing_helps = isinstance(exc, NotStored)
            reasons.append(f"result backend: {exc}")
        except BrokerUnavailable as exc:
            # Whether it holds the real arguments is unknown until it answers: the reprs may
            # be what a producer chose to show (argsrepr), so they do not stand in for it.
            raise BrokerUnavailable(
                f"{exc.detail}: it holds the task's original arguments (--result-backend); "
                "nothing was sent, try again once it answers", **exc.extra) from exc
        except Exception as exc:  # content disallowed, corrupt meta: say so, try the reprs
            reasons.append(f"result backend: {describe(exc)}")
    else:
        reasons.append("result backend: none configured (--result-backend)")
    try:
        args, kwargs = parse_repr_arguments(row.args, row.args_truncated, row.kwargs,
                                            row.kwargs_truncated)
        return Arguments(args, kwargs, "history_repr")
    except Unusable as exc:
        reasons.append(f"history: {exc}")
    advice = " To retry such tasks, " + HOW_TO_ENABLE + "." if storing_helps else ""
    raise NotEligible(
        "the original arguments are not known exactly: " + "; ".join(reasons) + "." + advice,
        reason="arguments-unavailable")
