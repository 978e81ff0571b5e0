"""promtool accepts the Prometheus config and the rules, and the rule unit tests pass."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.binaries import require_binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "prometheus"
RULE_FILES = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "prometheus")
    return subprocess.run([binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=120)


def test_check_config_accepts_prometheus_yml_and_finds_the_rule_files():
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_check_rules_accepts_every_rule_file():
    result = _promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def test_rule_unit_tests_pass():
    # The glob found the suites (others may be added: each must pass too).
    assert {Path(f).name for f in TEST_FILES} >= {
        "builtin_tasks_test.yml", "queues_test.yml", "recording_test.yml", "replicas_test.yml",
        "tasks_test.yml", "workers_exporter_test.yml"}
    result = _promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)
