"""LSP positions in UTF-16 / UTF-8 / UTF-32 <-> Python offsets."""

from __future__ import annotations

import pytest

from lsp_server.positions import UTF8, UTF16, UTF32, offset_at, position_at, units

TEXT = "a = 1\nb = '😀x'\n\nlast"  # the emoji is 1 code point, 2 UTF-16 units, 4 UTF-8 bytes


@pytest.mark.parametrize(
    "line, character, encoding, want",
    [
        (0, 0, UTF16, 0),
        (0, 5, UTF16, 5),
        (0, 99, UTF16, 5),  # past the end of the line: the end of the line
        (1, 5, UTF16, 11),  # just before the emoji
        (1, 7, UTF16, 12),  # after the emoji: 2 UTF-16 units
        (1, 8, UTF16, 13),
        (1, 6, UTF32, 12),
        (1, 9, UTF8, 12),  # 5 + 4 bytes
        (2, 0, UTF16, 15),
        (3, 4, UTF16, 20),
        (9, 0, UTF16, len(TEXT)),  # past the last line: the end of the text
    ],
)
def test_offset_at(line, character, encoding, want):
    assert offset_at(TEXT, line, character, encoding) == want


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_position_round_trip(encoding):
    for offset in range(len(TEXT) + 1):
        line, char = position_at(TEXT, offset, encoding)
        assert offset_at(TEXT, line, char, encoding) == offset


def test_units_and_errors():
    assert (units("😀", UTF16), units("😀", UTF8), units("😀", UTF32)) == (2, 4, 1)
    with pytest.raises(ValueError, match="negative"):
        offset_at(TEXT, -1, 0)


MIXED = "ab\r\ncd\ref\ngh"  # \r\n, lone \r and \n: each one line end, as LSP says


@pytest.mark.parametrize("line, character, want", [(0, 9, 2), (1, 0, 4), (1, 2, 6), (2, 0, 7), (2, 5, 9),
                                                   (3, 1, 11), (4, 0, len(MIXED))])
def test_every_lsp_line_end_counts(line, character, want):
    assert offset_at(MIXED, line, character) == want


def test_positions_with_mixed_line_ends_round_trip():
    for offset in range(len(MIXED) + 1):
        line, char = position_at(MIXED, offset)
        inside_crlf = offset == 3  # between \r and \n: the end of line 0
        assert offset_at(MIXED, line, char) == (2 if inside_crlf else offset)
    assert position_at(MIXED, 7) == (2, 0) and position_at(MIXED, 3) == (0, 2)
