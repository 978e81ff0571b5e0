"""Histogram bucket arrays kept by the model (no prometheus-client objects on the event path)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass


class Histogram:
    """Counts of observations per bucket, plus their sum; bounds are upper bounds in seconds.

    ``counts[i]`` counts observations ``<= bounds[i]`` and ``> bounds[i-1]``; the last slot
    counts observations above every bound (the ``+Inf`` bucket). Not thread-safe.
    """

    __slots__ = ("bounds", "counts", "frozen", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        #: The last :meth:`freeze` result while no observation came since, else ``None``.
        self.frozen: HistogramValue | None = None

    def observe(self, value: float) -> None:
        """Add one observation (seconds)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.frozen = None

    def freeze(self) -> HistogramValue:
        """Return an immutable copy with cumulative counts, as the exposition wants them.

        The copy is kept until the next observation: freezing an unchanged histogram returns
        the same object, which is how the exposition knows it need not render it again.
        """
        if self.frozen is not None:
            return self.frozen
        cumulative = []
        running = 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        self.frozen = HistogramValue(self.bounds, tuple(cumulative), self.total)
        return self.frozen


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """Frozen histogram: ``cumulative[i]`` observations ``<= bounds[i]``; the last entry is the
    count of all observations (``+Inf``); ``total`` is their sum in seconds.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """Number of observations."""
        return self.cumulative[-1]
