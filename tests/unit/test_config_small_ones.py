"""Issue 19's small ones: JSON transport options with spaces in the environment, a ``+`` scheme
kombu would half-ignore, and Sentinel errors without redis-py's client dumps.
"""

from __future__ import annotations

import pytest
import redis.sentinel
from click.testing import CliRunner
from redis.backoff import NoBackoff
from redis.retry import Retry

from exporter import config as c
from exporter.cli import options
from exporter.cli.commands import main
from exporter.logs import describe
from tests.support.network import free_port


def test_json_transport_options_with_spaces_from_the_environment(monkeypatch):
    # Before: split at every space ('sentinel_kwargs={"password":' ...): "must be JSON".
    monkeypatch.setenv("JOBMON_BROKER_TRANSPORT_OPTION",
                       'global_keyprefix=app1: sentinel_kwargs={"password": "pw x", '
                       '"socket_timeout": 1}\n  priority_steps=[0, 3, 6, 9]  sep=:')
    ctx = main.commands["serve"].make_context("serve", [])
    assert options.settings_from(dict(ctx.params)).transport_options == {
        "global_keyprefix": "app1:", "sentinel_kwargs": {"password": "pw x", "socket_timeout": 1},
        "priority_steps": [0, 3, 6, 9], "sep": ":"}


@pytest.mark.parametrize(("text", "entries"), [
    ("", []),
    ("a=1   b=2", ["a=1", "b=2"]),
    ('k={"a": [1, {"b": "c d"}]} z=1', ['k={"a": [1, {"b": "c d"}]}', "z=1"]),
    ('bad={"a": 1 z=1', ['bad={"a":', "1", "z=1"]),  # not JSON: split, refused later
    ("novalue x=[1, 2]", ["novalue", "x=[1, 2]"]),
])
def test_split_transport_options(text, entries):
    assert c.split_transport_options(text) == entries


@pytest.mark.parametrize("url", ["redis+x://127.0.0.1:6379/0", "amqp+tls://guest@h//"])
def test_a_plus_scheme_kombu_would_half_ignore_is_refused(url):
    # Before: accepted, and kombu used redis:// (amqp://) with the rest ignored.
    result = CliRunner().invoke(main, ["check", "--broker-url", url])
    assert result.exit_code == 2
    scheme = url.split("://")[0]
    assert f"--broker-url: unknown scheme '{scheme}': kombu takes `+` only in " \
           "redis+socket:// (a Unix socket) and sqla+<dialect>://" in result.output


@pytest.mark.parametrize("url", ["redis+socket:///run/redis.sock", "sqla+sqlite:///x.db"])
def test_the_plus_schemes_kombu_knows_are_accepted(url):
    assert c.broker_url_problems(url) == []


def test_sentinel_errors_name_the_sentinels_not_their_client_dumps():
    ports = [free_port(), free_port()]
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", p) for p in ports],
                                       sentinel_kwargs={"retry": Retry(NoBackoff(), 0)})
    with pytest.raises(redis.sentinel.MasterNotFoundError) as caught:
        sentinel.discover_master("mymaster")
    assert len(str(caught.value)) > 1500  # what redis-py writes
    text = describe(caught.value)
    assert text.startswith(
        f"MasterNotFoundError: No master found for 'mymaster' : sentinel 127.0.0.1:{ports[0]} - ")
    assert f", sentinel 127.0.0.1:{ports[1]} - " in text
    assert "redis.client.Redis" not in text and len(text) < 300, text
