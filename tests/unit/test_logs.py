"""Log helpers: a repeated condition logs once per interval with the count it held back;
describe() gives one line of an exception."""

from __future__ import annotations

import logging

from exporter.logs import Throttled, describe
from tests.support.clock import FakeClock


def test_a_repeated_line_is_logged_once_per_interval_with_what_it_held_back(caplog) -> None:
    clock = FakeClock()
    throttled = Throttled(logging.getLogger("test.throttled"), interval=300.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for _ in range(5):
            throttled.log(logging.WARNING, "pickle", "event skipped reason=%s", "pickle")
            clock.advance(10.0)
        throttled.log(logging.WARNING, "other", "another condition")
        clock.advance(300.0)
        throttled.log(logging.WARNING, "pickle", "event skipped reason=%s", "pickle")
    assert [r.getMessage() for r in caplog.records] == [
        "event skipped reason=pickle", "another condition",
        "event skipped reason=pickle repeated=4"]


def test_describe_gives_the_class_and_the_first_line() -> None:
    assert describe(ValueError("bad\nSQL: select 1")) == "ValueError: bad"
    assert describe(KeyError()) == "KeyError"
