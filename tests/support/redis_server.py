"""A Redis of a test's own: :class:`PrivateRedis` runs ``redis-server`` on a free port with
no persistence and any extra arguments, and can be killed and started again (an outage).
Nothing else — another test, another suite running at the same time — flushes or uses it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import redis

from tests.support.network import free_port
from tests.support.waiting import wait_for


class PrivateRedis:
    """A ``redis-server`` on a free port of 127.0.0.1 with extra ``args``
    (``--requirepass``, ``--client-output-buffer-limit``...); :meth:`start` waits for PING.
    A missing ``redis-server`` fails the test (it is a required service, never a skip).
    """

    def __init__(self, *args: str) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install -y redis-server)"
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jobmon-redis-")
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", self.dir, *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.password: str | None = None
        if "--requirepass" in args:
            self.password = args[args.index("--requirepass") + 1]

    def url(self, db: int = 0) -> str:
        """``redis://[:password@]127.0.0.1:<port>/<db>``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: self.client().ping(), 10, message="private redis-server")

    def kill(self) -> None:
        """SIGKILL: clients see the connection drop, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def remove(self) -> None:
        """Kill it and delete its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
