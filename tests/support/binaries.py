"""Tests that need a program outside Python (promtool, prometheus, amtool, docker-compose,
unshare...): :func:`require_binary` gives its path, and :func:`unavailable` handles what is
missing the same way everywhere — the test is skipped on a developer's machine, and fails
when ``CI=true`` so CI cannot go green without running it.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """``True`` when the environment variable ``CI`` is ``true`` (any case)."""
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the running test because of ``reason``, or fail it with ``CI=true``."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def require_binary(name: str, package: str | None = None) -> str:
    """The path of the program ``name`` on ``PATH``; when it is missing, :func:`unavailable`
    (skip, or fail with ``CI=true``) with an install hint naming the Debian ``package``
    (``name`` itself unless given).
    """
    path = shutil.which(name)
    if path:
        return path
    unavailable(f"{name} not found: apt-get install -y --no-install-recommends "
                f"{package or name}")
