"""The action API of a running exporter over HTTP: :class:`Api` (``/api/v1`` calls with a
bearer token) and :func:`problem` (checks an RFC 9457 answer and returns its body).
"""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


class Api:
    """HTTP calls to ``base``/api/v1 with ``Authorization: Bearer token``; ``timeout``:
    seconds per request (a cancel waits up to ``--inspect-timeout`` for the workers).
    """

    def __init__(self, base: str, token: str, timeout: float = 15) -> None:
        self.base = base + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> httpx.Response:
        """``GET path`` with query ``params``."""
        return httpx.get(self.base + path, params=params, headers=self.headers,
                         timeout=self.timeout)

    def post(self, path: str, json: Any = None, **params: Any) -> httpx.Response:
        """``POST path`` with a JSON body and query ``params``."""
        return httpx.post(self.base + path, params=params, json=json, headers=self.headers,
                          timeout=self.timeout)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The body of a problem answer, after checking its status, media type and members.

    Raises:
        AssertionError: another status, media type, or a member missing.

    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"], body
    return body
