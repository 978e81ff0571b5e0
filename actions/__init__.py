"""celery-jobmon action API: retry, cancel and history reads over HTTP (mounted under /api/v1)."""
