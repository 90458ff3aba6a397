"""LSP positions (UTF-16 columns) and incremental edits."""

from __future__ import annotations

import random

import pytest

from codedec.monitor.documents import apply_change, incremental_change, position


def test_positions_count_utf16_units():
    text = "a = 1\nb = '😀x'\n"
    assert position(text, 0) == (0, 0)
    assert position(text, text.index("x")) == (1, 7)  # the emoji is two UTF-16 units
    assert position(text, len(text)) == (2, 0)
    with pytest.raises(ValueError):
        position(text, len(text) + 1)


@pytest.mark.parametrize("seed", range(20))
def test_incremental_change_round_trips(seed):
    rng = random.Random(seed)
    alphabet = "ab \n😀é("
    old = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    new = list(old)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(new))
        if rng.random() < 0.5 and at < len(new):
            del new[at : at + rng.randint(1, 3)]
        else:
            new[at:at] = rng.choice(alphabet) * rng.randint(1, 3)
    new = "".join(new)
    change = incremental_change(old, new)
    assert (change is None) == (old == new)
    if change is not None:
        assert apply_change(old, change) == new


def test_appending_sends_only_the_new_text():
    change = incremental_change("x = os", "x = os.pa")
    assert change.start_pos == change.end_pos == (0, 6) and change.text == ".pa"
