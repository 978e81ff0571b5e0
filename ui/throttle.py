"""Failed logins slow a password guesser down: :class:`LoginThrottle`.

Each failed login counts against its user name and against its client address in moving
one-minute windows (the ``limits`` library's moving-window limiter, in this process's memory).
While either has reached its limit, the login form answers 429 with ``Retry-After`` without
checking the password (no argon2 work for a guesser either); a successful login clears its
user name's count. The counts are per process: each replica keeps its own, and a restart
forgets them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

#: Failed logins allowed per user name in any minute (then 429 until the oldest is a minute old).
PER_USER = "5/minute"
#: Failed logins allowed per client address in any minute (one address guessing many names).
PER_CLIENT = "20/minute"


@dataclass(frozen=True)
class Refusal:
    """Why a login is refused now: ``by`` (``user`` or ``client``) reached its limit
    (``limit``, e.g. ``5 per 1 minute``); ``retry_after``: whole seconds until one more
    attempt is allowed (at least 1).
    """

    by: str
    limit: str
    retry_after: int


class LoginThrottle:
    """Counts failed logins per user name and per client address (module docs).

    Args:
        per_user: failed logins per user name, in ``limits`` notation (``5/minute``).
        per_client: failed logins per client address (``20/minute``).

    """

    def __init__(self, per_user: str = PER_USER, per_client: str = PER_CLIENT) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limits: dict[str, RateLimitItem] = {"user": parse(per_user),
                                                  "client": parse(per_client)}

    def _keys(self, client: str, username: str) -> dict[str, str]:
        return {"user": username, "client": client}

    def refusal(self, client: str, username: str) -> Refusal | None:
        """The :class:`Refusal` of a login by ``username`` from ``client`` now (the longer
        wait when both are over their limit), or ``None``: it may be tried.
        """
        found = None
        for by, key in self._keys(client, username).items():
            item = self._limits[by]
            if self._limiter.test(item, "ui-login", by, key):
                continue
            reset, _ = self._limiter.get_window_stats(item, "ui-login", by, key)
            wait = max(1, math.ceil(reset - time.time()))
            if found is None or wait > found.retry_after:
                found = Refusal(by, str(item), wait)
        return found

    def failed(self, client: str, username: str) -> None:
        """Count a failed login of ``username`` from ``client``."""
        for by, key in self._keys(client, username).items():
            self._limiter.hit(self._limits[by], "ui-login", by, key)

    def succeeded(self, username: str) -> None:
        """Forget ``username``'s failed logins (the client's stay counted)."""
        self._limiter.clear(self._limits["user"], "ui-login", "user", username)
