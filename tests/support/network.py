"""Sockets for tests: :func:`free_port` for a process of the test's own, and :class:`TcpProxy`
to cut a process off a server (PostgreSQL, RabbitMQ) and let it back, without touching the
server other tests share.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Iterator

#: The shared PostgreSQL server (trust authentication, user ``postgres``).
PG_HOST, PG_PORT = "127.0.0.1", 5432

#: :func:`free_port` hands out ports from 20000 up, below Linux's ephemeral range (32768 on),
#: a block of ``PORT_BLOCK`` for each pytest-xdist worker (12 blocks, then they wrap).
FIRST_PORT, PORT_BLOCK = 20000, 1000


def _port_cycle() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 0
    first = FIRST_PORT + index % 12 * PORT_BLOCK
    return itertools.cycle(range(first, first + PORT_BLOCK))


_PORTS = _port_cycle()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a process of the test's own.

    A port the kernel picked (bind to port 0) was free a moment ago only: another xdist
    worker's next pick, or any outgoing connection, could take it before the test's process
    bound it, and a readiness probe then reached the other process (an exporter that lost
    the race exited; its test waited 60 s on a refused port). So each xdist worker takes the
    next port of a block of its own below the ephemeral range, skipping one it cannot bind.

    Raises:
        OSError: no port of the worker's block could be bound.

    """
    for _ in range(PORT_BLOCK):
        port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in this worker's block of {PORT_BLOCK} from {FIRST_PORT}")


class TcpProxy:
    """Forwards a free local port to ``upstream`` (PostgreSQL by default) while started;
    ``close()`` cuts every connection and refuses new ones until ``start()`` again.

    A connection accepted while ``close()`` runs is cut as well: the accept thread registers
    its sockets under the same lock ``close()`` takes, and drops them once the proxy is closed
    (without that, a connection accepted just before the cut kept running through it).
    """

    def __init__(self, upstream: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._server = socket.create_server(("127.0.0.1", self.port))
            threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # close() closed this listening socket
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                self._cut([client])
                continue
            with self._lock:
                if self._server is not server:  # closed (or restarted) meanwhile
                    pair = [client, upstream]
                else:
                    self._sockets += [client, upstream]
                    pair = []
            if pair:
                self._cut(pair)
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @staticmethod
    def _cut(sockets: list[socket.socket]) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, []
        self._cut([*([server] if server else []), *sockets])
