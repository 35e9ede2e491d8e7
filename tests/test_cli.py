"""The console script: lazy start-up, subcommands in-process, clear one-line errors."""

import json
import subprocess
import sys

from livecue import cli


def test_help_does_not_import_torch():
    code = ("import sys, livecue.cli; livecue.cli.main(['--help']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at start-up'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: livecue" in out.stdout and "render" in out.stdout


def test_unknown_command(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_config_command(capsys):
    assert cli.main(["config", "tiny", "--stream.threshold=0.6"]) == 0
    assert json.loads(capsys.readouterr().out)["stream"]["threshold"] == 0.6
    assert cli.main(["config", "--list"]) == 0
    assert "live1_plus" in capsys.readouterr().out


def test_config_errors_are_one_line(capsys):
    assert cli.main(["config", "tiny", "--stream.nope=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key" in err and "stream.nope" in err


def test_info_and_render(tmp_path, capsys):
    assert cli.main(["info", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "silence=" in out and "10 tokens" in out
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps({"messages": [{"role": "stream", "num_frames": 2, "learn": True},
                                             {"role": "assistant", "content": "Hi.", "learn": True}]}))
    assert cli.main(["render", str(conv), "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "'<v>' -> ','" in out and "'<v>' -> ']Ċ'" in out


def test_render_errors(tmp_path, capsys):
    assert cli.main(["render", str(tmp_path / "missing.json")]) == 1
    assert "conversation file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["render", str(bad)]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps([{"role": "robot"}]))
    assert cli.main(["render", str(bad), "--model", "tiny"]) == 1
    assert "role must be one of" in capsys.readouterr().err


def test_number_checkers_state_their_range():
    import argparse

    import pytest

    from livecue.argtypes import FPS, Number, int_range, positive_int, text

    assert FPS("2") == 2.0 and FPS("240") == 240.0 and FPS.range == "(0, 240]"
    for bad in ("nan", "inf", "-inf", "0", "-1", "240.001", "1e9", "two", "", "1e400"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be a finite number in \(0, 240\], got "):
            FPS(bad)
    assert positive_int(10)("10") == 10 and positive_int(10)("1_0") == 10
    for bad in ("0", "11", "2.5", "1e3", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer in \[1, 10\], got "):
            positive_int(10)(bad)
    assert int_range(0, None).range == ">= 0" and Number(float).range == "any finite value"
    with pytest.raises(argparse.ArgumentTypeError, match="must be at most 3 characters, got 4"):
        text(3)("abcd")


def test_help_states_the_ranges(capsys):
    import pytest

    for command, expected in (("watch", ["(0, 240]", "[0, 1]", "[1, 1024]", "2,000 characters"]),
                              ("encode", ["(0, 240]", "[1, 4096]"]), ("world", ["[1, 1000000]", "[16, 4096]"]),
                              ("eval", ["[0, 1]", "[1, 64]"]), ("demo", ["(0, 600]"])):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for text in expected:
            assert text in out, (command, text)
