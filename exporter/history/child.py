"""The history writer process's side (:mod:`exporter.history.process` is the exporter's): a
:class:`~exporter.history.writer.HistoryWriter` fed from the socket that is the process's
standard input, its counters reported back every :data:`STATS_INTERVAL` seconds.
"""

from __future__ import annotations

import logging
import pickle
import signal
import sys
import threading
from multiprocessing.connection import Connection

from exporter.history.writer import HistoryWriter
from exporter.logs import describe

log = logging.getLogger(__name__)

#: Seconds between the child's snapshots of its counters.
STATS_INTERVAL = 0.2


def child_main(conn: Connection) -> None:
    """The child process: a :class:`HistoryWriter` fed from ``conn`` until told to stop.

    Messages in: first ``(url, HistoryWriter options, (log level, log format, secrets),
    sys.path)``; then a pickled list of event dicts (``submit`` each), or a pickled float
    (stop, with that many seconds to write the rest). Messages out: ``(events received,
    HistoryStats, None)`` every :data:`STATS_INTERVAL` seconds, and ``(..., drained)`` once
    the writer stopped (``drained``: :meth:`HistoryWriter.stop`'s answer; what it could not
    write is in the snapshot's ``stop_timeout``). The end of the
    socket (the exporter gone) or a message it cannot read stops the writer too: it writes what
    it holds first.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    url, writer_options, log_config, path = conn.recv()
    sys.path[:] = path  # what the exporter imports from, for the classes of pickled events
    from exporter.history.db import create_history_engine
    from exporter.logs import configure_logging

    configure_logging(*log_config)
    try:
        engine = create_history_engine(url)
        _write(conn, HistoryWriter(engine, **writer_options))
        engine.dispose()
    except Exception:
        log.exception("history writer process failed")
        raise SystemExit(1) from None


def _write(conn: Connection, writer: HistoryWriter) -> None:
    """Feed ``writer`` from ``conn`` and report (see :func:`child_main`)."""
    writer.start()
    send_lock = threading.Lock()  # one sender at a time; `received` matches the writer's stats
    received = 0
    done = threading.Event()

    def report() -> None:
        while not done.wait(STATS_INTERVAL):
            with send_lock:
                if done.is_set():
                    return
                try:
                    conn.send((received, writer.stats(), None))
                except OSError:  # the exporter is gone: the main loop sees it too
                    return

    threading.Thread(target=report, name="history-stats", daemon=True).start()
    timeout = 10.0
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            log.warning("history writer process: the exporter is gone; writing what it had "
                        "sent (what the exporter itself still held is lost with it)")
            break
        except Exception as exc:
            log.error("history writer process: a message could not be read (%s); writing "
                      "what is held and exiting", describe(exc))
            break
        if not isinstance(message, list):
            timeout = message
            break
        with send_lock:
            for event in message:
                writer.submit(event)
            received += len(message)
    drained = writer.stop(timeout)
    with send_lock:
        done.set()
        try:
            conn.send((received, writer.stats(), drained))
        except OSError:
            pass


def main() -> None:
    """The child's entry point: :func:`child_main` on the socket that is its standard input."""
    child_main(Connection(sys.stdin.fileno()))
