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
    ``close()`` cuts every connection and refuses new ones until ``start()`` again."""

    def __init__(self, upstream: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        server = self._server  # close() forgets it; this thread ends with it
        assert server is not None
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
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

    def close(self) -> None:
        for sock in [*self._sockets, *([self._server] if self._server else [])]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()
        self._server = None
