"""The Redis scripts' home (protocol.scripts): every file has its header, every include
resolves, nothing is unused, every script compiles in the real Redis and has a caller."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from protocol import scripts

ROOT = Path(__file__).resolve().parents[2]
INCLUDES = scripts.HOME / "includes"
FILES = sorted(scripts.HOME.glob("*.lua"))
INCLUDE_FILES = sorted(INCLUDES.glob("*.lua"))
_INCLUDE = re.compile(r"^--- @include (\w+)\s*$", re.MULTILINE)


def header(text: str) -> list[str]:
    """The comment lines the file opens with (``--- @include`` lines are not header)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--") or line.startswith("--- @include"):
            break
        lines.append(line)
    return lines


def includes_of(text: str) -> set[str]:
    """The includes ``text`` pulls in, directly or through another include."""
    found: set[str] = set()
    todo = _INCLUDE.findall(text)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += _INCLUDE.findall((INCLUDES / f"{name}.lua").read_text())
    return found


def test_there_are_scripts_and_includes() -> None:
    assert len(FILES) >= 10 and len(INCLUDE_FILES) >= 5
    assert scripts.names() == sorted(p.stem.split("-")[0] for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_script_opens_with_what_it_does_its_keys_argv_and_answer(path: Path) -> None:
    lines = header(path.read_text())
    assert len(lines) >= 4 and not lines[0].startswith("-- KEYS"), "say what it does first"
    for section in ("-- KEYS", "-- ARGV", "-- Returns"):
        assert any(line.startswith(section) for line in lines), f"{path.name}: no {section}"
    name, _, count = path.stem.partition("-")
    assert re.fullmatch(r"[a-z_]+", name)
    if count:  # <name>-<nkeys>.lua: the header names KEYS[1] .. KEYS[nkeys], no more
        named = {int(i) for i in re.findall(r"KEYS\[(\d+)\]", "\n".join(lines))}
        assert named == set(range(1, int(count) + 1)), path.name
    else:  # <name>.lua: the key count varies, and the header says with what
        assert "vary" in " ".join(lines) or "varies" in " ".join(lines), path.name


@pytest.mark.parametrize("path", INCLUDE_FILES, ids=lambda p: p.name)
def test_an_include_opens_with_what_it_defines(path: Path) -> None:
    assert header(path.read_text()), f"{path.name}: no header"


def test_every_include_resolves_and_every_constant_is_known() -> None:
    for path in [*FILES, *INCLUDE_FILES]:
        text = path.read_text()
        for name in _INCLUDE.findall(text):
            assert (INCLUDES / f"{name}.lua").is_file(), f"{path.name}: no include {name}"
        for name in re.findall(r"\$\{(\w+)\}", text):
            assert name in scripts.CONSTANTS, f"{path.name}: unknown constant {name}"
    for name in scripts.names():
        text = scripts.load(name)
        assert "--- @include" not in text and "${" not in text


def test_every_include_is_used() -> None:
    used = set().union(*(includes_of(p.read_text()) for p in FILES))
    assert used == {p.stem for p in INCLUDE_FILES}


def test_an_include_is_expanded_once_where_it_first_appears() -> None:
    text = scripts.expand("--- @include finalize\n--- @include queued\nreturn 1\n")
    assert text.count("local function unmark_queued") == 1
    assert text.count("local function last_seq") == 1
    assert text.index("local function finalize") > text.index("local function unmark_queued")
    assert text.endswith("return 1\n")
    assert scripts.load("claim_job") is scripts.load("claim_job")  # cached


def test_constants_are_filled_in() -> None:
    text = scripts.expand("return '${LIVE_PREFIX}'")
    assert text == f"return '{scripts.CONSTANTS['LIVE_PREFIX']}'"


def test_an_unknown_script_is_an_error() -> None:
    with pytest.raises(LookupError):
        scripts.path("no_such_script")


@pytest.mark.parametrize("name", scripts.names())
def test_every_script_compiles_in_redis(sync_redis: redis.Redis, name: str) -> None:
    sync_redis.script_load(scripts.load(name))


def test_every_script_is_loaded_by_a_caller() -> None:
    loaded: set[str] = set()
    for package in ("api", "workers", "uml", "protocol"):
        for source in (ROOT / package).rglob("*.py"):
            loaded |= set(re.findall(r"scripts\.load\(\"(\w+)\"\)", source.read_text()))
    assert loaded == set(scripts.names())


def test_every_script_has_a_direct_test() -> None:
    tested: set[str] = set()
    for source in Path(__file__).parent.glob("test_scripts_*.py"):
        tested |= set(re.findall(r"run\(\s*sync_redis,\s*\"(\w+)\"", source.read_text()))
    assert tested == set(scripts.names())
