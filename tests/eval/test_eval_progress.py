"""``livecue eval`` progress: a tqdm bar on a terminal, periodic plain lines otherwise (stderr), never in the results
(stdout); the θ recommendation printed and written with what it rests on and how far to trust it."""

import io
import json
import sys

import numpy as np
import pytest

from livecue import cli
from livecue.config import LiveConfig
from livecue.data.records import write_records
from livecue.model.card_files import read_facts
from livecue.model.load import save_checkpoint


def record(rid: str, video: str) -> dict:
    msgs = [{"role": "stream", "time": 0.0, "num_frames": 1, "learn": False},
            {"role": "user", "time": 0.0, "content": "Narrate."},
            {"role": "stream", "time": 0.5, "num_frames": 3, "learn": True},
            {"role": "assistant", "time": 1.5, "content": "A red square appears.", "learn": True},
            {"role": "stream", "time": 2.0, "num_frames": 2, "learn": True}]
    return {"id": rid, "video": video, "fps": 2.0, "start": 0.0, "duration": 3.0, "messages": msgs}


def question(rid: str) -> dict:
    msgs = [{"role": "user", "time": 0.0, "content": "What is the action in the video?"},
            {"role": "stream", "time": 0.0, "num_frames": 2, "learn": True},
            {"role": "assistant", "time": 0.5, "content": "Boil water.", "learn": True}]
    return {"id": rid, "video": "a.npy", "fps": 2.0, "start": 0.0, "duration": 1.0, "messages": msgs,
            "meta": {"categories": ["Boil water.", "Cut the onion."]}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    rng = np.random.default_rng(0)
    np.save(root / "a.npy", rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    write_records(root / "narration.jsonl", [record(f"n{i}", "a.npy") for i in range(3)])
    write_records(root / "coin.jsonl", [question("c0"), question("c1")])
    return root


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_eval_prints_progress_lines_on_stderr_only(data, tiny, tmp_path, capsys, monkeypatch):
    """Not a terminal: whole lines (no carriage return) for the forward and the θ sweep; the recommendation states
    its n and a confidence note in the printed text and in eval-narration.json; --save-threshold records the run."""
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    model, tok = tiny
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt")
    out = tmp_path / "out"
    argv = ["eval", "--model", str(ckpt), "--data", str(data / "narration.jsonl"), "--out", str(out), "--calibrate",
            "--grid", "0.3,0.8", "--free-samples", "2", "--save-threshold", "--stream.max_reply_tokens=2"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    err, text = captured.err, captured.out
    assert "\r" not in err
    assert "eval narration: 100%" in err and "3/3" in err
    sweep = [line for line in err.splitlines() if line.startswith("θ sweep:")]
    assert sweep[-1].startswith("θ sweep: 100%") and "4/4" in sweep[-1] and "theta=0.8" in sweep[-1]
    assert len(sweep) == 4  # interval 0: one line per run (2 θ × 2 streams)
    assert "θ sweep" not in text and "%|" not in text and "eval narration:" not in text  # results only on stdout
    # the recommendation: what it rests on and how far to trust it
    assert "rests on 2 free-running streams (" in text and "reference replies)" in text
    assert "bootstrap interval" in text and "fewer than 20 streams" in text and "rough guide" in text
    cal = json.loads((out / "eval-narration.json").read_text())["calibration"]
    assert cal["n"]["source"] == "free-running" and cal["n"]["streams"] == 2 and cal["n"]["references"] == 2
    assert cal["n"]["decisions"] == 2 * 6 and "rough guide" in cal["note"] and len(cal["interval"]) == 2
    assert cal["interval"][0] <= cal["recommended"] <= cal["interval"][1] and 0 < cal["agreement"] <= 1
    # --save-threshold: θ in the config; the run (command, metrics, basis) in the checkpoint's model card
    assert LiveConfig.load(ckpt).stream.threshold == cal["recommended"]
    (evaluation,) = read_facts(ckpt).evaluations
    assert evaluation.title == f"narration on {data / 'narration.jsonl'}"
    assert evaluation.command.startswith("livecue eval --model ")
    assert evaluation.command.endswith("--save-threshold --stream.max_reply_tokens=2")
    assert evaluation.metrics["recommended_threshold"] == cal["recommended"] and "fluency" in evaluation.metrics
    assert "rests on 2 free-running streams" in evaluation.notes[0] and cal["note"] in evaluation.notes
    card = (ckpt / "README.md").read_text()
    assert evaluation.command in card and "rough guide" in card
    assert f"saved θ to {ckpt}" in text and "livecue_card.json" in text


def test_terminal_eval_draws_a_bar_and_quiet_draws_nothing(data, tmp_path, capsys, monkeypatch):
    """On a terminal: a tqdm bar redrawn in place (per sample of a generation task); LIVECUE_PROGRESS=0: silence."""
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    argv = ["eval", "--model", "tiny", "--data", str(data / "coin.jsonl"), "--task", "coin-step",
            "--max-new-tokens", "2", "--out", str(tmp_path)]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(argv) == 0
    bar = terminal.getvalue()
    assert "\r" in bar and "eval coin-step" in bar and "2/2" in bar and "sample" in bar
    text = capsys.readouterr().out
    assert "\r" not in text and "livecue eval: coin-step (2 samples)" in text
    monkeypatch.setenv("LIVECUE_PROGRESS", "0")
    silent = Terminal()
    monkeypatch.setattr(sys, "stderr", silent)
    assert cli.main(argv) == 0
    assert "eval coin-step" not in silent.getvalue() and "\r" not in silent.getvalue()


def test_missing_inputs_fail_before_the_model_loads(data, tmp_path, capsys):
    base = ["eval", "--model", "tiny", "--data", str(data / "narration.jsonl"), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--feature-cache", str(tmp_path / "none")]) == 1
    assert f"no feature cache index at '{tmp_path / 'none' / 'index.json'}'" in capsys.readouterr().err
    assert cli.main([*base, "--task", "coin-step", "--categories", str(tmp_path / "none.txt")]) == 1
    assert "category list not found" in capsys.readouterr().err
    assert cli.main([*base, "--calibrate", "--save-threshold"]) == 1  # a preset has no checkpoint to update
    assert "--save-threshold needs a checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything ran
