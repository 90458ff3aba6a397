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
