"""Build prometheus-client metric families for :mod:`exporter.metrics.catalogue` specs.

Every collector renders through :class:`Families`, so a family's name (prefix + catalogue
name), help, type and label names always come from the catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from exporter.metrics.catalogue import MetricSpec

_SIMPLE = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class Families:
    """Family factory for one metric name prefix (``celery_`` by default)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def values(self, spec: MetricSpec, values: Mapping[tuple[str, ...], float]) -> Metric:
        """A counter or gauge family with one sample per label-value tuple."""
        family = _SIMPLE[spec.kind](self.prefix + spec.name, spec.help, labels=spec.labels)
        for labels, value in values.items():
            family.add_metric(list(labels), value)
        return family

    def scalar(self, spec: MetricSpec, value: float) -> Metric:
        """A counter or gauge family without labels and one sample."""
        return self.values(spec, {(): value})

    def info(self, spec: MetricSpec, labels: Mapping[str, str]) -> Metric:
        """An info family (exposed as ``<name>_info 1``) with ``labels``."""
        family = InfoMetricFamily(self.prefix + spec.name, spec.help, labels=())
        family.add_metric([], dict(labels))
        return family
