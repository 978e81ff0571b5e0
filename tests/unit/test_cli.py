"""The `celery-jobmon` command line: bad values fail before anything starts, naming the flag."""

from __future__ import annotations

import os
from typing import Any

import click
import pytest
from click.testing import CliRunner

from exporter import config as c
from exporter.cli import options
from exporter.cli.commands import main


@pytest.fixture(autouse=True)
def never_serve(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the server: these tests must fail in validation, before anything starts."""
    import exporter.app

    started: list[Any] = []
    monkeypatch.setattr(exporter.app, "serve", started.append)
    return started


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave no JOBMON_* or CELERY_BROKER_URL from the developer's shell in play."""
    for name in list(os.environ):
        if name.startswith("JOBMON_") or name == "CELERY_BROKER_URL":
            monkeypatch.delenv(name)


def invoke(args: list[str], env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, args, env=env)


def error_line(result: click.testing.Result) -> str:
    """The ``Error: ...`` part of click's usage error (the lines after ``Error:``)."""
    _, _, message = result.output.partition("Error: ")
    return message.rstrip("\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--worker-timeout", "abc"],
     "Invalid value for '--worker-timeout' (env var: 'JOBMON_WORKER_TIMEOUT'): invalid duration "
     "'abc' (examples: 30s, 5m, 24h, 7d)"),
    (["--worker-retention", "forever"],
     "Invalid value for '--worker-retention' (env var: 'JOBMON_WORKER_RETENTION'): invalid "
     "duration 'forever' (examples: 30s, 5m, 24h, 7d)"),
    (["--runtime-buckets", "1,0.5"],
     "Invalid value for '--runtime-buckets' (env var: 'JOBMON_RUNTIME_BUCKETS'): invalid bucket "
     "list '1,0.5': bounds must increase"),
    (["--queue-wait-buckets", "a"],
     "Invalid value for '--queue-wait-buckets' (env var: 'JOBMON_QUEUE_WAIT_BUCKETS'): invalid "
     "bucket list 'a': comma-separated seconds"),
    (["--listen", "nohost"],
     "Invalid value for '--listen' (env var: 'JOBMON_LISTEN'): invalid listen address 'nohost': "
     "host:port expected"),
    (["--max-task-names", "0"],
     "Invalid value for '--max-task-names' (env var: 'JOBMON_MAX_TASK_NAMES'): 0 is not in the "
     "range x>=1."),
    (["--max-tasks-in-memory", "-5"],
     "Invalid value for '--max-tasks-in-memory' (env var: 'JOBMON_MAX_TASKS_IN_MEMORY'): -5 is "
     "not in the range x>=1."),
    (["--broker-transport-option", "novalue"],
     "--broker-transport-option: invalid transport option 'novalue': key=value expected"),
    (["--broker-transport-option", "a=1", "--broker-transport-option", "=2"],
     "--broker-transport-option: invalid transport option '=2': key=value expected"),
])
def test_bad_option_value_exits_2_naming_the_option(args: list[str], message: str,
                                                    never_serve: list[Any]) -> None:
    result = invoke(["serve", *args])
    assert result.exit_code == 2
    assert error_line(result) == message
    assert never_serve == []


def test_bad_value_from_the_environment_names_the_option(never_serve: list[Any]) -> None:
    result = invoke(["serve"], env={"JOBMON_WORKER_TIMEOUT": "abc"})
    assert result.exit_code == 2
    assert error_line(result) == (
        "Invalid value for '--worker-timeout' (env var: 'JOBMON_WORKER_TIMEOUT'): invalid "
        "duration 'abc' (examples: 30s, 5m, 24h, 7d)")
    assert never_serve == []


def test_bad_transport_option_from_the_environment_names_the_option() -> None:
    result = invoke(["serve"], env={"JOBMON_BROKER_TRANSPORT_OPTION": "a=1 novalue"})
    assert result.exit_code == 2
    assert error_line(result) == (
        "--broker-transport-option: invalid transport option 'novalue': key=value expected")


def test_settings_problems_are_reported_together(never_serve: list[Any]) -> None:
    result = invoke(["serve", "--worker-timeout", "0", "--metric-prefix", "9x",
                     "--broker-url", "localhost"])
    assert result.exit_code == 2
    assert error_line(result) == (
        "--broker-url: a URL such as redis://host:6379/0 or amqp://user@host//\n"
        "--metric-prefix: letters, digits, underscores; no leading digit\n"
        "--worker-timeout: greater than 0")
    assert never_serve == []


def test_retention_shorter_than_timeout_is_refused() -> None:
    result = invoke(["serve", "--worker-timeout", "5m", "--worker-retention", "60s"])
    assert result.exit_code == 2
    assert error_line(result) == "--worker-retention: at least --worker-timeout"


def test_unknown_log_level_names_the_option() -> None:
    result = invoke(["serve", "--log-level", "LOUD"])
    assert result.exit_code == 2
    assert error_line(result).startswith(
        "Invalid value for '--log-level' (env var: 'JOBMON_LOG_LEVEL'): 'LOUD' is not one of")


def test_serve_help_lists_every_option_with_its_env_var() -> None:
    result = invoke(["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    serve = main.commands["serve"]
    options = [p for p in serve.params if isinstance(p, click.Option) and p.name != "help"]
    for option in options:
        assert option.opts[0] in text
        envvars = option.envvar if isinstance(option.envvar, list) else [option.envvar]
        assert f"env var: {', '.join(envvars)}" in text, option.name


@pytest.mark.parametrize(("option", "envvar", "default"), [
    ("--broker-url", "JOBMON_BROKER_URL, CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    ("--listen", "JOBMON_LISTEN", "0.0.0.0:9808"),
    ("--worker-timeout", "JOBMON_WORKER_TIMEOUT", "30s"),
    ("--worker-retention", "JOBMON_WORKER_RETENTION", "24h"),
    ("--event-queue-ttl", "JOBMON_EVENT_QUEUE_TTL", "5m"),
    ("--max-task-names", "JOBMON_MAX_TASK_NAMES", "1000"),
    ("--metric-prefix", "JOBMON_METRIC_PREFIX", "celery_"),
])
def test_help_shows_env_var_and_default(option: str, envvar: str, default: str) -> None:
    text = " ".join(invoke(["serve", "--help"]).output.split())
    section = text[text.index(option + " "):]
    assert f"[env var: {envvar}; default: {default}" in section[:400]


def test_every_option_reads_jobmon_option_from_the_environment() -> None:
    serve = main.commands["serve"]
    envvars = {p.opts[0]: p.envvar for p in serve.params if isinstance(p, click.Option)
               and p.name != "help"}
    expected = {opt: "JOBMON_" + opt.lstrip("-").replace("-", "_").upper() for opt in envvars}
    expected["--broker-url"] = ["JOBMON_BROKER_URL", "CELERY_BROKER_URL"]
    assert envvars == expected
    assert envvars["--worker-timeout"] == "JOBMON_WORKER_TIMEOUT"
    assert envvars["--broker-transport-option"] == "JOBMON_BROKER_TRANSPORT_OPTION"
    assert envvars["--enable-events"] == "JOBMON_ENABLE_EVENTS"


@pytest.mark.parametrize("seconds", [
    c.DEFAULT_WORKER_TIMEOUT, c.DEFAULT_WORKER_RETENTION, c.DEFAULT_EVENT_QUEUE_TTL,
    c.DEFAULT_EVENT_QUEUE_EXPIRES, c.DEFAULT_INSPECT_INTERVAL, c.DEFAULT_INSPECT_TIMEOUT,
    c.DEFAULT_RECONNECT_MAX_INTERVAL, 0.5, 90.0, 7 * 86400.0,
])
def test_shown_default_duration_parses_back_to_the_same_seconds(seconds: float) -> None:
    assert c.parse_duration(options.seconds(seconds)) == seconds


def test_shown_default_buckets_parse_back_to_the_defaults() -> None:
    assert c.parse_buckets(options.buckets_text(c.DEFAULT_RUNTIME_BUCKETS)) == \
        c.DEFAULT_RUNTIME_BUCKETS
    assert c.parse_buckets(options.buckets_text(c.DEFAULT_QUEUE_WAIT_BUCKETS)) == \
        c.DEFAULT_QUEUE_WAIT_BUCKETS


def test_valid_options_become_one_settings_object() -> None:
    # Parse only (make_context does not run the command): nothing starts.
    ctx = main.commands["serve"].make_context("serve", [
        "--listen", "[::1]:9900", "--worker-timeout", "1m",
        "--broker-transport-option", "visibility_timeout=3600",
        "--broker-transport-option", "global_keyprefix=app1:",
        "--accept-content", "json, msgpack", "--runtime-buckets", "0.1,1,10",
        "--log-level", "debug", "--broker-url", "amqp://guest@rabbit//",
    ])
    assert options.settings_from(dict(ctx.params)) == c.Settings(
        broker_url="amqp://guest@rabbit//",
        listen=("::1", 9900),
        transport_options={"visibility_timeout": 3600, "global_keyprefix": "app1:"},
        accept_content=("json", "msgpack"),
        log_level="DEBUG",
        runtime_buckets=(0.1, 1.0, 10.0),
        worker_timeout=60.0,
    )


def test_defaults_become_the_default_settings() -> None:
    ctx = main.commands["serve"].make_context("serve", [])
    assert options.settings_from(dict(ctx.params)) == c.Settings()
