"""Celery workers: the generation task, the scheduler loop, the engines, the tiny model."""
