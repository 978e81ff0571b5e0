"""Sockets for tests: :func:`free_port` for a process of the test's own, and :class:`TcpProxy`
to cut a process off a server (PostgreSQL, RabbitMQ) and let it back, without touching the
server other tests share.
"""

from __future__ import annotations

import socket
import threading

#: The shared PostgreSQL server (trust authentication, user ``postgres``).
PG_HOST, PG_PORT = "127.0.0.1", 5432


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
