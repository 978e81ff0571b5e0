from __future__ import annotations

import pytest

from exporter import config as c
from exporter.config import (
    Settings,
    parse_buckets,
    parse_duration,
    parse_listen,
    parse_transport_options,
)

# -- parse_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5),
    ("30s", 30.0),
    ("5m", 300.0),
    ("24h", 86400.0),
    ("7d", 604800.0),
    ("2w", 1209600.0),
    ("1.5h", 5400.0),
    ("90", 90.0),
    ("0", 0.0),
    (" 10s ", 10.0),
])
def test_duration_units_convert_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "-5s", "5y", "5 minutes", "1e3", ".5s", "5S", "s"])
def test_bad_duration_raises_value_error_quoting_the_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"invalid duration {text!r} (examples: 30s, 5m, 24h, 7d)"


# -- parse_buckets ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "bounds"), [
    ("0.01,0.1,1,10", (0.01, 0.1, 1.0, 10.0)),
    (" 1, 2 ,3 ", (1.0, 2.0, 3.0)),
    ("1,,2,", (1.0, 2.0)),
    ("0.005", (0.005,)),
])
def test_buckets_parse_to_increasing_floats(text: str, bounds: tuple[float, ...]) -> None:
    assert parse_buckets(text) == bounds


@pytest.mark.parametrize(("text", "message"), [
    ("1,0.5", "invalid bucket list '1,0.5': bounds must increase"),
    ("1,1", "invalid bucket list '1,1': bounds must increase"),
    ("0,1", "invalid bucket list '0,1': bounds must be positive and finite"),
    ("-1,1", "invalid bucket list '-1,1': bounds must be positive and finite"),
    ("1,inf", "invalid bucket list '1,inf': bounds must be positive and finite"),
    ("nan", "invalid bucket list 'nan': bounds must be positive and finite"),
    ("a,b", "invalid bucket list 'a,b': comma-separated seconds"),
    ("1;2", "invalid bucket list '1;2': comma-separated seconds"),
    ("", "bucket list is empty"),
    (" , ", "bucket list is empty"),
])
def test_bad_buckets_raise_value_error_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_buckets(text)
    assert str(info.value) == message


def test_default_buckets_cover_5ms_to_1h_in_increasing_order() -> None:
    assert c.DEFAULT_RUNTIME_BUCKETS[0] == 0.005
    assert c.DEFAULT_RUNTIME_BUCKETS[-1] == 3600.0
    text = ",".join(repr(b) for b in c.DEFAULT_RUNTIME_BUCKETS)
    assert parse_buckets(text) == c.DEFAULT_RUNTIME_BUCKETS


# -- parse_transport_options ------------------------------------------------------------------


def test_transport_options_get_int_float_bool_and_str_values() -> None:
    options = parse_transport_options([
        "visibility_timeout=3600",
        "ratio=0.5",
        "confirm_publish=true",
        "fanout_patterns=False",
        "global_keyprefix=app1:",
        "sentinel_url=redis://h:1/0?a=b",
        " spaced = 7 ",
        "empty=",
    ])
    assert options == {
        "visibility_timeout": 3600,
        "ratio": 0.5,
        "confirm_publish": True,
        "fanout_patterns": False,
        "global_keyprefix": "app1:",
        "sentinel_url": "redis://h:1/0?a=b",
        "spaced": 7,
        "empty": "",
    }
    assert type(options["visibility_timeout"]) is int
    assert type(options["ratio"]) is float


def test_later_transport_option_wins() -> None:
    assert parse_transport_options(["a=1", "a=2"]) == {"a": 2}


def test_no_transport_options_give_an_empty_dict() -> None:
    assert parse_transport_options([]) == {}


@pytest.mark.parametrize("pair", ["novalue", "=x", " =x"])
def test_transport_option_without_key_equals_value_raises(pair: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_transport_options(["ok=1", pair])
    assert str(info.value) == f"invalid transport option {pair!r}: key=value expected"


# -- parse_listen -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "address"), [
    ("0.0.0.0:9808", ("0.0.0.0", 9808)),
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9808", ("::1", 9808)),
    ("[::]:65535", ("::", 65535)),
    (":9808", ("0.0.0.0", 9808)),
])
def test_listen_parses_host_and_port(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address


@pytest.mark.parametrize("text", [
    "nohost", "host:", "host:http", "host:65536", "host:-1", "9808", "", "::1", "::1:9808",
    "[::1]", "host:\u00b2",
])
def test_bad_listen_address_raises_value_error_quoting_it(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen(text)
    assert str(info.value) == f"invalid listen address {text!r}: host:port expected"


# -- Settings ---------------------------------------------------------------------------------


def test_default_settings_have_no_problems() -> None:
    settings = Settings()
    assert settings.problems() == []
    assert settings.validate() is settings


def test_log_level_is_accepted_in_any_case() -> None:
    assert Settings(log_level="debug").problems() == []


def test_settings_report_every_problem_at_once() -> None:
    settings = Settings(
        broker_url="localhost",
        log_level="LOUD",
        log_format="xml",
        metric_prefix="9x",
        max_tasks_in_memory=0,
        max_task_names=0,
        worker_timeout=0.0,
        worker_retention=-1.0,
        inspect_interval=0.0,
        accept_content=(),
    )
    problems = [
        "--broker-url: a URL such as redis://host:6379/0 or amqp://user@host//",
        "--log-level: one of DEBUG, INFO, WARNING, ERROR",
        "--log-format: one of text, json",
        "--metric-prefix: letters, digits, underscores; no leading digit",
        "--max-tasks-in-memory: at least 1",
        "--max-task-names: at least 1",
        "--worker-timeout: greater than 0",
        "--worker-retention: at least --worker-timeout",
        "--inspect-interval / --inspect-timeout: greater than 0",
        "--accept-content: at least one content type",
    ]
    assert settings.problems() == problems
    with pytest.raises(ValueError) as info:
        settings.validate()
    assert str(info.value) == "\n".join(problems)


def test_retention_shorter_than_timeout_is_a_problem() -> None:
    assert Settings(worker_timeout=60.0, worker_retention=30.0).problems() == [
        "--worker-retention: at least --worker-timeout",
    ]


def test_amqp_reader_is_process_or_thread() -> None:
    assert Settings(amqp_reader="fork").problems() == [
        "--amqp-reader: one of process, thread",
    ]


def test_history_writer_is_process_or_thread() -> None:
    assert Settings(history_writer="fork").problems() == [
        "--history-writer: one of process, thread",
    ]


def test_inspect_timeout_of_zero_is_a_problem() -> None:
    assert Settings(inspect_timeout=0.0).problems() == [
        "--inspect-interval / --inspect-timeout: greater than 0",
    ]


def test_event_queue_ttl_of_zero_is_a_problem() -> None:
    # A TTL of 0 would make RabbitMQ drop every event before the exporter reads it.
    assert Settings(event_queue_ttl=0.0).problems() == [
        "--event-queue-ttl / --event-queue-expires: greater than 0",
    ]


def test_reconnect_max_interval_of_zero_is_a_problem() -> None:
    assert Settings(reconnect_max_interval=0.0).problems() == [
        "--reconnect-max-interval: greater than 0",
    ]
