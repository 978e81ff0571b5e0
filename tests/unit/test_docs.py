"""The README documents every metric family and every `serve` flag with its env var."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from exporter.cli.commands import main
from exporter.metrics import catalogue as metrics

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("spec", metrics.CATALOGUE, ids=lambda s: s.name)
def test_readme_lists_every_metric_family(spec):
    exposed = "celery_" + spec.name + ("_info" if spec.kind == "info" else "")
    assert f"`{exposed}`" in README


def _serve_options():
    command = main.commands["serve"]
    return [p for p in command.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("option", _serve_options(), ids=lambda o: o.name)
def test_readme_lists_every_serve_flag_with_its_env_var(option):
    flag = option.opts[0]
    assert f"`{flag}" in README, flag
    envvars = option.envvar if isinstance(option.envvar, list) else [option.envvar]
    for env in envvars:
        assert f"`{env}`" in README, env
