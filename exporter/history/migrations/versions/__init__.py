"""Migration revisions, oldest first (``rNNNN_<slug>.py``)."""
