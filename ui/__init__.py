"""The job browser: server-rendered pages under ``/ui/`` over the action services.

Modules: :mod:`.app` (the ASGI app: sessions, CSRF, error pages, page discovery),
:mod:`.users` (the users file, argon2 hashes), :mod:`.access` (login and role checks),
:mod:`.templating` (Jinja2 environment and ``render``), :mod:`.filters` (list filters from the
URL), :mod:`.queries` (the few history reads only the pages need); one module per page under
:mod:`.pages` (each exposes ``router``), its template under ``templates/``.
"""
