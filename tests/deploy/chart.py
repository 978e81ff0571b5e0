"""The chart as the tests see it: ``helm`` (skipped, or failed under ``CI=true``, when
missing), its rendered objects per values file of ``deploy/helm/celery-jobmon/ci/``, and the
exporter's container in them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = ROOT / "deploy" / "helm"
CHART = HELM_DIR / "celery-jobmon"
VALUES_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
TOOLS = Path(os.environ.get("CHART_TOOLS_DIR", "/opt/celery-jobmon-tools"))
MODELS = TOOLS / "node_modules" / "@kubernetes-models" / "prometheus-operator"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBERNETES_VERSIONS = ("1.25", "1.35")
INSTALL_HINT = "run deploy/helm/tools/install.sh"
SYNC_HINT = "run deploy/helm/sync-files.sh and commit the copies"


def helm() -> str:
    """The path of ``helm``, or :func:`unavailable`."""
    path = shutil.which("helm")
    if path is None:
        unavailable(f"helm not found: {INSTALL_HINT}")
    return path


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def render(*args: str) -> list[dict[str, Any]]:
    """The objects of ``helm template rel CHART --namespace apps ARGS``."""
    result = run_helm("template", "rel", str(CHART), "--namespace", "apps", *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def rendered(values_file: str) -> list[dict[str, Any]]:
    """The objects rendered with ``ci/VALUES_FILE`` (rendered once per process)."""
    if values_file not in _RENDERED:
        _RENDERED[values_file] = render("-f", str(CHART / "ci" / values_file))
    return _RENDERED[values_file]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects
             if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's one container."""
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]
