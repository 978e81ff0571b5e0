"""Periodic tasks: whether each beat entry ran when its schedule said.

:mod:`.schedules` parses each source's form into entries with Celery schedules (pure),
:mod:`.sources` reads the sources (``--app``, RedBeat, django-celery-beat, ``--expect``),
:mod:`.runs` reads an entry's runs from the history, :mod:`.tracker` counts missed runs and
publishes the snapshot ``/metrics`` renders, :mod:`.setup` wires it for ``serve``.
"""
