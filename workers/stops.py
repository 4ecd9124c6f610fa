"""Stop strings over streamed text, with OpenAI semantics.

The text is cut before the first stop string, which is never emitted. A stop string can
arrive split across tokens, so the matcher holds back the longest tail of the text that
could still become one, and releases it as soon as it cannot (or at :meth:`flush`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher"]


class StopMatcher:
    """Feed text pieces with :meth:`push`; it returns ``(safe_text, hit)``."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.hit = False

    def push(self, text: str) -> tuple[str, bool]:
        """Text that is safe to emit now, and whether a stop string was reached."""
        if self.hit:
            return "", True
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self.hit, self._held = True, ""
            return buffer[:cut], True
        keep = self._held_back(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """The held-back text, at the end of generation (empty after a hit)."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, buffer: str) -> int | None:
        hits = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that starts some stop string."""
        longest = max((len(stop) for stop in self._stops), default=1) - 1
        for size in range(min(longest, len(buffer)), 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
