"""ruff and mypy stay clean (DESIGN §7): a lint error fails the suite like a broken test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "exporter", "actions", "ui", "examples", "tests",
                  "benchmarks", "grafana", "docker")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = _run("mypy", "exporter", "actions", "ui")
    assert result.returncode == 0, result.stdout + result.stderr
