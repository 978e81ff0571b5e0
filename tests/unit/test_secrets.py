from __future__ import annotations

import logging

import pytest

from exporter.config import Settings
from exporter.secrets import RedactingFormatter, mask_url, option_passwords, url_passwords


@pytest.mark.parametrize("url,expected", [
    ("redis://:pw@a:6379/0", "redis://:**@a:6379/0"),
    ("redis://:pw@a:6379/0;redis://:pw@b:6379/0", "redis://:**@a:6379/0;redis://:**@b:6379/0"),
    ("amqp://user:s3cret@h:5672//", "amqp://user:**@h:5672//"),
    ("sentinel://:pw@a:26379;sentinel://:pw@b:26379",
     "sentinel://:**@a:26379/;sentinel://:**@b:26379/"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_mask_url_masks_every_password_of_a_failover_list(url, expected):
    assert mask_url(url) == expected


def test_url_passwords_include_percent_decoded_forms():
    assert url_passwords("redis://:p%40ss@a/0;amqp://u:other@b//") == {
        "p%40ss", "p@ss", "other"}


def test_option_passwords_find_nested_sentinel_kwargs():
    options = {"master_name": "m", "sentinel_kwargs": {"password": "sentinel-secret"},
               "password": "top"}
    assert option_passwords(options) == {"sentinel-secret", "top"}


def test_settings_secrets_cover_broker_url_and_transport_options():
    settings = Settings(broker_url="redis://:brokerpw@a/0",
                        transport_options={"sentinel_kwargs": {"password": "spw"}})
    assert settings.secrets() == {"brokerpw", "spw"}


def test_redacting_formatter_hides_secrets_in_message_args_and_traceback():
    formatter = RedactingFormatter(logging.Formatter("%(message)s"), {"hunter2"})
    try:
        raise ValueError("connect to redis://:hunter2@x failed")
    except ValueError:
        import sys
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "url=%s", ("x:hunter2",),
                                   sys.exc_info())
    text = formatter.format(record)
    assert "hunter2" not in text
    assert "url=x:**" in text
    assert "redis://:**@x failed" in text
