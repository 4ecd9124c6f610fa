"""The incremental detokenizer never emits half a character and loses nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from workers.detok import IncrementalDetokenizer


def byte_decode(ids: Sequence[int]) -> str:
    """A byte-level 'tokenizer': each id is one byte."""
    return bytes(ids).decode("utf-8", errors="replace")


def stream(text: str, chunk: int = 1) -> list[str]:
    data = list(text.encode())
    detok = IncrementalDetokenizer(byte_decode)
    pieces = [detok.push(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return [*pieces, detok.flush()]


@pytest.mark.parametrize("text", ["plain ascii", "Grüße", "😀 emoji 👩‍👩‍👧", "漢字かな", ""])
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_stream_reassembles_exactly(text: str, chunk: int) -> None:
    pieces = stream(text, chunk)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_holds_back_partial_character_until_complete() -> None:
    detok = IncrementalDetokenizer(byte_decode)
    emoji = list("😀".encode())
    assert [detok.push([b]) for b in emoji[:3]] == ["", "", ""]
    assert detok.push(emoji[3:]) == "😀"


def test_flush_releases_an_incomplete_character_as_replacement() -> None:
    detok = IncrementalDetokenizer(byte_decode)
    assert detok.push(list(b"a")) == "a"
    assert detok.push(list("😀".encode())[:2]) == ""
    assert detok.flush() == "\ufffd"
    assert detok.flush() == ""


def test_invalid_byte_mid_stream_is_emitted_once_followed_by_text() -> None:
    detok = IncrementalDetokenizer(byte_decode)
    assert detok.push([0xFF]) == ""
    assert detok.push([ord("x")]) == "\ufffdx"


def test_context_is_never_emitted() -> None:
    detok = IncrementalDetokenizer(byte_decode, context=list(b"prompt "))
    assert detok.push(list(b"ok")) == "ok"


def test_works_with_the_tiny_tokenizer(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    text = "Zoë says 你好 🎉!"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(lambda i: tokenizer.decode(list(i)))
    pieces = [detok.push([i]) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)


PIECES = {1: "▁Once", 2: "▁upon", 3: "▁a", 4: "▁time"}


def sentencepiece_decode(ids: Sequence[int]) -> str:
    """SentencePiece's decoder: ``▁`` is a space, and the text's one leading space is cut."""
    text = "".join(PIECES[i] for i in ids).replace("▁", " ")
    return text[1:] if text.startswith(" ") else text


def test_context_keeps_the_leading_space_of_the_next_token() -> None:
    assert IncrementalDetokenizer(sentencepiece_decode).push([3]) == "a"
    assert IncrementalDetokenizer(sentencepiece_decode, context=[1, 2]).push([3]) == " a"


def test_a_resume_primed_with_the_forced_ids_has_no_seam() -> None:
    """A resumed attempt primes its detokenizer with the ids before the seam: the text
    after it is what one uninterrupted attempt would have written."""
    whole = IncrementalDetokenizer(sentencepiece_decode, context=[1])
    uninterrupted = "".join(whole.push([i]) for i in (2, 3, 4)) + whole.flush()
    first = IncrementalDetokenizer(sentencepiece_decode, context=[1])
    before = first.push([2]) + first.push([3])  # then the worker dies
    second = IncrementalDetokenizer(sentencepiece_decode, context=[2, 3])
    assert before + second.push([4]) + second.flush() == uninterrupted == " upon a time"
