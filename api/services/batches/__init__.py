"""Batches (``/v1/batches``, OpenAI's Batch API), one module per concern:

- :mod:`~api.services.batches.store`: the batch records: create, read, list, cancel;
- :mod:`~api.services.batches.parse`: an input file checked at upload and parsed into
  prepared requests and error lines when its batch runs (pure);
- :mod:`~api.services.batches.validate`: a batch's first step, its input file made into
  the lines to run and the error lines;
- :mod:`~api.services.batches.results`: a finished job's line in the output or error file
  (pure);
- :mod:`~api.services.batches.runner`: the :class:`~api.services.batches.runner.BatchRunner`
  task that drives every unfinished batch through OpenAI's states::

    validating ─┬─> in_progress ──> finalizing ──> completed
                └─> failed           │ cancel        (no request could be read)
    validating | in_progress ──cancel──> cancelling ──> cancelled
    in_progress ──(completion window over)──> expired

A cancel or an expiry keeps every result already produced: the output file holds them, and
each request that did not finish gets an error line (``batch_cancelled`` / ``batch_expired``).
"""
