"""Log in (``GET``/``POST /ui/login``) and out (``POST /ui/logout``).

A failed login is logged (user name, client address) and answered 401 with one message for
an unknown name and a wrong password; both take as long (:func:`ui.users.authenticate`).
Failed logins are counted per user name and per client address (:mod:`ui.throttle`): over the
limit, the form answers 429 with ``Retry-After`` and checks no password, logged as
``ui login throttled``.
After a login the session is started afresh (nothing from before it is kept) and the user
goes back to ``next`` when it is a path of the UI, else to the overview.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Query
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ui.access import SESSION_USER, session_user, ui_context
from ui.templating import href_for, render
from ui.users import authenticate

log = logging.getLogger(__name__)
router = APIRouter()

Text = Annotated[str, Form(max_length=1024)]
#: How a throttled login's page names what reached its limit.
THROTTLED_BY = {"user": "for this user name", "client": "from your address"}


def safe_next(request: Request, target: str | None) -> str:
    """``target`` when it is a path under the UI's mount (no scheme, no host), else the
    overview: a login link cannot send the user to another site.
    """
    root = href_for(request, "/")
    if target and target.startswith(root) and not target.startswith("//") \
            and "\\" not in target and all(ord(ch) >= 32 for ch in target):
        return target
    return root


@router.get("/login", include_in_schema=False)
def login_page(request: Request,
               next: Annotated[str | None, Query(max_length=2048)] = None) -> Response:
    """The login form (a logged-in user goes on to ``next``)."""
    if session_user(request) is not None:
        return RedirectResponse(safe_next(request, next), status_code=303)
    return render(request, "login.html", {"next": safe_next(request, next), "error": None,
                                          "username": ""})


@router.post("/login", include_in_schema=False)
async def login(request: Request, username: Text, password: Text,
                next: Annotated[str | None, Form(max_length=2048)] = None) -> Response:
    """Check the name and password (argon2, in a worker thread); start a session."""
    context = ui_context(request)
    client = request.client.host if request.client else "unknown"
    refusal = context.login_throttle.refusal(client, username)
    if refusal is not None:
        log.warning("ui login throttled user=%r client=%s by=%s limit=%r retry_after=%d",
                    username[:64], client, refusal.by, refusal.limit, refusal.retry_after)
        response = render(request, "login.html", {
            "next": safe_next(request, next), "username": username,
            "error": f"Too many failed logins {THROTTLED_BY[refusal.by]}: try again in "
                     f"{refusal.retry_after} s. The password was not checked."},
            status_code=429)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    user = await run_in_threadpool(authenticate, context.users, username, password)
    if user is None:
        context.login_throttle.failed(client, username)
        log.warning("ui login failed user=%r client=%s", username[:64], client)
        return render(request, "login.html", {
            "next": safe_next(request, next), "username": username,
            "error": "Unknown user name or wrong password."}, status_code=401)
    context.login_throttle.succeeded(username)
    request.session.clear()
    request.session[SESSION_USER] = user.name
    log.info("ui login user=%s role=%s", user.name, user.role)
    return RedirectResponse(safe_next(request, next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    """End the session; back to the login form."""
    name = request.session.get(SESSION_USER)
    request.session.clear()
    if name:
        log.info("ui logout user=%s", name)
    return RedirectResponse(href_for(request, "/login"), status_code=303)
