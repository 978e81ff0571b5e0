"""Waiting on conditions instead of sleeping: :func:`wait_for` polls until something becomes
true, :func:`assert_stays` checks that something stays true for a while.

A condition is a callable without arguments; its result counts as true or false the way
``if`` sees it, so it can return the value the test goes on with (a row, a scrape)::

    row = wait_for(lambda: (r := get_execution(engine, task_id)) and r.state == "FAILURE"
                   and r, 30, message="failure row")
    assert_stays(lambda: metrics_value() == 2, duration=1.5, message="counted once")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: A failure message: text, or a callable giving it (called only when the check fails, so it
#: can show a log or a state read at that moment).
Message = str | Callable[[], str]


def _text(message: Message) -> str:
    return message() if callable(message) else message


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.2,
             message: Message = "condition") -> T:
    """Call ``condition`` every ``interval`` seconds until it returns a true value; return it.

    The condition is called at once, then after each interval, and a last time at the
    deadline. An exception other than :class:`AssertionError` counts as "not yet" (a
    service still starting, a connection refused); the last one is reported on timeout.
    An :class:`AssertionError` raised by the condition fails at once.

    Raises:
        AssertionError: ``timeout`` seconds passed without a true value; the text names
            ``message``, the last result and the last exception.

    """
    deadline = time.monotonic() + timeout
    result: T | None = None
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
        except AssertionError:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {_text(message)} "
                                 f"(last result: {result!r}, last error: {last_error!r})")
        time.sleep(min(interval, remaining))


def assert_stays(condition: Callable[[], T], duration: float, interval: float = 0.2,
                 message: Message = "condition") -> T:
    """Check that ``condition`` returns a true value throughout ``duration`` seconds.

    The condition is called at once, every ``interval`` seconds, and at the end; the last
    result is returned. Exceptions raised by the condition propagate.

    Raises:
        AssertionError: the condition returned a false value; the text names ``message``,
            that value and when it happened.

    """
    start = time.monotonic()
    deadline = start + duration
    while True:
        result = condition()
        now = time.monotonic()
        if not result:
            raise AssertionError(f"{_text(message)} stopped holding after {now - start:.2f}s "
                                 f"of {duration:g}s (result: {result!r})")
        if now >= deadline:
            return result
        time.sleep(min(interval, deadline - now))
