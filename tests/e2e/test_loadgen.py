"""examples/loadgen.py sends the task mix it reports, to the queues examples/tasks.py routes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DB = 10  # this test's own Redis database (the Prometheus end-to-end test uses 9)
PRIORITY_SEP = "\x06\x16"  # kombu's Redis priority sub-queue separator


def test_loadgen_sends_the_reported_mix_to_the_routed_queues():
    client = redis.Redis("127.0.0.1", 6379, db=DB, decode_responses=True)
    client.flushdb()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "examples.loadgen", "--rate", "500", "--count", "60",
             "--seed", "7", "--orphan-queue", "c"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{DB}"},
        )
        assert result.returncode == 0, result.stderr
        summary = re.search(r"stop sent=(\d+) (.*)$", result.stderr, re.MULTILINE)
        assert summary, result.stderr
        sent = {kind: int(n) for kind, n in
                (item.split("=") for item in summary.group(2).split())}
        assert int(summary.group(1)) == sum(sent.values()) == 60
        waiting: dict[str, int] = {}
        for key in map(str, client.keys("*")):
            if client.type(key) == "list":
                queue = key.split(PRIORITY_SEP)[0]
                waiting[queue] = waiting.get(queue, 0) + client.llen(key)
        on_b = sent.get("fail_value", 0) + sent.get("fail_key", 0)
        on_c = sent.get("orphan", 0)
        assert waiting == {q: n for q, n in
                           {"a": 60 - on_b - on_c, "b": on_b, "c": on_c}.items() if n}
    finally:
        client.flushdb()
