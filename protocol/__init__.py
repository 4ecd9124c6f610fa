"""The wire contract of the Universal Model Launcher.

Every type that crosses a process boundary (HTTP bodies, job records in Redis, stream
events, worker heartbeats, Celery task and queue names) is defined here and nowhere else.
This package imports msgspec and the standard library only.
"""
