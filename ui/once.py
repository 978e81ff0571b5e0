"""Forms that act once: a confirmation form carries a token kept in the session, and its
POST consumes it, so that reloading the answer page (the browser posts the form again) or a
double click cannot send a retry twice.

Tokens live in the signed session cookie (``{"once": {purpose: token}}``), at most
:data:`MAX_PENDING` of them (the oldest dropped), one per purpose (``retry:<task id>``,
``bulk-retry``): opening the confirmation again replaces it.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request

SESSION_KEY = "once"
MAX_PENDING = 8


def issue(request: Request, purpose: str) -> str:
    """A new token for ``purpose``, kept in the session until :func:`consume`."""
    pending = dict(request.session.get(SESSION_KEY) or {})
    pending.pop(purpose, None)
    while len(pending) >= MAX_PENDING:
        pending.pop(next(iter(pending)))
    token = secrets.token_urlsafe(16)
    pending[purpose] = token
    request.session[SESSION_KEY] = pending
    return token


def consume(request: Request, purpose: str, token: str | None) -> bool:
    """``True`` (and the token forgotten) when ``token`` is the one issued for ``purpose``;
    ``False`` when it was used already, replaced, or never issued.
    """
    pending = dict(request.session.get(SESSION_KEY) or {})
    expected = pending.get(purpose)
    if not token or not isinstance(expected, str) or not secrets.compare_digest(expected,
                                                                              token):
        return False
    del pending[purpose]
    request.session[SESSION_KEY] = pending
    return True
