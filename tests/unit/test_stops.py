"""Stop strings: honoured across piece boundaries, never emitted, nothing else lost."""

from __future__ import annotations

import pytest

from workers.stops import StopMatcher


def run(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.push(piece)
        out += text
        if hit:
            break
    return out + matcher.flush(), hit


def test_stop_inside_one_piece_cuts_before_it() -> None:
    assert run(["hello END world"], ["END"]) == ("hello ", True)


def test_stop_split_across_pieces_is_never_emitted() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.push("abc</") == ("abc", False)
    assert matcher.push("en") == ("", False)
    assert matcher.push("d> more") == ("", True)
    assert matcher.flush() == ""


def test_false_alarm_prefix_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("ST") == ("", False)
    assert matcher.push("AR") == ("STAR", False)


def test_flush_returns_held_text_at_end() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("a STO") == ("a ", False)
    assert matcher.flush() == "STO"


def test_earliest_of_several_stops_wins() -> None:
    assert run(["x", "yz", "w"], ["zw", "y"]) == ("x", True)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_any_chunking_gives_the_same_result(size: int) -> None:
    text = "one two\n\nthree"
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    assert run(pieces, ["\n\n"]) == ("one two", True)


def test_no_stops_passes_everything_through() -> None:
    matcher = StopMatcher([""])
    assert matcher.push("abc") == ("abc", False)
    assert matcher.flush() == ""


def test_after_a_hit_nothing_more_is_emitted() -> None:
    matcher = StopMatcher(["."])
    assert matcher.push("a.b") == ("a", True)
    assert matcher.push("more") == ("", True)


@pytest.mark.parametrize("stops", [["END"], ["abcab", "bd"], ["\n\n", "xyz"]])
def test_a_stop_string_cannot_straddle_a_resume_seam(stops: list[str]) -> None:
    """What a worker emitted never ends in the start of a stop string (that tail is held
    back), so a resumed attempt, which regenerates from the end of the emitted text with
    a fresh matcher, cuts exactly where one uninterrupted attempt would."""
    text = "one abcabd two EN\n\nEND xyz three"
    uninterrupted = run(list(text), stops)
    for dies_after in range(len(text) + 1):
        first = StopMatcher(stops)
        emitted = ""
        for char in text[:dies_after]:
            piece, hit = first.push(char)
            emitted += piece
            if hit:
                break
        if first.hit:
            assert emitted == uninterrupted[0]
            continue
        assert text.startswith(emitted)
        rest, hit = run(list(text[len(emitted) :]), stops)
        assert (emitted + rest, hit) == uninterrupted, dies_after
