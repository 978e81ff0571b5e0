"""What Celery's canvas (chains, groups, chords) leaves in the task events (pure).

Celery 5 events carry ``root_id`` and ``parent_id`` (``task-sent`` and ``task-received``) but
not the group id: the task message's ``group`` header reaches no event. The one place a group
id shows is the ``celery.chord_unlock`` task that backends without native chords (SQL
databases, for instance; Redis joins chords itself) send to poll a chord's header: its
``args`` repr is ``('<group id>', {'task': '<callback name>', ..., 'options': {'task_id':
'<callback id>', ...}}, ...)``. Its ``kwargs`` list the header's results, but Celery's
``saferepr`` cuts them to ``(...)``, so the header's task ids are not in any event.
"""

from __future__ import annotations

import re

#: The task Celery sends to wait for a chord's header when the result backend cannot join it.
CHORD_UNLOCK = "celery.chord_unlock"

_GROUP_RE = re.compile(r"""^\(\s*['"]([^'"\\]{1,255})['"]""")
_CALLBACK_NAME_RE = re.compile(r"""['"]task['"]\s*:\s*['"]([^'"\\]{1,255})['"]""")


def chord_group_id(name: object, args: object) -> str | None:
    """The group id a ``celery.chord_unlock`` task waits for: the first string of its ``args``
    repr (``"('2f0c…', {...})"`` → ``'2f0c…'``); ``None`` for any other task, or when the
    repr does not start that way.
    """
    if name != CHORD_UNLOCK or not isinstance(args, str):
        return None
    match = _GROUP_RE.match(args)
    return match.group(1) if match else None


def chord_callback_name(args: object) -> str | None:
    """The callback's task name in a ``celery.chord_unlock`` ``args`` repr (its ``'task'``
    key: ``'proj.tasks.total'``), ``None`` when absent or cut off.
    """
    if not isinstance(args, str):
        return None
    match = _CALLBACK_NAME_RE.search(args)
    return match.group(1) if match else None
