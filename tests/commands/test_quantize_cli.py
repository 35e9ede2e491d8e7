"""``--quantize`` on the model-taking commands and ``livecue quantize`` (θ re-calibrated into a checkpoint copy)."""

import json

import pytest

from livecue import cli
from livecue.commands import _common
from livecue.commands import quantize as quantize_cmd
from livecue.config import QUANTIZE_SCHEMES, LiveConfig
from livecue.data.world import WorldConfig, generate_world
from livecue.model.load import load_model, save_checkpoint
from livecue.model.quantize import SCHEMES, quantized_layers

pytest.importorskip("torchao")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint and three short world streams."""
    root = tmp_path_factory.mktemp("quantize_cli")
    model, tok = load_model("tiny")
    save_checkpoint(model, tok, root / "ckpt", card=False)
    generate_world(root / "world", 3, seed=9, split="val", cfg=WorldConfig(resolution=32, duration=6.0),
                   video_format="npy")
    return root / "ckpt", root / "world" / "val.jsonl"


def test_choices_agree():
    assert _common.QUANTIZE_CHOICES == QUANTIZE_SCHEMES
    assert quantize_cmd.SCHEMES == SCHEMES


@pytest.mark.parametrize("command", ["watch", "serve", "eval", "info"])
def test_model_commands_take_quantize(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert "--quantize {none,int8,int4,fp8}" in capsys.readouterr().out


def test_bad_scheme_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["info", "--model", "tiny", "--quantize", "int3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "argument --quantize: invalid choice: 'int3'" in err


def test_fp8_on_cpu_is_one_line(capsys):
    assert cli.main(["info", "--model", "tiny", "--device", "cpu", "--quantize", "fp8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("livecue info: error: --quantize fp8 needs a CUDA GPU with float8 support")


def test_info_loads_quantized_and_warns_about_theta(setup, capsys, caplog):
    ckpt, _ = setup
    assert cli.main(["info", "--model", str(ckpt), "--device", "cpu", "--quantize", "int8"]) == 0
    assert "calibrated at full precision" in caplog.text and "livecue quantize" in caplog.text


def test_quantize_command_writes_a_recalibrated_copy(setup, tmp_path, capsys):
    ckpt, data = setup
    out = tmp_path / "q"
    assert quantize_cmd.main(["--model", str(ckpt), "--scheme", "int4", "--calibration", str(data),
                              "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "agreement" in printed and "speak F1" in printed
    report = json.loads((out / quantize_cmd.REPORT_FILE).read_text())
    assert report["scheme"] == "int4" and report["records"] == 3 and report["decisions"] > 20
    assert report["command"].startswith("livecue quantize --model")
    assert abs(report["rate_after"] - report["reference_rate"]) <= abs(report["rate_before"] - report["reference_rate"])
    cfg = LiveConfig.load(out)
    assert cfg.quantize.scheme == "int4" and cfg.quantize.threshold == report["threshold"]
    assert cfg.stream.threshold == LiveConfig.load(ckpt).stream.threshold  # the full-precision θ is kept
    model, _ = load_model(out)
    assert quantized_layers(model.lm) and model.cfg.stream.threshold == report["threshold"]


def test_quantize_command_refusals(setup, tmp_path):
    ckpt, data = setup
    with pytest.raises(ValueError, match="needs a livecue checkpoint directory"):
        quantize_cmd.main(["--model", "tiny", "--scheme", "int8", "--calibration", str(data), "--out",
                           str(tmp_path / "a")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="is not an empty directory"):
        quantize_cmd.main(["--model", str(ckpt), "--scheme", "int8", "--calibration", str(data), "--out",
                           str(tmp_path / "full")])
    with pytest.raises(FileNotFoundError, match="--calibration"):
        quantize_cmd.main(["--model", str(ckpt), "--scheme", "int8", "--calibration", str(tmp_path / "no.jsonl"),
                           "--out", str(tmp_path / "b")])
    with pytest.raises(ValueError, match="takes --scheme, not --quantize"):
        quantize_cmd.main(["--model", str(ckpt), "--scheme", "int8", "--quantize", "int8", "--calibration",
                           str(data), "--out", str(tmp_path / "c")])
