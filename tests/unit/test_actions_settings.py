"""Settings of the action API: token from a flag, the environment or a file; validation of
every new option together; the token and backend password are secrets."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from exporter import config as c
from exporter.cli import options
from exporter.cli.commands import main

TOKEN = "file-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JOBMON_") or name.startswith("CELERY_"):
            monkeypatch.delenv(name)


def parse(*args: str) -> c.Settings:
    ctx = main.commands["serve"].make_context("serve", list(args))
    return options.settings_from(dict(ctx.params))


def test_defaults_have_no_token_and_three_manual_retries():
    settings = parse()
    assert (settings.api_token, settings.max_manual_retries, settings.result_backend,
            settings.api_max_body_bytes) == (None, 3, None, 65536)


def test_token_file_is_read_and_stripped(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"\n  {TOKEN}  \n")
    assert parse("--api-token-file", str(path)).api_token == TOKEN


def test_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("JOBMON_API_TOKEN", TOKEN)
    monkeypatch.setenv("JOBMON_MAX_MANUAL_RETRIES", "5")
    settings = parse()
    assert (settings.api_token, settings.max_manual_retries) == (TOKEN, 5)


def test_token_and_backend_password_are_secrets():
    settings = c.Settings(api_token=TOKEN, result_backend="redis://:pw-backend@h:6379/1")
    assert {TOKEN, "pw-backend"} <= settings.secrets()
    assert TOKEN not in repr(settings)


def test_api_problems_are_reported_together_with_the_others(tmp_path):
    result = CliRunner().invoke(main, [
        "serve", "--api-token", "short", "--api-token-file", str(tmp_path / "missing"),
        "--result-backend", "nowhere", "--worker-timeout", "0"])
    assert result.exit_code == 2
    message = result.output.partition("Error: ")[2]
    assert message.splitlines() == [
        "--worker-timeout: greater than 0",
        "--api-token: at least 16 printable ASCII characters without spaces (e.g. `openssl "
        "rand -hex 32`)",
        "--result-backend: a Celery result backend URL such as redis://host:6379/1",
        "--api-token / --api-token-file: give one, not both",
    ]


def test_unreadable_token_file_names_the_flag(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--api-token-file", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "--api-token-file: cannot read" in result.output
    assert "No such file or directory" in result.output


@pytest.mark.parametrize("token", ["with space inside-0123456789", "ünïcødé-0123456789abc", ""])
def test_unusable_tokens_are_refused(token):
    assert c.Settings(api_token=token).problems() == [
        "--api-token: at least 16 printable ASCII characters without spaces (e.g. `openssl "
        "rand -hex 32`)"]


def test_action_commands_take_no_per_invocation_env_vars():
    for name in ("retry", "cancel", "tasks"):
        command = main.commands[name]
        per_call = [p for p in command.params if p.name in (
            "dry_run", "include_revoked", "terminate", "signal_name", "states", "queue",
            "as_json", "limit")]
        assert per_call and all(p.envvar is None for p in per_call), name
