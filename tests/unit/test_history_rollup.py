"""The pure part of the hourly statistics (exporter/history/rollup.py): buckets, the histogram
encoding and the 95th percentile's bound."""

from __future__ import annotations

import math
import random

import pytest

from exporter.history.rollup import (
    LOW,
    P95_RELATIVE_ERROR,
    STEPS,
    TOP,
    Figures,
    _counts,
    _encode,
    _first_hour_from,
    _gaps,
    _last_hour_from,
    bucket_of,
)


def edge(index: int) -> float:
    return LOW * 2.0 ** (index / STEPS)


@pytest.mark.parametrize("index", [1, 2, 7, 8, 9, 100, 200, TOP - 1])
def test_a_bucket_holds_its_lower_edge_and_not_its_upper_one(index):
    low, high = edge(index - 1), edge(index)
    assert bucket_of(low) == index
    assert bucket_of(math.nextafter(high, 0)) == index
    assert bucket_of(high) == index + 1


def test_tiny_zero_negative_and_nan_runtimes_go_to_bucket_0_and_huge_ones_to_the_top():
    assert [bucket_of(v) for v in (0.0, -1.0, math.nan, LOW / 2)] == [0, 0, 0, 0]
    assert bucket_of(1e15) == bucket_of(math.inf) == TOP


def test_the_histogram_encoding_keeps_every_count():
    histogram = (3 << 32 * 5) + (1 << 32 * 9) + ((2**32 - 1) << 32 * 400)
    offset, blob = _encode(histogram)
    assert offset == 5
    assert int.from_bytes(blob, "little") << 32 * offset == histogram
    counts = _counts(histogram)
    assert (counts[5], counts[9], counts[400], sum(counts)) == (3, 1, 2**32 - 1, 2**32 + 3)
    assert _encode(0) == (None, None)


def test_the_p95_of_raw_runtimes_is_the_exact_nearest_rank():
    figures = Figures()
    values = [random.Random(3).expovariate(1.0) for _ in range(1000)]
    for value in values:
        figures.add_row("SUCCESS", value)
    assert figures.p95() == (sorted(values)[949], True)


@pytest.mark.parametrize("seed", range(5))
def test_the_p95_from_buckets_is_within_the_stated_bound(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(-2, 2) for _ in range(rng.randrange(20, 3000))]
    figures = Figures(runtime_count=len(values), minimum=min(values), maximum=max(values))
    for value in values:
        figures.histogram += 1 << 32 * bucket_of(value)
    shown, exact = figures.p95()
    truth = sorted(values)[math.ceil(0.95 * len(values)) - 1]
    assert exact is False
    assert truth / (1 + P95_RELATIVE_ERROR) <= shown <= truth * (1 + P95_RELATIVE_ERROR)


def test_fewer_than_20_runtimes_give_the_exact_max_as_p95():
    figures = Figures(runtime_count=19, minimum=0.5, maximum=3.25, histogram=19 << 32 * 200)
    assert figures.p95() == (3.25, True)


def test_hour_edges_are_exact_whatever_the_division_rounds():
    edge_ = 472222 * 3600.0
    assert (_first_hour_from(edge_), _last_hour_from(edge_)) == (472222, 472222)
    below = math.nextafter(edge_, 0)
    assert (_first_hour_from(below), _last_hour_from(below)) == (472222, 472221)
    above = math.nextafter(edge_, math.inf)
    assert (_first_hour_from(above), _last_hour_from(above)) == (472223, 472222)


def test_the_gaps_of_a_window_are_what_the_built_hours_leave():
    assert _gaps(100.0, 4 * 3600 + 5.0, [(1, 2)]) == [(100.0, 3600.0), (3 * 3600.0, 4 * 3600 + 5.0)]
    assert _gaps(None, None, [(1, 1), (3, 3)]) == [(None, 3600.0), (7200.0, 3 * 3600.0),
                                                  (4 * 3600.0, None)]
    assert _gaps(3600.0, 7200.0, [(1, 1)]) == []
