"""The model's and the exporter's health part of ``/metrics``: Prometheus text format 0.0.4,
rendered again only where it changed.

prometheus-client's custom-collector pattern builds a ``Metric`` object per family and a
``Sample`` per series on every scrape, then formats each sample: about 8 µs a sample. With 500
task names × 10 queues and full histograms that is 345,000 samples and 2.4 s per scrape — the
scrape would hold a core for seconds and time out. Between two scrapes most series do not
change, so :class:`CachedExposition` keeps the rendered text of each series with the value it
was rendered from and renders a series again only when its value differs (a frozen
:class:`~exporter.state.histogram.HistogramValue` is the same object while its histogram saw no
observation, so the check is an identity test); a family none of whose series changed is
reused whole. Series the snapshot no longer has (a forgotten worker) are dropped from the cache.

The output is byte for byte what ``prometheus_client.generate_latest`` writes for the same
families (label pairs sorted by name, values through prometheus-client's ``floatToGoString``,
the same escaping; a unit test compares both over random models), so Prometheus, promtool and
prometheus-client's parser read it as before. Constant labels (``--const-label cluster=eu-1``)
join every series' labels, sorted with them, as if each family declared them (the same test
compares that too). Sample output (default prefix, ``--const-label cluster=eu-1``)::

    # HELP celery_task_failed_total Tasks failed, counted from `task-failed` events.
    # TYPE celery_task_failed_total counter
    celery_task_failed_total{cluster="eu-1",name="examples.fail",queue_name="b"} 3.0

Not thread-safe: the ``/metrics`` endpoint serialises renders with its own lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from prometheus_client.utils import floatToGoString

from exporter.metrics import catalogue as m
from exporter.metrics.catalogue import MetricSpec, Reader
from exporter.state.histogram import HistogramValue

Labels = tuple[str, ...]
#: Formats what does not change in a series' lines, once per label-value tuple.
Prefixer = Callable[[Labels], Any]
#: Renders one series' lines from its prefix and its value.
LineRenderer = Callable[[Any, Any], str]
_ABSENT = object()


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: backslash, newline and ``"`` escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def format_value(value: float) -> str:
    """A sample value as prometheus-client's ``floatToGoString`` writes it (``3.0``, ``+Inf``,
    ``1.5e+06``); counts below a million, the bulk of the output, take a shortcut that gives
    the same text.
    """
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return str(floatToGoString(value))


def _sorted_pairs(names: tuple[str, ...], values: Labels) -> list[tuple[str, str]]:
    """``(label name, 'name="escaped value"')`` sorted by label name, as the text format
    orders them.
    """
    return sorted((name, f'{name}="{escape_label_value(value)}"') for name, value in zip(
        names, values, strict=True))


def _braces(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(text for _, text in pairs) + "}" if pairs else ""


def _header(name: str, help_text: str, kind: str) -> str:
    escaped = help_text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


class _Family:
    """One family's header and the cached, encoded lines of its series.

    ``prefix(labels)`` formats what never changes in a series (its name and labels), once;
    ``render(prefix, value)`` formats the series' lines. :meth:`chunks` returns the family's
    text as a list of UTF-8 chunks (header, then one per series in ``values`` order),
    rendering only the series whose value differs from the previous call's. ``hashable``: the
    values hash cheaply (numbers), so the changed series are found with a set difference in C;
    otherwise (histograms) one Python pass compares each value with the previous one, an
    identity test while it is the same frozen object.
    """

    __slots__ = ("_chunks", "_hashable", "_header", "_lines", "_prefix", "_prefixes", "_render",
                 "_values")

    def __init__(self, header: str, prefix: Prefixer, render: LineRenderer,
                 hashable: bool) -> None:
        self._header = header.encode()
        self._prefix = prefix
        self._render = render
        self._hashable = hashable
        self._prefixes: dict[Labels, Any] = {}
        self._lines: dict[Labels, bytes] = {}
        self._values: Mapping[Labels, Any] = {}
        self._chunks = [self._header]

    def chunks(self, values: Mapping[Labels, Any]) -> list[bytes]:
        """The family's text for ``values`` (``{label values: value}``) as UTF-8 chunks."""
        old = self._values
        if values == old:
            return self._chunks
        if self._hashable:
            changed: Iterable[tuple[Labels, Any]] = values.items() - old.items()
        else:
            changed = [(labels, value) for labels, value in values.items()
                       if (prior := old.get(labels, _ABSENT)) is not value and prior != value]
        lines, prefixes = self._lines, self._prefixes
        for labels, value in changed:
            prefix = prefixes.get(labels)
            if prefix is None:
                prefix = prefixes[labels] = self._prefix(labels)
            lines[labels] = self._render(prefix, value).encode()
        if len(lines) != len(values):  # every key of values is in lines: some went away
            for labels in lines.keys() - values.keys():
                del lines[labels], prefixes[labels]
        self._values = values
        self._chunks = [self._header, *map(lines.__getitem__, values)]
        return self._chunks


#: Constant labels: ``(names, values)``, added to every series (empty: none).
ConstLabels = tuple[Labels, Labels]


def _value_family(name: str, spec: MetricSpec, const: ConstLabels) -> _Family:
    """A counter or gauge: ``name{labels} value`` per series."""
    names, values = (*spec.labels, *const[0]), const[1]

    def prefix(labels: Labels) -> str:
        return f"{name}{_braces(_sorted_pairs(names, (*labels, *values)))} "

    def render(prefix: str, value: float) -> str:
        return f"{prefix}{format_value(value)}\n"

    return _Family(_header(name, spec.help, spec.kind), prefix, render, hashable=True)


def _histogram_family(name: str, spec: MetricSpec, const: ConstLabels) -> _Family:
    """A histogram: cumulative ``_bucket`` lines (``le`` as prometheus-client formats the
    value's bounds, then ``+Inf``), ``_count`` and ``_sum`` per series.
    """
    quoted: dict[tuple[float, ...], list[str]] = {}
    names, values = (*spec.labels, *const[0]), const[1]

    def prefix(labels: Labels) -> tuple[str, str, str]:
        pairs = _sorted_pairs(names, (*labels, *values))
        before = "".join(text + "," for label, text in pairs if label < "le")
        after = "".join("," + text for label, text in pairs if label > "le")
        return f"{name}_bucket{{{before}le=", after + "} ", _braces(pairs)

    def render(prefix: tuple[str, str, str], hist: HistogramValue) -> str:
        bucket, close, plain = prefix
        les = quoted.get(hist.bounds)
        if les is None:
            les = quoted[hist.bounds] = [
                f'"{floatToGoString(bound)}"' for bound in hist.bounds] + ['"+Inf"']
        counts = [format_value(count) for count in hist.cumulative]
        lines = [f"{bucket}{le}{close}{count}\n" for le, count in zip(les, counts, strict=True)]
        lines.append(f"{name}_count{plain} {counts[-1]}\n")
        lines.append(f"{name}_sum{plain} {format_value(hist.total)}\n")
        return "".join(lines)

    return _Family(_header(name, spec.help, "histogram"), prefix, render, hashable=False)


class CachedExposition:
    """Renders the families ``specs`` (each with its catalogue reader) from the snapshots of one
    source as text, in ``specs`` order, re-rendering only what changed (see the module docs).

    Args:
        prefix: metric name prefix, ``celery_`` by default.
        specs: the families, e.g. :data:`~exporter.metrics.catalogue.MODEL`.
        hostname_label: the families of :data:`~exporter.metrics.catalogue.HOSTNAME_LABELED`
            carry ``hostname`` after ``queue_name`` (``--task-hostname-label``; the snapshot's
            label tuples must have it too).
        const_labels: ``(name, value)`` pairs every series carries (``--const-label``; names
            checked by :func:`exporter.config.const_label_problems`: none is a family's own).

    """

    def __init__(self, prefix: str, specs: Iterable[MetricSpec],
                 hostname_label: bool = False,
                 const_labels: Iterable[tuple[str, str]] = ()) -> None:
        pairs = tuple(const_labels)
        const: ConstLabels = (tuple(n for n, _ in pairs), tuple(v for _, v in pairs))
        self._families: list[tuple[Reader, _Family]] = []
        for spec in specs:
            if hostname_label and spec in m.HOSTNAME_LABELED:
                spec = m.with_hostname(spec)
            if spec.kind == "histogram":
                family = _histogram_family(prefix + spec.name, spec, const)
            elif spec.kind == "info":  # exposed as <name>_info 1, as prometheus-client does
                family = _value_family(prefix + spec.name + "_info", replace(spec, kind="gauge"),
                                       const)
            else:
                family = _value_family(prefix + spec.name, spec, const)
            self._families.append((spec.read, family))

    def chunks(self, snapshot: Any, now: float) -> list[bytes]:
        """The text of every family for ``snapshot`` (at exporter time ``now``) as UTF-8
        chunks to be joined (one per family header and one per series; joining is left to the
        caller, so that 36 MB are copied once, not twice).

        Raises:
            Exception: whatever a reader raises on a snapshot it cannot read (the caller
                guards each source; a failed render leaves the cache as it was).

        """
        parts: list[bytes] = []
        for read, family in self._families:
            values = read(snapshot, now)
            if values is not None:
                parts += family.chunks(values)
        return parts
