"""Child processes of the exporter (the history writer, the AMQP reader): a fresh Python
running one of this package's modules, talking to the exporter over a socket.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

#: The directory holding this package: first on a child's ``sys.path``.
_ROOT = str(Path(__file__).resolve().parents[1])


def start_child(module: str) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -c`` running ``module``'s ``main()`` in a session of its own (a
    terminal's Ctrl-C or a signal to the exporter's process group does not reach it: the
    exporter decides when it ends), its standard input a socket to this process; return the
    process and this end of the socket (:mod:`multiprocessing.connection` framing).

    The child imports this very package first, not an ``exporter`` folder in the working
    directory. What it needs to know goes as messages on the socket, never on its command
    line (``ps`` shows that to every user).

    Raises:
        OSError: the socket or the process could not be made.

    """
    here, there = socket.socketpair()
    code = f"import sys; sys.path.insert(0, {_ROOT!r}); import {module} as m; m.main()"
    try:
        with there:
            process = subprocess.Popen([sys.executable, "-c", code], stdin=there.fileno(),
                                       start_new_session=True)
    except BaseException:
        here.close()
        raise
    return process, Connection(here.detach())
