"""Who is looking: the session's user, and the role checks every page route depends on.

The session is Starlette's signed cookie (:class:`~starlette.middleware.sessions.SessionMiddleware`,
see :mod:`ui.app`); it holds only the user name (``{"user": "alice"}``). The role is looked
up in the users file loaded at start on every request, so a user removed from the file (and
the exporter restarted) is logged out.

Routes take ``viewer`` (any logged-in user) or ``operator`` (may act) as a dependency:
``user: Annotated[User, Depends(operator)]``. Without a session the request raises
:class:`LoginRequired` (the app redirects to the login page); a viewer on an operator route
raises :class:`Forbidden` (the app answers a 403 page).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request

from actions.context import ActionContext
from exporter.periodic.tracker import PeriodicSnapshot
from ui.throttle import LoginThrottle
from ui.users import User

#: The audit trail's actor for an action taken in the job browser: ``ui:<user name>``.
ACTOR_PREFIX = "ui:"
#: Session key of the logged-in user's name.
SESSION_USER = "user"


@dataclass
class UiContext:
    """What the pages work with, set once on the app (``app.state.ui``).

    Args:
        actions: the action services' context (history, broker, poll snapshot, live model).
        users: the users file's users by name.
        grafana_url: base URL of Grafana (``--grafana-url``), or ``None``: no dashboard links.
        clock: seconds since the epoch.
        periodic_latest: the periodic tracker's latest snapshot (its ``latest``), or ``None``:
            no tracker runs (no schedule source given, or no history).
        login_throttle: counts failed logins (:class:`~ui.throttle.LoginThrottle`).

    """

    actions: ActionContext
    users: Mapping[str, User]
    grafana_url: str | None = None
    clock: Callable[[], float] = field(default=time.time)
    periodic_latest: Callable[[], PeriodicSnapshot | None] | None = None
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)


class LoginRequired(Exception):
    """No valid session: the app redirects to the login page (``next``: where to go back)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Forbidden(Exception):
    """The user's role does not allow this (a viewer asked for an action): a 403 page."""

    def __init__(self, user: User, what: str) -> None:
        super().__init__(what)
        self.user = user
        self.what = what


def ui_context(request: Request) -> UiContext:
    """The :class:`UiContext` of the app serving ``request``."""
    context: UiContext = request.app.state.ui
    return context


def session_user(request: Request) -> User | None:
    """The logged-in user of ``request``'s session, or ``None``."""
    name = request.session.get(SESSION_USER)
    if not isinstance(name, str):
        return None
    return ui_context(request).users.get(name)


def viewer(request: Request) -> User:
    """Dependency: the logged-in user (any role).

    Raises:
        LoginRequired: no session, or its user is no longer in the users file.

    """
    user = session_user(request)
    if user is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)
    return user


def operator(request: Request) -> User:
    """Dependency: the logged-in user, who must be an operator.

    Raises:
        LoginRequired: no session. Forbidden: a viewer.

    """
    user = viewer(request)
    if not user.can_act:
        raise Forbidden(user, "retry or cancel tasks")
    return user


def actor(user: User) -> str:
    """The audit trail's actor for ``user``: ``ui:<name>``."""
    return ACTOR_PREFIX + user.name
