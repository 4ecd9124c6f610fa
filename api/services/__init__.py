"""Business logic behind the controllers, one module per feature:

- :mod:`~api.services.generation`: the OpenAI generation path (``/v1/completions``,
  ``/v1/chat/completions``, a ``/ws`` ``generate``): submit, follow, collect, cancel;
- :mod:`~api.services.jobs`: the ``/v1/jobs`` service; :mod:`~api.services.job_store`: the
  job records in Redis (:class:`~api.services.job_store.JobStore`, one script per operation);
- :mod:`~api.services.batches`: ``/v1/batches`` (records, input files, the runner);
  :mod:`~api.services.files`, :mod:`~api.services.file_quota`: ``/v1/files``;
- :mod:`~api.services.ws`: a ``/ws`` socket's session (its handshake in
  :mod:`~api.services.ws_handshake`, its frames in :mod:`~api.services.ws_frames`);
- :mod:`~api.services.models`, :mod:`~api.services.model_ops`: live models and their admin.
"""
