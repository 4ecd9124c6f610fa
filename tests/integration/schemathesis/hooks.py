"""Schemathesis hooks for the suite's run (``SCHEMATHESIS_HOOKS``).

A generated completion or chat body (or the one a job wraps) that names a well-formed model
names the stack's model instead (``UML_ST_MODEL``), so generation runs for real (validation,
the worker, the answer's and the stream's schemas) rather than ending in 404; a malformed
name, which a negative case may be about, is left alone, and so is the model of a load or an
unload. Generation runs on the tiny model, so ``max_tokens`` is clamped to a few tokens.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

MAX_TOKENS = 4
_FIELDS = ("max_tokens", "max_completion_tokens")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def small(body: Any, model: str | None = None) -> Any:
    """Clamp the token counts of a generation body (or of the body a job submission wraps)
    and, given ``model``, put it in place of a well-formed model name."""
    if isinstance(body, dict):
        for name in _FIELDS:
            if _number(body.get(name)) and body[name] > MAX_TOKENS:
                body[name] = MAX_TOKENS
        named = body.get("model")
        generates = "prompt" in body or "messages" in body  # not a load or an unload
        if generates and model and isinstance(named, str) and 1 <= len(named) <= 128:
            body["model"] = model
        small(body.get("body"), model)
    return body


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    return small(body, os.environ.get("UML_ST_MODEL"))
