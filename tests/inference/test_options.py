"""One set of stream options for every front door (issue 16): ``watch``, ``demo``, ``serve``, ``eval``, ``bench``, the
WebSocket ``open`` message and the Python API spell each option the same way and refuse a bad value with the same
message, because each option is declared once, with its one checker, in ``livecue.inference.options.OPTIONS``."""

from __future__ import annotations

import argparse
import importlib
import json
import re

import pytest

from livecue import cli
from livecue.inference.memory import SinkWindow, Unbounded
from livecue.inference.options import OPTIONS, SamplingConfig, StreamOptions, check_option
from livecue.serve.protocol import CLIENT_OPTIONS, Limits, ProtocolError, open_message, parse_text

ALL = tuple(OPTIONS)
#: the stream options each command takes (every command that streams takes them all)
FRONT_DOORS: dict[str, tuple[str, ...]] = {
    "watch": ALL, "demo": ALL, "serve": ALL, "eval": ("threshold", "memory"), "bench": ("memory",),
}
#: what else a command needs on its command line to reach the option
REQUIRED = {"watch": ["video.mp4"], "eval": ["--data", "records.jsonl"]}
#: a value each option's checker refuses, as typed on a command line (and, for the numbers, sent as JSON)
BAD = {"threshold": ["2", "nan", "-1"], "fps": ["0", "nan", "inf", "1000"], "system_prompt": [" "],
       "max_reply_tokens": ["0", "4097", "2.5"], "temperature": ["-1", "inf"], "top_p": ["0", "2"],
       "repetition_penalty": ["0", "101"], "memory": ["lots", "sink:0", "sink:8:8", "sink:x"]}
ERROR = re.compile(r"^livecue (\w+): error: argument (--[\w-]+): (.*) \(see livecue \1 --help\)$")


def test_every_option_has_bad_values_and_every_command_its_options():
    assert set(BAD) == set(OPTIONS)
    for command, names in FRONT_DOORS.items():
        parser = importlib.import_module(f"livecue.commands.{command}").build_parser()
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert {name for name in OPTIONS if OPTIONS[name].flag in flags} == set(names), command
        for action in parser._actions:  # the option's own checker, not a look-alike
            if action.dest in names:
                assert action.option_strings[0] == OPTIONS[action.dest].flag
                assert action.type is OPTIONS[action.dest].check or command == "bench", (command, action.dest)


def _cli_error(command: str, flag: str, value: str, capsys) -> str:
    """The one error line of ``livecue COMMAND FLAG VALUE``, less its command name."""
    try:
        code = cli.main([command, *REQUIRED.get(command, []), flag, value])
    except SystemExit as e:
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (command, flag, value, lines)
    match = ERROR.match(lines[0])
    assert match and match[1] == command and match[2] == flag, lines[0]
    return match[3]


@pytest.mark.parametrize("name", ALL)
def test_every_front_door_refuses_a_bad_value_with_the_same_message(name, capsys):
    """For each option and each bad value: every command that takes the option refuses it with the same one line,
    the Python API with the same message naming the option, and the WebSocket ``open`` message (for the options a
    client may set) with exactly the Python API's message."""
    option = OPTIONS[name]
    for value in BAD[name]:
        messages = {command: _cli_error(command, option.flag, value, capsys)
                    for command, names in FRONT_DOORS.items() if name in names}
        assert len(set(messages.values())) == 1, messages
        cli_message = messages["watch"]
        typed = _as_json_value(value)
        with pytest.raises(ValueError) as python:
            StreamOptions(**{name: typed})
        assert str(python.value) in (f"{name} {cli_message}", cli_message)  # the same words, naming the option
        with pytest.raises(ValueError) as checked:
            check_option(name, typed)
        assert str(checked.value) == str(python.value)
        if name in CLIENT_OPTIONS:
            with pytest.raises(ProtocolError) as ws:
                parse_text(json.dumps({"type": "open", name: typed}), Limits())
            assert (ws.value.code, ws.value.message) == ("bad_message", str(python.value))


def _as_json_value(text: str):
    """A command-line value as a client would send it: a number when it reads as one, else the string."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def test_the_websocket_checks_are_the_option_checkers():
    """``open`` takes every stream option but the server's memory policy; ``update`` checks θ with θ's checker."""
    assert CLIENT_OPTIONS == tuple(name for name in OPTIONS if name != "memory")
    with pytest.raises(ProtocolError, match="unknown field"):
        parse_text('{"type": "open", "memory": "unbounded"}', Limits())
    for bad in (2, -0.5, "0.5", True, None):
        with pytest.raises(ProtocolError) as ws:
            parse_text(json.dumps({"type": "update", "threshold": bad}), Limits())
        with pytest.raises(ValueError) as python:
            check_option("threshold", bad)
        assert ws.value.message == str(python.value)
    # past the option's own range, the server's limits (tighter) apply, naming the limit
    with pytest.raises(ProtocolError, match=r"fps must be at most 30 on this server \(its limit max_fps\), got 31"):
        parse_text('{"type": "open", "fps": 31}', Limits())
    opened = parse_text(open_message(False, StreamOptions(threshold=0.5, top_p=0.9)), Limits())
    assert opened.options == StreamOptions(threshold=0.5, top_p=0.9) and opened.silence is False


def test_stream_options_resolve_option_by_option():
    base = StreamOptions(threshold=0.3, temperature=0.7, memory="sink:4096")
    mine = StreamOptions(threshold=0.9, top_p=0.5)
    merged = base.merged(mine)
    assert merged == StreamOptions(threshold=0.9, temperature=0.7, top_p=0.5, memory="sink:4096")
    assert merged.sampling == SamplingConfig(temperature=0.7, top_p=0.5)
    assert StreamOptions().sampling == SamplingConfig() and StreamOptions().to_dict() == {}
    assert base.merged(StreamOptions(temperature=0.0)).temperature == 0.0  # an explicit default still overrides
    assert StreamOptions(memory="SINK:100").memory_policy() == SinkWindow(100, 12)
    assert StreamOptions().memory_policy(Unbounded()) == Unbounded()
    assert isinstance(StreamOptions(threshold=1).threshold, float)
    assert StreamOptions(max_reply_tokens=8.0).max_reply_tokens == 8
    parser = argparse.ArgumentParser()
    StreamOptions.add_arguments(parser, ("threshold", "memory"), defaults={"memory": "sink:64"})
    args = parser.parse_args(["--threshold", "0.25"])
    assert StreamOptions.from_args(args) == StreamOptions(threshold=0.25, memory="sink:64")
    assert "(default: sink:64)" in " ".join(parser.format_help().split())
