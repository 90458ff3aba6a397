"""Stop strings across token boundaries: what is safe to show, where to stop."""

from codedec.stopping import TextStopper


def feed(stopper, pieces):
    text, out = "", []
    for p in pieces:
        text += p
        out.append(stopper.check(text))
    return out


def test_holds_back_a_possible_stop_prefix():
    s = TextStopper(["<END>"])
    a, b, c = feed(s, ["ab<", "EN", "D>tail"])
    assert (a.safe_len, a.stopped) == (2, False)
    assert (b.safe_len, b.stopped) == (2, False)
    assert (c.safe_len, c.stopped) == (2, True)


def test_releases_when_the_prefix_breaks():
    s = TextStopper(["<END>"])
    a, b = feed(s, ["ab<E", "X"])
    assert a.safe_len == 2 and b.safe_len == 5 and not b.stopped


def test_earliest_of_several_stops_wins():
    s = TextStopper(["\ndef ", "\nclass "], single_line=False)
    (r,) = feed(s, ["x = 1\nclass A:\ndef f"])
    assert r.stopped and r.safe_len == 5


def test_single_line():
    s = TextStopper([], single_line=True)
    a, b = feed(s, ["return x", "\n    y"])
    assert not a.stopped and a.safe_len == 8
    assert b.stopped and b.safe_len == 8


def test_no_stops_everything_is_safe():
    (r,) = feed(TextStopper(), ["anything\n"])
    assert r.safe_len == 9 and not r.stopped
