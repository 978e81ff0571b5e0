"""Lost events found and repaired (DESIGN section 8): the tasks left in progress by an event gap,
by missed events or across a restart are checked against the result backend and the workers,
off the event path, and what those say is applied through the model, once.

Modules: :mod:`.findings` (what a source says, pure parsers), :mod:`.sources` (the result
backend and the workers, thin I/O), :mod:`.suspects` (which tasks to check when, pure),
:mod:`.repairer` (the thread).
"""
