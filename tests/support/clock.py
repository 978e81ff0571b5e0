"""A fake clock for pure tests: :class:`FakeClock` is what the exporter's components take as
``clock=``/``timer=`` (a callable giving float seconds), moved only by the test.

:data:`T0` is the fixed epoch second the pure tests start from; multiples of 1/16 s added to
it stay exact in a float, so timestamps and durations can be compared with ``==``.
"""

from __future__ import annotations

#: 2023-11-14T22:13:20Z, seconds since the epoch.
T0 = 1_700_000_000.0


class FakeClock:
    """The exporter clock, moved by hand: call it for the time, set :attr:`now` or
    :meth:`advance` it; it never moves by itself.
    """

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
