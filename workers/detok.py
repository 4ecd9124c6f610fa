"""Incremental detokenization that never emits half a UTF-8 character.

Byte-level and SentencePiece tokenizers split characters across tokens (an emoji can be
four byte tokens), and a token's text can depend on its neighbours (leading spaces). So
each push decodes a short window of recent ids twice, with and without the new ids, and
emits the difference, holding it back while the decoded text ends in U+FFFD (an
incomplete character). This is the prefix_offset/read_offset technique of TGI and vLLM,
written over any ``decode(ids) -> str`` callable so every engine can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["CONTEXT_IDS", "IncrementalDetokenizer"]

_REPLACEMENT = "\ufffd"
CONTEXT_IDS = 8
"""How many preceding ids prime a detokenizer (a prompt's tail, or a resumed job's)."""


class IncrementalDetokenizer:
    """Feed token ids with :meth:`push`, get the new text; :meth:`flush` at the end.

    ``context`` (for example the prompt's last few ids) primes the window so the first
    generated token decodes as it would mid-text; it is never emitted.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], context: Sequence[int] = ()):
        self._decode = decode
        self._ids: list[int] = list(context)
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def push(self, ids: Sequence[int]) -> str:
        """Add ``ids``; return the text they complete (possibly empty, never a half char)."""
        self._ids.extend(ids)
        prefix_text, new_text = self._window()
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """The text still held back (an incomplete character decodes as U+FFFD here)."""
        prefix_text, new_text = self._window()
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""

    def _window(self) -> tuple[str, str]:
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        return prefix_text, new_text
