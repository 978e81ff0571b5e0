"""The Jinja2 environment of the pages and :func:`render`, which every page calls.

Autoescaping is on for every template, so task ids, names, arguments and tracebacks are
shown as text whatever they contain. Every template gets, besides its own context:

- ``user`` (:class:`~ui.users.User` or ``None``), ``csrf_token`` (the value every form
  posts as ``csrftoken``), ``nav`` (the main navigation) and ``current`` (the path asked);
- ``href(path)``: ``path`` under the UI's mount (``href("/failed")`` → ``/ui/failed``);
- ``grafana_url``; filters ``when`` (UTC time), ``seconds`` (a duration), ``schedule`` (a
  periodic entry's schedule, its interval as a duration) and ``urlpart`` (a
  value quoted for a URL path segment, e.g. a task id); ``urlencode(pairs)`` for query strings.

A name a template uses but its context lacks is an error (``StrictUndefined``), not an empty
string: write ``value|default(none)`` for optional ones. Templates are read from disk once per
process (no auto-reload): restart the exporter after changing them.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ui.access import session_user, ui_context

TEMPLATES = Path(__file__).parent / "templates"
#: The main navigation: (label, path under the mount). Pages added later take these paths.
NAV = (("Overview", "/"), ("Running", "/running"), ("Waiting", "/waiting"),
       ("Scheduled", "/scheduled"), ("Completed", "/completed"), ("Failed", "/failed"),
       ("Statistics", "/statistics"), ("Periodic", "/periodic"), ("Workers", "/workers"))


def when(value: datetime | float | None) -> str:
    """A time as ``2024-05-01 12:00:00.250 UTC`` (``—`` for ``None``); floats are epoch
    seconds.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    moment = (value if isinstance(value, datetime)
              else datetime.fromtimestamp(value, tz=timezone.utc))
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def seconds(value: float | None) -> str:
    """A duration in seconds as ``0.012 s``, ``42.0 s``, ``3 min 20 s`` or ``2 h 5 min``."""
    if value is None or not math.isfinite(value):
        return "—"
    if value < 10:
        return f"{value:.3f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


#: The interval of a schedule's text (:func:`exporter.periodic.schedules.describe`):
#: ``every 86400s``.
_EVERY = re.compile(r"every (\d+(?:\.\d+)?(?:e[+-]\d+)?)s")


def schedule(text: str) -> str:
    """A schedule's text with its interval as :func:`seconds` writes durations elsewhere:
    ``every 86400s`` → ``every 24 h 0 min``; crontab and solar texts unchanged.
    """
    match = _EVERY.fullmatch(text)
    return f"every {seconds(float(match.group(1)))}" if match else text


def _environment() -> jinja2.Environment:
    # auto_reload off: a template is read once, like the Python code that renders it. With it
    # on, files replaced under a running exporter (an in-place `pip install`) were read at the
    # next render and met the old code: pages answered 500 until a restart.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, auto_reload=False)
    env.filters["when"] = when
    env.filters["seconds"] = seconds
    env.filters["schedule"] = schedule
    env.filters["urlpart"] = lambda text: quote(str(text), safe="")
    env.globals["urlencode"] = lambda pairs: urlencode(
        [(k, v) for k, v in dict(pairs).items() if v not in (None, "")])
    return env


templates = Jinja2Templates(env=_environment())


def href_for(request: Request, path: str) -> str:
    """``path`` (starting with ``/``) under the mount the UI is served from."""
    return request.scope.get("root_path", "").rstrip("/") + path


def render(request: Request, template: str, context: dict[str, Any] | None = None,
           status_code: int = 200) -> Response:
    """Render ``template`` with ``context`` and the common values (module docs)."""
    csrf = request.scope.get("csrftoken")
    common: dict[str, Any] = {
        "user": session_user(request) if "session" in request.scope else None,
        "csrf_token": csrf() if callable(csrf) else "",
        "nav": NAV,
        "current": request.url.path,
        "href": lambda path: href_for(request, path),
        "grafana_url": ui_context(request).grafana_url,
    }
    return templates.TemplateResponse(request, template, {**common, **(context or {})},
                                      status_code=status_code)
