"""The ``codedec`` command: cursor parsing, every bad input as one clear message + exit 2, --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codedec.cli import CliError, main, parse_location, split_at_cursor


def test_parse_location():
    c = parse_location("dir:with:colons/f.py:3:7")
    assert (str(c.path), c.line, c.col) == ("dir:with:colons/f.py", 3, 7)
    for bad in ("f.py", "f.py:1", "f.py:a:1", "f.py:0:1", ":1:1"):
        with pytest.raises(CliError):
            parse_location(bad)


def test_split_at_cursor():
    text = "ab\ncd\n"
    assert split_at_cursor(text, 1, 1) == ("", text)
    assert split_at_cursor(text, 2, 2) == ("ab\nc", "d\n")
    assert split_at_cursor(text, 2, 3) == ("ab\ncd", "\n")  # end of line
    assert split_at_cursor(text, 3, 1) == (text, "")  # the empty last line
    with pytest.raises(CliError, match="line 4 is past the end"):
        split_at_cursor(text, 4, 1)
    with pytest.raises(CliError, match="column 4 is past the end of line 1"):
        split_at_cursor(text, 1, 4)


@pytest.fixture()
def pyfile(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def add(a, b):\n    return a + b\n")
    return f


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda f: [f"{f.parent}/missing.py:1:1"], "no such file"),
        (lambda f: [f"{f}:9:1"], "past the end"),
        (lambda f: [f"{f}:1:99"], "past the end of line 1"),
        (lambda f: [f"{f}:1:1", "--model", "no-such-model"], "no-such-model"),
        (lambda f: [f"{f}:1:1", "--decoding", "bogus"], "unknown decoding component"),
        (lambda f: [f"{f.parent}:1:1"], "is a directory"),
        (lambda f: [f"{f}:1:1", "--strategy", "bogus"], "unknown decoding strategy"),
        (lambda f: [f"{f}:1:1", "--top-p", "0"], "top_p"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(capsys, pyfile, make_args, message):
    code, out, err = run_cli(capsys, "complete", *make_args(pyfile))
    assert code == 2
    assert message in err and "Traceback" not in err


def test_empty_file(capsys, tmp_path):
    f = tmp_path / "empty.py"
    f.write_text("")
    code, _, err = run_cli(capsys, "complete", f"{f}:1:1", "--model", "tiny-random")
    assert code == 2 and "empty" in err


def test_corrupt_gguf(capsys, pyfile, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    code, _, err = run_cli(capsys, "complete", f"{pyfile}:2:5", "--model", str(bad))
    assert code == 2 and "broken.gguf" in err and "Traceback" not in err


def test_json_output_on_tiny_random(capsys, pyfile):
    code, out, _ = run_cli(capsys, "complete", f"{pyfile}:2:5", "--model", "tiny-random", "--max-tokens", "5", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("text", "raw_text", "tokens", "forwards", "prompt_tokens", "reused_tokens", "ttft_ms",
                "ms_per_token", "finish_reason", "mode", "strategy"):
        assert key in data
    assert data["tokens"] <= 5 and data["prompt_tokens"] > 0 and data["forwards"] >= 1


def test_flags_map_onto_the_one_settings_type(pyfile):
    """The CLI's knobs are ServerSettings fields, as the LSP settings and websocket options."""
    from codedec.cli import build_parser, settings_from_complete_args

    args = build_parser().parse_args(["complete", f"{pyfile}:1:1", "--top-k", "7", "--top-p", "0.9",
                                      "--temperature", "0.5", "--seed", "3", "--single-line", "--no-heal"])
    s = settings_from_complete_args(args)
    assert (s.top_k, s.top_p, s.temperature, s.seed, s.line_mode, s.heal, s.time_budget_ms) == (
        7, 0.9, 0.5, 3, "single", False, None)


def test_streaming_output_on_tiny_random(capsys, pyfile):
    code, out, err = run_cli(capsys, "complete", f"{pyfile}:3:1", "--model", "tiny-random", "--max-tokens", "3")
    assert code == 0 and "forwards, finish=" in err


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "codedec.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("complete", "serve", "eval", "bench"):
        assert name in out


def test_constraint_reports_are_printed(capsys, pyfile):
    """A constraint that switched itself off says so on stderr and in --json (here: grammar on a
    file whose text before the cursor does not parse)."""
    pyfile.write_text("x = ) + \n")
    code, _, err = run_cli(capsys, "complete", f"{pyfile}:1:9", "--model", "tiny-random", "--max-tokens", "3",
                           "--decoding", "grammar")
    assert code == 0 and "-- grammar OFF: " in err, err
    code, out, _ = run_cli(capsys, "complete", f"{pyfile}:1:9", "--model", "tiny-random", "--max-tokens", "3",
                           "--decoding", "grammar", "--json")
    report = json.loads(out)["constraints"]["grammar"]
    assert report["active"] is False and report["reason"]
