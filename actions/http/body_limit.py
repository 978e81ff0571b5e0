"""Request body size limit of the action API (an ASGI middleware): **413** problem beyond
``--api-max-body-bytes``.

A ``Content-Length`` above the limit is refused before anything is read; a body without one
(chunked) is counted while the app reads it and refused as soon as it passes the limit, so a
client can never make the exporter buffer more than the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actions.http.problems import problem_response


class BodyLimit:
    """ASGI middleware refusing request bodies larger than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"request bodies are limited to {self.max_bytes} bytes (--api-max-body-bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a declared oversize body; count an undeclared one while it is read."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers") or ():
            if key.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await problem_response(400, detail="invalid Content-Length")(
                        scope, receive, send)
                    return
                if declared > self.max_bytes:
                    await problem_response(413, detail=self._detail())(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTP exceptions from reading the body; the app's
                    # handler turns it into the 413 problem.
                    raise HTTPException(413, detail=self._detail())
            return message

        await self.app(scope, counting_receive, send)
