"""Every Redis Lua script of the service, one file each, and the loader that reads them.

A script is ``protocol/scripts/<name>-<nkeys>.lua`` (``<name>.lua`` when its key count
varies), opening with a comment header: what it does, ``KEYS``, ``ARGV``, ``Returns``.
Snippets shared by several scripts are ``includes/<name>.lua``, pulled in by a line
``--- @include <name>``; :func:`load` expands them (an include that includes another,
too), each once per script, where it first appears. ``${NAME}`` stands for a constant of
:data:`CONSTANTS` (a key prefix built in Python), so no name is written twice.
docs/redis.md lists the scripts and their callers::

    redis.register_script(scripts.load("claim_job"))   # claim_job-4.lua, includes expanded
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from protocol.meter import TOKEN_WINDOW_MS
from protocol.queued import KEY_LIVE_PREFIX, KEYS_INDEX_PREFIX, LIVE_PREFIX

__all__ = ["CONSTANTS", "HOME", "expand", "load", "names", "path"]

HOME = Path(__file__).parent
"""Where the scripts are (``includes/`` holds the snippets)."""

CONSTANTS = {
    "LIVE_PREFIX": LIVE_PREFIX,
    "KEY_LIVE_PREFIX": KEY_LIVE_PREFIX,
    "KEYS_INDEX_PREFIX": KEYS_INDEX_PREFIX,
    "TOKEN_WINDOW_MS": str(TOKEN_WINDOW_MS),
}
"""What ``${NAME}`` stands for in a script or an include."""

_INCLUDE = re.compile(r"^--- @include (\w+)[ \t]*$", re.MULTILINE)
_CONSTANT = re.compile(r"\$\{(\w+)\}")


def names() -> list[str]:
    """Every script's name (its file name without the key count and ``.lua``), sorted."""
    return sorted(p.stem.split("-")[0] for p in HOME.glob("*.lua"))


def path(name: str) -> Path:
    """The file of script ``name``: ``<name>-<nkeys>.lua`` or ``<name>.lua``."""
    found = [*HOME.glob(f"{name}-*.lua"), *HOME.glob(f"{name}.lua")]
    if len(found) != 1:
        raise LookupError(f"no single Redis script named {name!r} in {HOME}: {found}")
    return found[0]


@functools.cache
def load(name: str) -> str:
    """Script ``name``'s text, includes expanded and constants filled in (cached)."""
    return expand(path(name).read_text())


def expand(text: str) -> str:
    """``text`` with its ``--- @include`` lines expanded (each include once) and its
    ``${NAME}`` constants filled in: what :func:`load` does to a file."""
    return _CONSTANT.sub(lambda m: CONSTANTS[m[1]], _expand(text, set()))


def _expand(text: str, seen: set[str]) -> str:
    def include(match: re.Match[str]) -> str:
        name = match[1]
        if name in seen:
            return ""
        seen.add(name)
        return _expand((HOME / "includes" / f"{name}.lua").read_text(), seen).rstrip("\n")

    return _INCLUDE.sub(include, text)
