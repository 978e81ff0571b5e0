"""Bearer-token authentication of every request under ``/api/v1`` (an ASGI middleware).

- No token configured (neither ``--api-token`` nor ``--api-token-file``): **403** for every
  request, saying how to set one — an API that anyone on the network could use to re-run or
  kill tasks is never on by default.
- ``Authorization`` missing, not ``Bearer``, or the wrong token: **401** with
  ``WWW-Authenticate: Bearer realm="celery-jobmon"`` (plus ``error="invalid_token"`` for a
  wrong one, RFC 6750).
- The comparison is :func:`hmac.compare_digest` on bytes (constant time in the token's
  content); the token is never logged or echoed.

Every request is checked before routing, so unknown paths and ``/api/v1/openapi.json`` need
the token too. ``/metrics``, ``/healthz`` and ``/readyz`` live outside this app and stay open.
"""

from __future__ import annotations

import enum
import hmac
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from actions.http.problems import problem_response

REALM = "celery-jobmon"
HOW_TO_SET = ("the action API is disabled: start `celery-jobmon serve` with an API token in "
              "JOBMON_API_TOKEN (or --api-token-file PATH / JOBMON_API_TOKEN_FILE; "
              "e.g. `export JOBMON_API_TOKEN=$(openssl rand -hex 32)`) and send it as "
              "`Authorization: Bearer <token>`")
#: The actor recorded in the audit trail for requests with the (single) API token.
API_ACTOR = "api"


class Verdict(enum.Enum):
    """Outcome of :func:`authorize`."""

    OK = "ok"
    NOT_CONFIGURED = "not-configured"
    MISSING = "missing"
    INVALID = "invalid"


def authorize(configured: bytes | None, header: bytes | None) -> Verdict:
    """Check an ``Authorization`` header value against the configured token.

    The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
    """
    if configured is None:
        return Verdict.NOT_CONFIGURED
    if header is None:
        return Verdict.MISSING
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return Verdict.MISSING
    if hmac.compare_digest(credentials.strip(), configured):
        return Verdict.OK
    return Verdict.INVALID


class BearerAuth:
    """ASGI middleware answering 403/401 problems unless :func:`authorize` says OK.

    Args:
        app: the wrapped ASGI app.
        token: the configured token, or ``None`` (API disabled).

    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorised HTTP requests on; answer the others with a problem."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        verdict = authorize(self._token, header)
        if verdict is Verdict.OK:
            await self.app(scope, receive, send)
            return
        if verdict is Verdict.NOT_CONFIGURED:
            response = problem_response(403, "Action API disabled", HOW_TO_SET,
                                        slug="api-disabled")
        elif verdict is Verdict.MISSING:
            response = problem_response(
                401, "Authentication required",
                "send the API token as `Authorization: Bearer <token>`", slug="unauthenticated",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        else:
            response = problem_response(
                401, "Invalid token", "the bearer token is not the configured API token",
                slug="invalid-token",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'})
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    headers: Any = scope.get("headers") or ()
    for key, value in headers:
        if key.lower() == name:
            return bytes(value)
    return None
