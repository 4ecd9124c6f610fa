"""The Litestar API of the Universal Model Launcher: OpenAI-compatible endpoints over Celery.

Entry points: :func:`api.app.create_app` builds the app, :func:`api.server.run` serves it.
"""
