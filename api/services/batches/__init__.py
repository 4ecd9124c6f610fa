"""Batches (``/v1/batches``, OpenAI's Batch API): the records and input files
(:mod:`~api.services.batches.store`) and the task that drives them
(:mod:`~api.services.batches.runner`)."""
