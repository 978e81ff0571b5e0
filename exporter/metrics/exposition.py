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

Rendering costs little per series: the label pairs of a label-value tuple are escaped, sorted
and encoded once per scrape, whichever families carry them (:class:`_LabelText`), and a
series' lines are one ``%`` format of bytes from a template made once per family, the label
text put in afterwards with ``bytes.replace`` (:class:`_HistogramFamily`). A first scrape of
500 names × 10 queues (every series rendered) takes 0.02–0.03× the time prometheus-client's
``generate_latest`` takes (``benchmarks/scrape.py``).

Not thread-safe: the ``/metrics`` endpoint serialises renders with its own lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from operator import itemgetter
from typing import Any

from prometheus_client.utils import floatToGoString

from exporter.metrics import catalogue as m
from exporter.metrics.catalogue import MetricSpec, Reader

Labels = tuple[str, ...]
#: Constant labels: ``(names, values)``, added to every series (empty: none).
ConstLabels = tuple[Labels, Labels]
_ABSENT = object()
#: Below this, an int count is written ``%d.0`` and a float ``repr(value)``: what
#: ``floatToGoString`` writes for them. It writes larger ones with exponents (``1e+06``).
_SHORT = 1_000_000
#: Where a histogram template takes a series' label text: all of it; the pairs before ``le``;
#: those after it. Bytes that UTF-8 never uses: no label text (inserted) nor the rest of a
#: template (names, numbers) can hold them.
_ALL, _BEFORE, _AFTER = b"\xff", b"\xfe", b"\xfd"


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: backslash, newline and ``"`` escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def format_value(value: float) -> str:
    """A sample value as prometheus-client's ``floatToGoString`` writes it (``3.0``, ``+Inf``,
    ``1.5e+06``); counts below a million, the bulk of the output, take a shortcut that gives
    the same text.
    """
    if type(value) is int and 0 <= value < _SHORT:
        return f"{value}.0"
    return str(floatToGoString(value))


def _getter(slots: list[int]) -> Callable[[Labels], Labels]:
    """``values -> tuple(values[slot] for slot in slots)``, in C where it can."""
    if len(slots) > 1:
        return itemgetter(*slots)
    if slots:
        slot = slots[0]
        return lambda values: (values[slot],)
    return lambda values: ()


def _header(name: str, help_text: str, kind: str) -> str:
    escaped = help_text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def _literal(text: str) -> bytes:
    """``text`` encoded, as the literal part of a ``%`` format."""
    return text.replace("%", "%%").encode()


class _LabelText:
    """The label pairs of one tuple of label names (a family's own, then the constant labels)
    as UTF-8 text, sorted by label name and escaped as the text format wants them:
    ``name="app.add",queue_name="default"``.

    Families with the same label names (the lifecycle counters, ``task_running``,
    ``task_lost_total`` and ``task_queue_wait_seconds`` of a ``(name, queue_name)`` pair) share
    one, so a label-value tuple is escaped, sorted and encoded once per scrape, not once per
    family. What it built is kept until :meth:`clear` (the end of each scrape): between
    scrapes it holds nothing. ``texts`` is the cache of :meth:`text` (``{values: text}``).

    Args:
        names: the family's label names (its label-value tuples are in this order).
        const: the constant labels, with their values.

    """

    __slots__ = ("_after", "_before", "_count", "_ordered", "_pairs", "_split", "after_le",
                 "before_le", "has_pairs", "texts")

    def __init__(self, names: Labels, const: ConstLabels) -> None:
        fixed = dict(zip(*const, strict=True))
        pieces: list[tuple[str, str]] = []
        slots: list[int] = []
        for label in sorted((*names, *const[0])):
            if label in fixed:
                value = escape_label_value(fixed[label]).replace("%", "%%")
                pieces.append((label, f'{label}="{value}"'))
            else:
                pieces.append((label, f'{label}="%s"'))
                slots.append(names.index(label))
        # Formats of the pairs (all, before ``le``, after it) taking the own values, sorted.
        self._pairs = ",".join(text for _, text in pieces)
        self._before = ",".join(text for label, text in pieces if label < "le")
        self._after = ",".join(text for label, text in pieces if label > "le")
        self._ordered = _getter(slots)
        #: How many of the family's own labels sort before ``le``.
        self._count = sum(1 for label in names if label < "le")
        #: Whether any label (own or constant) sorts before / after a histogram's ``le``.
        self.before_le, self.after_le = bool(self._before), bool(self._after)
        #: Whether the family has labels at all (else its series have no braces).
        self.has_pairs = bool(pieces)
        self.texts: dict[Labels, bytes] = {}
        self._split: dict[Labels, tuple[bytes, bytes]] = {}

    def _escaped(self, values: Labels) -> Labels:
        """``values`` in the order of their names, escaped (most need no escaping: one test)."""
        ordered = self._ordered(values)
        joined = "".join(ordered)
        if "\\" in joined or "\n" in joined or '"' in joined:
            return tuple(map(escape_label_value, ordered))
        return ordered

    def text(self, values: Labels) -> bytes:
        """The pairs of ``values`` (label values in the family's order), comma-separated
        (``b""`` without labels).
        """
        text = self.texts.get(values)
        if text is None:
            text = self.texts[values] = (self._pairs % self._escaped(values)).encode()
        return text

    def split(self, values: Labels) -> tuple[bytes, bytes]:
        """:meth:`text` in two: the pairs whose names sort before ``le``, and the others."""
        parts = self._split.get(values)
        if parts is None:
            escaped = self._escaped(values)
            parts = self._split[values] = ((self._before % escaped[:self._count]).encode(),
                                           (self._after % escaped[self._count:]).encode())
        return parts

    def clear(self) -> None:
        """Forget the texts built (the end of a scrape)."""
        self.texts = {}
        self._split = {}


class _Family:
    """One family's header and the cached, encoded lines of its series.

    :meth:`chunks` returns the family's text as a list of UTF-8 chunks (header, then one per
    series in ``values`` order), rendering (:meth:`_render`) only the series whose value
    differs from the previous call's. ``hashable``: the values hash cheaply (numbers), so the
    changed series are found with a set difference in C; otherwise (histograms) one Python
    pass compares each value with the previous one, an identity test while it is the same
    frozen object.
    """

    __slots__ = ("_chunks", "_hashable", "_header", "_labels", "_lines", "_values")

    def __init__(self, header: str, labels: _LabelText, hashable: bool) -> None:
        self._header = header.encode()
        self._labels = labels
        self._hashable = hashable
        self._lines: dict[Labels, bytes] = {}
        self._values: Mapping[Labels, Any] = {}
        self._chunks = [self._header]

    def chunks(self, values: Mapping[Labels, Any]) -> list[bytes]:
        """The family's text for ``values`` (``{label values: value}``) as UTF-8 chunks."""
        old = self._values
        if values == old:
            return self._chunks
        changed: Iterable[tuple[Labels, Any]]
        if not old:
            changed = values.items()
        elif self._hashable:
            changed = values.items() - old.items()
        else:
            changed = [(labels, value) for labels, value in values.items()
                       if (prior := old.get(labels, _ABSENT)) is not value
                       and (prior is _ABSENT or prior != value)]
        lines = self._lines
        self._render(changed, lines)
        if len(lines) != len(values):  # every key of values is in lines: some went away
            for labels in lines.keys() - values.keys():
                del lines[labels]
        self._values = values
        self._chunks = [self._header, *map(lines.__getitem__, values)]
        return self._chunks

    def _render(self, changed: Iterable[tuple[Labels, Any]], lines: dict[Labels, bytes]) -> None:
        """Put the text of each ``(labels, value)`` of ``changed`` in ``lines[labels]``."""
        raise NotImplementedError


class _ValueFamily(_Family):
    """A counter or gauge: ``name{labels} value`` per series."""

    __slots__ = ("_long", "_short")

    def __init__(self, name: str, spec: MetricSpec, labels: _LabelText) -> None:
        super().__init__(_header(name, spec.help, spec.kind), labels, hashable=True)
        # ``name{pairs} `` (``name `` without any label): the pairs' text goes in the %s.
        opened = _literal(name) + (b"{%s} " if labels.has_pairs else b"%s ")
        self._short = opened + b"%d.0\n"
        self._long = opened + b"%s\n"

    def _render(self, changed: Iterable[tuple[Labels, Any]], lines: dict[Labels, bytes]) -> None:
        texts, text, short, long = self._labels.texts, self._labels.text, self._short, self._long
        for labels, value in changed:
            pairs = texts.get(labels)
            if pairs is None:
                pairs = text(labels)
            if type(value) is int and 0 <= value < _SHORT:
                lines[labels] = short % (pairs, value)
            else:
                lines[labels] = long % (pairs, format_value(value).encode())


class _HistogramFamily(_Family):
    """A histogram: cumulative ``_bucket`` lines (``le`` as prometheus-client formats the
    value's bounds, then ``+Inf``), ``_count`` and ``_sum`` per series.

    A series' lines are one ``%`` format of its counts and sum, from a template made once for
    the family's bounds, in which the series' label text then replaces :data:`_ALL` (or
    :data:`_BEFORE` and :data:`_AFTER` when labels sort on both sides of ``le``).
    """

    __slots__ = ("_bounds", "_long", "_name", "_short")

    def __init__(self, name: str, spec: MetricSpec, labels: _LabelText) -> None:
        super().__init__(_header(name, spec.help, "histogram"), labels, hashable=False)
        self._name = name
        self._bounds: tuple[float, ...] | None = None
        self._short = self._long = b""

    def _templates(self, bounds: tuple[float, ...]) -> tuple[bytes, bytes]:
        """The templates of a series with ``bounds``, as ``%`` formats of ``(*cumulative,
        count, sum)``: ints and a float (``%d.0``, ``%r``: values below :data:`_SHORT`), or
        their text (``%s``).
        """
        labels = self._labels
        if labels.before_le and labels.after_le:
            le, braces = _BEFORE + b',le="%s",' + _AFTER, b"{" + _BEFORE + b"," + _AFTER + b"}"
        elif labels.before_le:
            le, braces = _ALL + b',le="%s"', b"{" + _ALL + b"}"
        elif labels.after_le:
            le, braces = b'le="%s",' + _ALL, b"{" + _ALL + b"}"
        else:
            le, braces = b'le="%s"', b""
        name = _literal(self._name)
        buckets = [name + b"_bucket{" + le % bound.encode() + b"} "
                   for bound in [*map(floatToGoString, bounds), "+Inf"]]
        templates = []
        for count, total in ((b"%d.0", b"%r"), (b"%s", b"%s")):
            templates.append(b"".join(bucket + count + b"\n" for bucket in buckets)
                             + name + b"_count" + braces + b" " + count + b"\n"
                             + name + b"_sum" + braces + b" " + total + b"\n")
        self._bounds = bounds
        self._short, self._long = templates
        return self._short, self._long

    def _render(self, changed: Iterable[tuple[Labels, Any]], lines: dict[Labels, bytes]) -> None:
        labels_text = self._labels
        texts, text, split = labels_text.texts, labels_text.text, labels_text.split
        both = labels_text.before_le and labels_text.after_le
        any_labels = labels_text.has_pairs
        bounds, short, long = self._bounds, self._short, self._long
        for labels, hist in changed:
            if hist.bounds is not bounds:
                bounds = hist.bounds
                short, long = self._templates(bounds)
            cumulative, total = hist.cumulative, hist.total
            if cumulative[-1] < _SHORT and type(total) is float and -_SHORT < total < _SHORT:
                lines_text = short % (*cumulative, cumulative[-1], total)
            else:
                lines_text = long % tuple(format_value(value).encode()
                                          for value in (*cumulative, cumulative[-1], total))
            if both:
                before, after = split(labels)
                lines_text = lines_text.replace(_BEFORE, before).replace(_AFTER, after)
            elif any_labels:
                pairs = texts.get(labels)
                if pairs is None:
                    pairs = text(labels)
                lines_text = lines_text.replace(_ALL, pairs)
            lines[labels] = lines_text


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
        #: One label text per tuple of label names, shared by the families that have them.
        self._labels: dict[Labels, _LabelText] = {}
        for spec in specs:
            if hostname_label and spec in m.HOSTNAME_LABELED:
                spec = m.with_hostname(spec)
            labels = self._labels.get(spec.labels)
            if labels is None:
                labels = self._labels[spec.labels] = _LabelText(spec.labels, const)
            family: _Family
            if spec.kind == "histogram":
                family = _HistogramFamily(prefix + spec.name, spec, labels)
            elif spec.kind == "info":  # exposed as <name>_info 1, as prometheus-client does
                family = _ValueFamily(prefix + spec.name + "_info", replace(spec, kind="gauge"),
                                      labels)
            else:
                family = _ValueFamily(prefix + spec.name, spec, labels)
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
        try:
            for read, family in self._families:
                values = read(snapshot, now)
                if values is not None:
                    parts += family.chunks(values)
        finally:
            for labels in self._labels.values():
                labels.clear()
        return parts
