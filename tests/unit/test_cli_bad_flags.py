"""Every bad flag value fails fast: exit code 2 and one ``Error:`` line naming the flag, before
anything connects or starts (``serve``, ``check``, ``db upgrade``, ``history prune``).

What ``tests/unit/test_cli.py`` already pins (durations, buckets, listen, int ranges, transport
option syntax, log level, problems reported together) is only sampled here; the rest are the
values that used to get through: URLs that parse but cannot work (a port that is not a number,
an unknown transport or SQL dialect, an unknown content type). Those cases are marked
the validation in ``exporter/config.py``/``exporter/cli/commands.py``
(owned by the lead) lands — see the closing note of issue 8; then the marks must go.
"""

from __future__ import annotations

import os
from typing import Any

import click
import pytest
from click.testing import CliRunner

from exporter.cli.commands import main

SECRET = "s3cr3t-flag-pw"

@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace what the commands would run: a value that gets through validation is caught
    by the exit code, not by a server that starts."""
    import exporter.app
    import exporter.cli.check

    started: list[Any] = []
    monkeypatch.setattr(exporter.app, "serve", started.append)
    monkeypatch.setattr(exporter.cli.check, "run_checks", lambda *a, **k: started.append(a) or [])
    for name in list(os.environ):
        if name.startswith("JOBMON_") or name == "CELERY_BROKER_URL":
            monkeypatch.delenv(name)
    return started


CASES = [
    # serve
    (["serve", "--broker-url", "localhost"], "--broker-url"),
    pytest.param(["serve", "--broker-url", f"redis://:{SECRET}@h:notaport/0"], "--broker-url",
                 id="serve-broker-port-not-a-number"),
    pytest.param(["serve", "--broker-url", f"foo://:{SECRET}@h/0"], "--broker-url",
                 id="serve-broker-unknown-transport"),
    pytest.param(["serve", "--broker-url", f"redis://:{SECRET}@a/0;b:6379"], "--broker-url",
                 id="serve-broker-failover-entry-without-scheme"),
    (["serve", "--worker-timeout", "soon"], "--worker-timeout"),
    (["serve", "--inspect-interval", "-5s"], "--inspect-interval"),
    (["serve", "--reconnect-max-interval", "0"], "--reconnect-max-interval"),
    (["serve", "--broker-transport-option", "novalue"], "--broker-transport-option"),
    (["serve", "--broker-transport-option", "=1"], "--broker-transport-option"),
    (["serve", "--log-level", "LOUD"], "--log-level"),
    (["serve", "--log-format", "xml"], "--log-format"),
    (["serve", "--listen", "nohost"], "--listen"),
    (["serve", "--accept-content", ","], "--accept-content"),
    pytest.param(["serve", "--accept-content", "json,xml"], "--accept-content",
                 id="serve-accept-content-unknown-type"),
    (["serve", "--history-url", "history.db"], "--history-url"),
    pytest.param(["serve", "--history-url", f"foo://u:{SECRET}@h/db"], "--history-url",
                 id="serve-history-unknown-dialect"),
    pytest.param(["serve", "--history-url", f"postgresql://u:{SECRET}@h:abc/db"],
                 "--history-url", id="serve-history-port-not-a-number"),
    (["serve", "--history-retention", "forever"], "--history-retention"),
    (["serve", "--history-queue-size", "0"], "--history-queue-size"),
    (["serve", "--history-writer", "fork"], "--history-writer"),
    (["serve", "--amqp-reader", "fork"], "--amqp-reader"),
    # check
    (["check", "--broker-url", "localhost"], "--broker-url"),
    pytest.param(["check", "--broker-url", f"foo://:{SECRET}@h/0"], "--broker-url",
                 id="check-broker-unknown-transport"),
    (["check", "--log-level", "LOUD"], "--log-level"),
    (["check", "--listen-seconds", "long"], "--listen-seconds"),
    (["check", "--broker-transport-option", "novalue"], "--broker-transport-option"),
    # db upgrade
    pytest.param(["db", "upgrade", "--history-url", "history.db"], "--history-url",
                 id="db-upgrade-history-not-a-url"),
    pytest.param(["db", "upgrade", "--history-url", f"foo://u:{SECRET}@h/db"], "--history-url",
                 id="db-upgrade-history-unknown-dialect"),
    # history prune
    (["history", "prune", "--older-than", "soon"], "--older-than"),
    (["history", "prune", "--max-rows", "-1"], "--max-rows"),
    (["history", "prune"], "--older-than"),
    pytest.param(["history", "prune", "--older-than", "1d", "--history-url",
                  f"postgresql://u:{SECRET}@h:abc/db"], "--history-url",
                 id="history-prune-history-port-not-a-number"),
]


@pytest.mark.parametrize(("args", "flag"), CASES)
def test_bad_flag_value_exits_2_with_one_error_line_naming_the_flag(args, flag, nothing_starts):
    result = CliRunner().invoke(main, args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert (result.exit_code, len(errors)) == (2, 1), result.output
    assert flag in errors[0]
    assert SECRET not in result.output
    assert nothing_starts == []
    assert not isinstance(result.exception, click.exceptions.Abort)
