"""Logging set-up: one line per record, ``key=value`` text or JSON (``--log-format``)."""

from __future__ import annotations

import json
import logging
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterable

from exporter.secrets import RedactingFormatter


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ``ts`` (ISO 8601 UTC), ``level``, ``logger``,
    ``message`` and, when present, ``exc_info`` as text.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class Throttled:
    """Log lines that a lasting condition repeats (one per event, one per poll round): the
    first of each ``key`` is logged at once; later ones within ``interval`` seconds are only
    counted, and the next one logged after that says how many were held back
    (``repeated=N``). A line per event from a misconfigured worker would bury every other line
    of the log.

    Args:
        logger: where the lines go.
        interval: seconds between two lines of one key.
        clock: monotonic seconds (injected for tests).

    """

    def __init__(self, logger: logging.Logger, interval: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` at ``level`` unless a line of ``key`` went out less than
        ``interval`` seconds ago (then count it).
        """
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            message += " repeated=%d"
            args = (*args, held)
        self._logger.log(level, message, *args)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (``""`` when it has none): drivers and
    SQLAlchemy append SQL, parameters (which may hold task arguments) and links on more lines.
    """
    text = str(exc)
    return text.splitlines()[0] if text else ""


#: A redis-py client as redis-py's Sentinel errors print it (``No master found for 'm' :
#: <redis.client.Redis(<…(<…Connection(db=0,…,host=h,port=26379,…)>)>)> - ConnectionError``),
#: about 1 KB per sentinel; :func:`describe` keeps ``sentinel h:26379``.
_CLIENT_DUMP = re.compile(r"<redis\.client\.Redis\(.*?\bhost=([^,]*),port=(\d+).*?\)>(?= - )")


def describe(exc: BaseException) -> str:
    """``ClassName: first line`` of an exception (``ClassName`` alone when it has no message),
    for log lines, problem details and command-line errors. No secrets: callers pass exceptions
    of clients that mask URLs, and the log formatter redacts what is left. redis-py's client
    dumps in Sentinel errors are cut to ``sentinel host:port``.
    """
    text = _CLIENT_DUMP.sub(r"sentinel \1:\2", first_line(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: What to do about a certificate the exporter does not trust (appended to :func:`tls_problem`).
TLS_ADVICE = ("trust the broker's CA as the workers do: ssl_ca_certs=/path/ca.pem in the broker "
              "URL (rediss://host:port/db?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem), "
              "and check the host name the certificate is for")


def tls_problem(exc: BaseException) -> str | None:
    """What went wrong in the TLS handshake behind ``exc`` (redis-py, kombu and amqp wrap the
    ``ssl`` error: the chain of causes is searched), or ``None`` when it was no TLS error.

    ``certificate verify failed: self-signed certificate in certificate chain; trust …``
    (:data:`TLS_ADVICE` follows a verification failure), or ``TLS handshake failed:
    WRONG_VERSION_NUMBER`` (e.g. TLS to a port that speaks plain text).
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or first_line(cause)
            return f"certificate verify failed: {reason}; {TLS_ADVICE}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or first_line(cause)}"
        cause = cause.__cause__ or cause.__context__
    return None


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Send every log record to stderr at ``level`` (DEBUG/INFO/WARNING/ERROR) as ``fmt``
    (``text`` or ``json``), replacing handlers set before; any of ``secrets`` appearing in a
    line (message, arguments or traceback, from any library) is replaced by ``**``.
    """
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(
            "ts=%(asctime)s.%(msecs)03dZ level=%(levelname)s logger=%(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
        formatter.converter = time.gmtime
    handler.setFormatter(RedactingFormatter(formatter, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
