#!/usr/bin/env bash
# Copy the Prometheus rules and the Grafana dashboards into the chart, which reads them with
# .Files (helm packages nothing outside the chart directory and follows no symlink out of it).
# prometheus/rules/*.yml and grafana/dashboards/*.json stay the one source:
# tests/deploy/test_chart.py fails while a copy differs. Run after changing either:
#   deploy/helm/sync-files.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
chart="$root/deploy/helm/celery-jobmon"
rm -f "$chart"/files/rules/*.yml "$chart"/files/dashboards/*.json
cp "$root"/prometheus/rules/*.yml "$chart/files/rules/"
cp "$root"/grafana/dashboards/*.json "$chart/files/dashboards/"
