"""RFC 9457 problem details: the one place where errors become HTTP responses.

Every error of the action API is ``application/problem+json``::

    HTTP/1.1 409 Conflict
    Content-Type: application/problem+json

    {"type": "tag:celery-jobmon,2025:problem:not-eligible", "title": "Task not eligible",
     "status": 409, "detail": "state SUCCESS: only FAILURE tasks are retried ...",
     "reason": "state"}

- :class:`~actions.errors.ActionError` subclasses map by their ``status``/``slug``/``title``;
  their ``extra`` members are added (``reason``).
- Every **400** (FastAPI's request validation errors, never 422, and
  :class:`~actions.errors.InvalidParameter`) has ``errors``: one ``{"loc": [where, parameter],
  "msg": ...}`` per invalid parameter (``where``: ``path``, ``query`` or ``body``), each
  message in words — an identifier's pattern reads as :data:`IDENTIFIER_RULE`, a body that is
  not JSON says what the parser expected and at which line and column. ``detail`` joins them.
- Starlette's HTTP errors (unknown path 404, 405 with ``Allow``) keep their status and headers,
  ``type`` ``about:blank``.
- Anything else is a bug: logged with its traceback, answered 500 without details.

Problem ``type`` URIs are tag URIs (RFC 4151): stable identifiers, not meant to be fetched.
Every ``detail`` is passed through the redactor, so a secret that slipped into an exception
message is shown as ``**``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from actions.errors import ActionError, InvalidParameter
from actions.params import IDENTIFIER_PATTERN, IDENTIFIER_RULE
from exporter.secrets import Redactor

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "tag:celery-jobmon,2025:problem:"
#: How many validation errors a 400 lists.
MAX_ERRORS = 20


class ProblemResponse(JSONResponse):
    """A JSON response with the problem media type."""

    media_type = MEDIA_TYPE


def problem_type(slug: str | None) -> str:
    """The ``type`` URI of a problem slug (``about:blank`` for plain HTTP statuses)."""
    return TYPE_PREFIX + slug if slug else "about:blank"


def problem_body(status: int, title: str | None = None, detail: str | None = None, *,
                 slug: str | None = None, extra: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The problem document: ``type``, ``title`` (default: the status phrase), ``status``,
    ``detail`` and the ``extra`` members that are not ``None``.
    """
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title or _phrase(status),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body.update({k: v for k, v in (extra or {}).items()
                 if v is not None and k not in ("type", "title", "status", "detail")})
    return body


def problem_response(status: int, title: str | None = None, detail: str | None = None, *,
                     slug: str | None = None, headers: Mapping[str, str] | None = None,
                     extra: Mapping[str, Any] | None = None) -> ProblemResponse:
    """A ready ``application/problem+json`` response (see :func:`problem_body`)."""
    return ProblemResponse(problem_body(status, title, detail, slug=slug, extra=extra),
                           status_code=status, headers=dict(headers or {}))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def action_error_body(exc: ActionError, redact: Redactor) -> dict[str, Any]:
    """The problem document of a domain error, its texts masked (the commands' ``--json``
    errors print it too).
    """
    extra = {k: redact(v) if isinstance(v, str) else v for k, v in exc.extra.items()}
    return problem_body(exc.status, exc.title, redact(exc.detail), slug=exc.slug, extra=extra)


def action_error_response(exc: ActionError, redact: Redactor) -> ProblemResponse:
    """The response of a domain error (also used by the middlewares' own errors)."""
    return ProblemResponse(action_error_body(exc, redact), status_code=exc.status)


def _location(loc: Iterable[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def _json_position(document: Any, position: int) -> str:
    """``line L, column C`` (from 1) of character ``position`` of the body text."""
    text = document if isinstance(document, str) else ""
    before = text[:position]
    return f"line {before.count(chr(10)) + 1}, column {position - before.rfind(chr(10))}"


def _in_words(error: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """One validation error as ``{"loc", "msg"}``, its message in words."""
    loc, msg = _location(error.get("loc", ())), str(error.get("msg", ""))
    context = error.get("ctx") or {}
    if error.get("type") == "json_invalid":
        position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        reason = str(context.get("error") or "not parseable")
        msg = (f"not valid JSON: {reason[:1].lower()}{reason[1:]} at "
               f"{_json_position(body, position)}")
        loc = loc[:1]
    elif error.get("type") == "string_pattern_mismatch" and (
            context.get("pattern") == IDENTIFIER_PATTERN):
        msg = IDENTIFIER_RULE
    return {"loc": loc, "msg": msg}


def _summary(errors: Iterable[Mapping[str, Any]]) -> str:
    """``since: …; limit: …``: each error's parameter (its ``loc`` without ``where``)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:] or e['loc'])}: {e['msg']}"
                     for e in errors)


def validation_response(exc: RequestValidationError, redact: Redactor) -> ProblemResponse:
    """400 with every invalid parameter (``loc`` and ``msg``; the input is not echoed)."""
    errors = [{**found, "msg": redact(found["msg"])}
              for found in (_in_words(error, exc.body) for error in exc.errors()[:MAX_ERRORS])]
    return problem_response(400, "Invalid parameter", _summary(errors) or "invalid request",
                            slug="invalid-parameter", extra={"errors": errors})


def _where(request: Request, parameter: str) -> str:
    """Where ``parameter`` of ``request`` came from: ``path``, ``query`` or ``body``."""
    if parameter in request.path_params:
        return "path"
    return "query" if parameter in request.query_params or request.method == "GET" else "body"


def invalid_parameter_response(exc: InvalidParameter, request: Request, redact: Redactor
                               ) -> ProblemResponse:
    """The 400 of an :class:`InvalidParameter`: its own ``errors`` when it has them
    (:class:`actions.params.ParameterCheck`), else one error for its ``parameter``, placed
    by :func:`_where`.
    """
    if "errors" in exc.extra or "parameter" not in exc.extra:
        return action_error_response(exc, redact)
    name = str(exc.extra["parameter"])
    errors = [{"loc": [_where(request, name), name],
               "msg": redact(exc.detail.removeprefix(f"{name}: "))}]
    return problem_response(exc.status, exc.title, redact(exc.detail), slug=exc.slug,
                            extra={**exc.extra, "errors": errors})


def install(app: FastAPI, secrets: Iterable[str] = ()) -> None:
    """Register the exception handlers that turn every error of ``app`` into a problem."""
    redact = Redactor(secrets)

    async def on_action_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, ActionError)
        if exc.status >= 500:
            log.warning("action failed status=%d problem=%s detail=%s", exc.status, exc.slug,
                        redact(exc.detail))
        if isinstance(exc, InvalidParameter):
            return invalid_parameter_response(exc, request, redact)
        return action_error_response(exc, redact)

    async def on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc, redact)

    async def on_http_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        shown = redact(detail) if detail and detail != _phrase(exc.status_code) else None
        return problem_response(exc.status_code, detail=shown, headers=exc.headers)

    async def on_bug(request: Request, exc: Exception) -> ProblemResponse:
        log.error("action API bug path=%s error=%s", request.url.path, type(exc).__name__,
                  exc_info=exc)
        return problem_response(500, detail="an unexpected error; see the exporter's log")

    app.add_exception_handler(ActionError, on_action_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_bug)
