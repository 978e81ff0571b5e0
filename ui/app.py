"""The job browser's ASGI app, mounted at ``/ui`` by ``serve`` (:func:`create_ui`).

Layers, outermost first: the signed session cookie (Starlette's ``SessionMiddleware``:
HttpOnly, SameSite=Lax, Secure under TLS), CSRF (asgi-csrf: every POST must carry the
``csrftoken`` form field matching its signed cookie, or gets a 403 page), then the page
routes of every module in :mod:`ui.pages`. Errors become pages here, in one place:

====================================  =======================================================
raised                                answer
====================================  =======================================================
:class:`~ui.access.LoginRequired`     303 to ``/ui/login?next=…``
:class:`~ui.access.Forbidden`         403 page naming the role needed
:class:`~actions.errors.ActionError`  its status (400 bad filter, 404, 409, 503) and detail
bad query or form values (FastAPI)    400 page listing them
unknown path or method                404 / 405 page
anything else (a bug)                 500 page with an error id and the time; the traceback
                                      goes to the log with that id (:class:`UnexpectedErrors`)
====================================  =======================================================

Without a users file the UI is off: every path answers a 403 page saying how to turn it on.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import pkgutil
import time
from collections.abc import Callable, Iterable
from secrets import token_hex, token_urlsafe
from typing import Any
from urllib.parse import urlencode

from asgi_csrf import asgi_csrf
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actions.context import ActionContext
from actions.errors import ActionError
from exporter.config import Settings
from exporter.periodic.tracker import PeriodicSnapshot
from exporter.secrets import Redactor
from ui import pages
from ui.access import Forbidden, LoginRequired, UiContext
from ui.templating import href_for, render, when
from ui.users import load_users

log = logging.getLogger(__name__)

PREFIX = "/ui"
SESSION_COOKIE = "jobmon_ui_session"
CSRF_COOKIE = "jobmon_ui_csrf"
#: A session ends this long (seconds) after the user's last request: the middleware signs the
#: cookie again with every response.
SESSION_MAX_AGE = 12 * 3600
HOW_TO_ENABLE = ("The job browser is off: start `celery-jobmon serve` with --ui-users-file "
                 "(JOBMON_UI_USERS_FILE) naming a file of users; add one with "
                 "`celery-jobmon ui-user add NAME --role operator --users-file PATH`.")


class _EveryPath:
    """asgi-csrf lets a POST without any cookie through unless its path is "always
    protected"; in the UI every path is.
    """

    def __contains__(self, path: object) -> bool:
        return True


def derive_key(secret: str, purpose: str) -> str:
    """A key for one ``purpose`` (``session``, ``csrf``) derived from the session secret, so
    that the two signers never share a key.
    """
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def page_modules() -> Iterable[Any]:
    """Every module of :mod:`ui.pages`, imported, by name (each has a ``router``)."""
    for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda i: i.name):
        yield importlib.import_module(f"{pages.__name__}.{info.name}")


def _install_error_pages(app: FastAPI, redact: Redactor) -> None:
    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(href_for(request, "/login") + "?"
                                + urlencode({"next": exc.next_path}), status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        log.warning("ui action refused user=%s role=%s path=%s", exc.user.name, exc.user.role,
                    request.url.path)
        return render(request, "error.html", {
            "title": "Not allowed", "status": 403,
            "detail": f"Your role ({exc.user.role}) cannot {exc.what}; an operator can. "
                      "Nothing was done."}, status_code=403)

    async def action_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ActionError)
        return render(request, "error.html", {
            "title": exc.title, "status": exc.status, "detail": redact(exc.detail),
            "reason": exc.extra.get("reason"),
            "broker_reason": redact(str(exc.extra["broker_reason"]))
            if exc.extra.get("broker_reason") else None}, status_code=exc.status)

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [f"{'.'.join(str(part) for part in error.get('loc', ())[1:]) or 'request'}"
                    f": {error.get('msg', 'invalid')}" for error in exc.errors()]
        return render(request, "error.html", {
            "title": "Invalid parameter", "status": 400, "detail": "; ".join(problems)},
            status_code=400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        return render(request, "error.html", {
            "title": titles.get(exc.status_code, "Error"), "status": exc.status_code,
            "detail": "No page here." if exc.status_code == 404 else str(exc.detail)},
            status_code=exc.status_code)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(ActionError, action_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


class UnexpectedErrors:
    """ASGI middleware of the job browser (inside its error handlers' reach: what they answer
    never gets here): an exception no handler takes — a bug — is logged at ERROR with its
    traceback as ``ui page failed error_id=<12 hex> method=… path=…``, and answered with a 500
    page (``error.html``, with the navigation) saying the error id and the time (UTC), never
    the traceback or the exception's text. Starlette's own answer was a plain-text "Internal
    Server Error" and a second traceback from the server.

    When the page cannot be rendered either (the templates themselves fail), the answer is a
    minimal page with the same id. When the response had already started, the exception is
    raised again after logging: nothing can be sent any more.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: pass the request on; answer the error page as described above."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            error_id = token_hex(6)
            log.exception("ui page failed error_id=%s method=%s path=%s", error_id,
                          scope.get("method"), scope.get("path"))
            if started:
                raise
            await self._page(Request(scope), error_id)(scope, receive, send)

    @staticmethod
    def _page(request: Request, error_id: str) -> Response:
        detail = (f"This page failed: error {error_id} at {when(time.time())}. The exporter's "
                  "log has the details under that id.")
        try:
            return render(request, "error.html", {
                "title": "Internal error", "status": 500, "detail": detail}, status_code=500)
        except Exception:
            log.exception("ui error page failed error_id=%s", error_id)
            return HTMLResponse("<!doctype html><html lang=en><meta charset=utf-8><title>"
                                f"Internal error</title><h1>500 — internal error</h1><p>{detail}"
                                "</p></html>", status_code=500)


async def _csrf_failed(scope: Scope, send: Send, message_id: Any) -> None:
    """asgi-csrf's refusal as a readable 403 page."""
    body = ("<!doctype html><html lang=en><meta charset=utf-8><title>Form expired</title>"
            "<h1>403 — form refused</h1><p>This form carried no valid CSRF token (it is older "
            "than your session, or came from another site). Nothing was done. Go back, "
            "reload the page and submit again.</p></html>").encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


def create_ui(context: UiContext, *, session_secret: str, secure_cookies: bool,
              secrets: Iterable[str] = ()) -> ASGIApp:
    """The job browser's ASGI app for :data:`PREFIX`.

    Args:
        context: the services and users the pages use.
        session_secret: signs the session and CSRF cookies (keys derived per purpose).
        secure_cookies: mark cookies ``Secure`` (the server speaks TLS).
        secrets: values never shown on a page (broker passwords in error details).

    """
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = context
    _install_error_pages(app, Redactor(secrets))
    app.add_middleware(UnexpectedErrors)
    app.mount("/static", StaticFiles(packages=[("ui", "static")]), name="static")
    for module in page_modules():
        app.include_router(module.router)
    protected = asgi_csrf(app, cookie_name=CSRF_COOKIE, signing_secret=derive_key(
        session_secret, "csrf"), always_protect=_EveryPath(), cookie_path=PREFIX,
        cookie_secure=secure_cookies, cookie_samesite="Strict",
        send_csrf_failed=_csrf_failed)
    return SessionMiddleware(protected, secret_key=derive_key(session_secret, "session"),
                             session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE,
                             path=PREFIX, same_site="lax", https_only=secure_cookies)


class DisabledUi:
    """The app at :data:`PREFIX` while no users file is configured: a 403 page everywhere,
    saying how to turn the job browser on. ``/`` lists the endpoints instead of sending the
    user here (:func:`exporter.http.create_http_app` tells it apart by its type).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: answer any request with the 403 page."""
        body = ("<!doctype html><html lang=en><meta charset=utf-8>"
                "<title>Job browser off</title><h1>403 — job browser off</h1>"
                f"<p>{HOW_TO_ENABLE}</p></html>")
        await HTMLResponse(body, status_code=403)(scope, receive, send)


def disabled_ui() -> DisabledUi:
    """The app ``serve`` mounts at :data:`PREFIX` without ``--ui-users-file``
    (:class:`DisabledUi`).
    """
    return DisabledUi()


def ui_from_settings(settings: Settings, actions: ActionContext,
                     periodic_latest: Callable[[], PeriodicSnapshot | None] | None = None
                     ) -> ASGIApp:
    """The app ``serve`` mounts at :data:`PREFIX`: :func:`disabled_ui` without
    ``--ui-users-file``, else :func:`create_ui` with the users of that file and the session
    secret of ``--ui-session-secret-file`` (or a random one, logged as such).
    ``periodic_latest``: the periodic tracker's ``latest`` (``None``: no tracker).

    Raises:
        UsersFileError: the users file cannot be read or has invalid lines.

    """
    if settings.ui_users_file is None:
        return disabled_ui()
    users = load_users(settings.ui_users_file)
    secret = settings.ui_session_secret
    if secret is None:
        secret = token_urlsafe(32)
        log.info("ui session secret generated at start: sessions end when the process "
                 "restarts and differ between replicas (--ui-session-secret-file)")
    log.info("ui on path=%s/ users=%d", PREFIX, len(users))
    return create_ui(UiContext(actions, users, grafana_url=settings.grafana_url,
                               periodic_latest=periodic_latest),
                     session_secret=secret, secure_cookies=settings.tls_cert is not None,
                     secrets=settings.secrets())
