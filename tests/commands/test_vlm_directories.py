"""`--model` pointed at a VLM checkpoint directory as transformers saves it (config.json, safetensors, tokenizer; no
livecue config), one per family: info, watch and bench take it; a config naming it LIVE-tunes it (train), and the
trained checkpoint evaluates and watches (tiny random weights of each family, no download)."""

from __future__ import annotations

import json

import pytest

from livecue import cli
from livecue.config import preset
from livecue.model.vlm import adapter_for

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm", "gemma3"]
SMALL = ["--vlm.frame_resolution=48", "--vlm.dtype=float32"]  # the tiny presets' frame size (Gemma 3: its own)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlmdirworld")
    assert cli.main(["world", "--out", str(root), "--n", "2", "--seed", "0", "--resolution", "48",
                     "--duration", "3"]) == 0
    return root


@pytest.fixture(scope="module", params=FAMILIES)
def saved(request, tmp_path_factory):
    """The family's Hugging Face model (tiny random), saved as a hub checkpoint directory is."""
    family = request.param
    adapter = adapter_for(family)
    tok = adapter.tiny_tokenizer()
    model = adapter.model_class().from_config(
        adapter.random_config(dict(preset(f"tiny_{family}").vlm.random_init), tok))
    path = tmp_path_factory.mktemp(family) / "hf"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return family, path


def test_info_watch_and_bench_take_the_directory(saved, capsys, tmp_path):
    family, path = saved
    assert cli.main(["info", "--model", str(path), *SMALL]) == 0
    assert family in capsys.readouterr().out
    assert cli.main(["watch", "sample:bikes", "--model", str(path), "--max-frames", "3", "--max-reply-tokens", "3",
                     *SMALL]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("3 frames")
    report = tmp_path / "bench.json"
    assert cli.main(["bench", "--model", str(path), "--frames", "4", "--window", "2", "--speak-every", "1",
                     "--reply-tokens", "2", "--pixels", "--overhead-frames", "0", "--json", str(report),
                     *SMALL]) == 0
    run = json.loads(report.read_text())
    assert run["environment"]["lm_params"] > 0 and "--pixels" in run["environment"]["command"]


def test_train_from_the_directory_then_eval_and_watch(saved, world, tmp_path, capsys):
    family, path = saved
    config = tmp_path / "live.yaml"
    config.write_text(f"architecture: vlm\nvlm:\n  name_or_path: {path}\n  frame_resolution: 48\n"
                      "  dtype: float32\nlora:\n  r: 4\n  alpha: 8\n")
    out = tmp_path / "run"
    assert cli.main(["train", str(config), f"--train.train_data={world / 'train.jsonl'}",
                     f"--train.output_dir={out}", "--train.max_steps=2", "--train.mixed_precision=no"]) == 0
    saved_cfg = json.loads((out / "final" / "livecue_config.json").read_text())
    assert saved_cfg["architecture"] == "vlm" and saved_cfg["vlm"]["family"] == family
    assert cli.main(["eval", "--model", str(out / "final"), "--data", str(world / "train.jsonl"), "--task",
                     "narration", "--out", str(tmp_path / "eval"), "--stream.max_reply_tokens=2"]) == 0
    metrics = json.loads((tmp_path / "eval" / "eval-narration.json").read_text())["metrics"]
    assert 0 <= metrics["lm_correctness"] <= 1
    capsys.readouterr()
    assert cli.main(["watch", "sample:bikes", "--model", str(out / "final"), "--max-frames", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("2 frames")
