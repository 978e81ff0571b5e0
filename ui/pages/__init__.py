"""One module per page (or group of forms of one page), each exposing a FastAPI ``router``.

:func:`ui.app.create_ui` includes the router of every module found here, so adding a page is
adding a module here and its template under ``ui/templates/``.
"""
