"""Honest defaults (issue 18): every model-taking command defaults to the packaged default model and ``--device
auto``; a random model announces itself in one line; a missing device, file or model path is refused in one line
before any model loads."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from livecue import cli
from livecue.commands._common import DEFAULT_MODEL, RANDOM_HINT
from livecue.config import preset
from livecue.model import devices
from livecue.model.build import RANDOM_PARTS_KEY, build_model, describe_random, random_parts
from livecue.model.devices import resolve_device

NOTICE = "random weights, " + RANDOM_HINT


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


# ---- defaults ------------------------------------------------------------------------------------------------------
def test_model_taking_commands_default_to_the_default_model_and_auto(capsys):
    from livecue.model.load import DEFAULT_ALIAS

    assert DEFAULT_MODEL == DEFAULT_ALIAS
    for command in ("watch", "serve", "eval", "info", "render", "encode"):
        text = _help(command, capsys)
        assert "default: default (the packaged default model)" in text, command
        assert "(default: auto)" in text, command
    assert "default: tiny" in _help("bench", capsys)  # a benchmark of random weights is the point there


# ---- random models -------------------------------------------------------------------------------------------------
def test_random_parts_name_what_has_no_pretrained_source():
    assert random_parts(preset("tiny")) == ["vision", "connector", "lm"]
    assert random_parts(preset("live1_plus")) == ["connector"]  # pretrained LM and tower, an untrained connector
    assert random_parts(preset("tiny_qwen2_5_vl")) == ["vlm"]
    assert random_parts(preset("tiny", ["vision.name_or_path=efficientnet-lite0"])) == ["connector", "lm"]
    assert describe_random(["vision", "connector", "lm"]) == describe_random(["vlm"]) == "random weights"
    assert describe_random(["connector"]) == "random weights (connector)"


def test_build_model_warns_once_through_logging_unless_weights_follow(caplog):
    with caplog.at_level(logging.WARNING, logger="livecue"):
        build_model(preset("tiny"))
    warned = [r for r in caplog.records if hasattr(r, RANDOM_PARTS_KEY)]
    assert len(warned) == 1 and warned[0].name == "livecue.model.build"
    assert warned[0].getMessage().startswith("tiny: random weights, for tests and benchmarks")
    assert getattr(warned[0], RANDOM_PARTS_KEY) == ["vision", "connector", "lm"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="livecue"):
        build_model(preset("tiny"), warn_random=False)
    assert not [r for r in caplog.records if hasattr(r, RANDOM_PARTS_KEY)]


@pytest.mark.parametrize("model", ["tiny", "tiny-qwen2_5_vl"])
def test_a_random_preset_announces_itself_in_one_line(model, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="livecue"):
        assert cli.main(["info", "--model", model]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "random weights" in line]
    assert lines == [f"livecue info: {model}: {NOTICE}"]
    assert "random weights" not in captured.out
    assert not [r for r in caplog.records if hasattr(r, RANDOM_PARTS_KEY)]  # said once: the command's line


def test_a_random_config_file_announces_itself(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("base: tiny\nname: mine\n")
    assert cli.main(["info", "--model", str(config)]) == 0
    assert f"livecue info: {config}: {NOTICE}" in capsys.readouterr().err.splitlines()


def test_a_checkpoint_of_a_random_preset_is_not_random(tmp_path, capsys, tiny):
    """Its random parts' weights are in the checkpoint: no notice (nothing in it is left random)."""
    from livecue.model.load import save_checkpoint

    model, tokenizer = tiny
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    assert cli.main(["info", "--model", str(tmp_path / "ckpt")]) == 0
    assert "random weights" not in capsys.readouterr().err


def test_watch_announces_after_the_source_opens_and_not_when_it_fails(tmp_path, capsys):
    """A source that cannot be opened is the one line a failing ``watch`` prints; a good one comes with the notice."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert cli.main(["watch", str(bad), "--model", "tiny", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("livecue watch: error: ") and str(bad) in err[0], err
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(frames / f"{i}.png")
    assert cli.main(["watch", str(frames), "--model", "tiny", "--quiet", "--max-reply-tokens", "1"]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"livecue watch: tiny: {NOTICE}"]


# ---- devices -------------------------------------------------------------------------------------------------------
def _machine(monkeypatch, cuda: int = 0, mps: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_is_cuda_then_mps_then_cpu(monkeypatch):
    _machine(monkeypatch, cuda=2, mps=True)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0) and resolve_device("cuda:1") == torch.device("cuda", 1)
    _machine(monkeypatch, cuda=0, mps=True)
    assert resolve_device("auto") == torch.device("mps")
    _machine(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


def test_a_device_that_is_not_there_is_one_line(monkeypatch):
    _machine(monkeypatch, cuda=1)
    with pytest.raises(ValueError, match=r"^--device cuda:3: this machine has 1 CUDA device\(s\) \(cuda:0\); use "
                                         r"--device cpu or auto$"):
        resolve_device("cuda:3", option="--device")
    _machine(monkeypatch)
    with pytest.raises(ValueError) as e:
        resolve_device("cuda", option="--device")
    assert str(e.value) == (f"--device cuda: CUDA is not available on this machine (torch {torch.__version__}); "
                            "use --device cpu or auto")
    with pytest.raises(ValueError, match=r"^--device mps: MPS \(Apple Metal\) is not available on this machine"):
        resolve_device("mps", option="--device")
    for bad in ("gpu", "cuda:x", "", "cuda:-1"):
        with pytest.raises(ValueError, match=rf"^device {bad!r} is not a device: use auto, cpu, cuda"):
            resolve_device(bad)
    assert devices.available("cpu")


# ---- cheap checks come before the model loads ---------------------------------------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Loading any model fails the test: the error must come first."""
    import livecue.model.load as load

    calls: list[str] = []

    def refuse(*args, **kwargs):
        calls.append(str(args[0]) if args else "?")
        raise AssertionError(f"a model was loaded: {args} {kwargs}")

    monkeypatch.setattr(load, "load_model", refuse)
    monkeypatch.setattr(load, "load_frame_encoder", refuse)
    return calls


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_inputs_are_checked_before_the_model_loads(tmp_path, monkeypatch, no_model, capsys):
    _machine(monkeypatch)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    conversation = tmp_path / "c.json"
    conversation.write_text("[]")
    cases = [
        (["watch", str(tmp_path / "nope.mp4")], f"video file not found: {str(tmp_path / 'nope.mp4')!r}"),
        (["watch", str(tmp_path / "nope")], "not found (no such file or directory, and not a URL or camera)"),
        (["watch", "sample:nope"], "unknown sample video 'nope'"),
        (["watch", str(video), "--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
        (["watch", str(video), "--device", "cuda:0"], "--device cuda:0: CUDA is not available"),
        (["watch", str(video), "--device", "tpu9"], "--device 'tpu9' is not a device"),
        (["watch", str(video), "--model", "./runs/fnal"], "--model './runs/fnal': no such checkpoint directory"),
        (["watch", str(video), "--model", "mine.yaml"], "--model 'mine.yaml': no such checkpoint directory"),
        (["info", "--model", str(tmp_path / "ckpt") + "/"], "no such checkpoint directory or config file"),
        (["info", "--device", "mps"], "--device mps: MPS (Apple Metal) is not available"),
        (["info", "--adapter", str(tmp_path / "nope")], f"--adapter {str(tmp_path / 'nope')!r}: no such directory"),
        (["render", str(conversation), "--model", "./nope.yaml"], "--model './nope.yaml': no such"),
        (["encode", str(tmp_path / "nope"), "--out", str(tmp_path / "c")], "video directory not found"),
        (["encode", str(tmp_path), "--out", str(video)], "is a file, not a cache directory"),
        (["encode", str(tmp_path), "--out", str(tmp_path / "c"), "--device", "cuda:1"], "CUDA is not available"),
        (["encode", str(tmp_path), "--out", str(tmp_path / "c"), "--model", "./x/"], "no such checkpoint"),
        (["eval", "--data", str(tmp_path / "nope.jsonl")], "records file not found"),
        (["eval", "--data", str(video), "--device", "cuda"], "--device cuda: CUDA is not available"),
        (["serve", "--device", "cuda", "--port", "0"], "--device cuda: CUDA is not available"),
        (["serve", "--model", "/no/such/ckpt", "--port", "0"], "--model '/no/such/ckpt': no such checkpoint"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 1, argv
        line = _one_error(capsys)
        assert line.startswith(f"livecue {argv[0]}: error: ") and message in line, (argv, line)
    assert no_model == []


def test_watch_with_a_server_needs_no_local_device(tmp_path, monkeypatch, no_model, capsys):
    """``--server``: the model is remote, so a device this machine lacks is not an error (the server is refused)."""
    _machine(monkeypatch)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    rc = cli.main(["watch", str(video), "--server", "http://127.0.0.1:9", "--device", "cuda"])
    assert rc == 1 and "CUDA" not in capsys.readouterr().err


def test_auto_device_reaches_the_loader(tmp_path, monkeypatch, capsys):
    """``--device auto`` is resolved once, before loading, and the loader gets the resolved device."""
    import livecue.model.load as load

    _machine(monkeypatch)
    seen = {}

    def fake(source, **kwargs):
        seen.update(kwargs, source=source)
        raise ValueError("stop here")

    monkeypatch.setattr(load, "load_model", fake)
    assert cli.main(["info"]) == 1
    assert seen["source"] == DEFAULT_MODEL and seen["device"] == "cpu"
