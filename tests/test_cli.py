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
