"""Where things are: :data:`ROOT`, the repository checkout the tests run from, and
:func:`temp_log`, the file a subprocess of a test writes its output to.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

#: The repository root (the directory holding ``pyproject.toml``, ``exporter/`` and ``tests/``).
ROOT = Path(__file__).resolve().parents[2]


def temp_log(prefix: str) -> IO[str]:
    """A new text file ``/tmp/<prefix>*.log``, kept after the test (for a failure's message)."""
    return tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False, mode="w+")
