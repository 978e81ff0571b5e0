"""Celery events in: the event table and checks, the consumer thread, the Redis stream."""
