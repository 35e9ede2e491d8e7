"""The training recipe: learning, kill-and-resume, and 2-process data parallelism on CPU."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate", reason="training needs the [train] extra (accelerate)")
pytest.importorskip("peft", reason="training needs the [train] extra (peft)")

from livecue.config import preset  # noqa: E402
from livecue.data.records import write_records  # noqa: E402
from livecue.train.recipe import latest_checkpoint, train  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def colour_streams(directory, n, frames=16, seed=0):
    """Streams of solid colours; the model must say "It turns X." exactly at the frames where the colour changes."""
    rng = np.random.default_rng(seed)
    (directory / "videos").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        names = list(COLOURS)
        cur = rng.choice(names)
        changes = set(rng.choice(np.arange(3, frames), size=3, replace=False).tolist())
        msgs = [{"role": "stream", "time": 0.0, "num_frames": 1, "learn": False},
                {"role": "user", "time": 0.0, "content": "Narrate."}]
        video, last = [], 0
        for k in range(frames):
            if k in changes:
                cur = rng.choice([c for c in names if c != cur])
            video.append(np.full((32, 32, 3), COLOURS[cur], np.uint8))
            if k in changes:
                msgs.append({"role": "stream", "time": (last + 1) / 2, "num_frames": k - last, "learn": True})
                msgs.append({"role": "assistant", "time": k / 2, "content": f"It turns {cur}.", "learn": True})
                last = k
        msgs.append({"role": "stream", "time": (last + 1) / 2, "num_frames": frames - 1 - last, "learn": True})
        np.save(directory / "videos" / f"v{i}.npy", np.stack(video))
        records.append({"id": f"s{i}", "video": f"videos/v{i}.npy", "fps": 2.0, "start": 0.0,
                        "duration": frames / 2, "messages": msgs})
    write_records(directory / "train.jsonl", records)
    return directory / "train.jsonl"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_streams(tmp_path_factory.mktemp("colours"), 8)


def cfg_for(data, out, **over):
    ov = {"train.train_data": str(data), "train.output_dir": str(out), "train.log_steps": 1,
          "lora.dropout": 0.1}
    ov.update(over)
    return preset("tiny", ov)


def test_tiny_model_learns_when_to_speak(data, tmp_path):
    cfg = cfg_for(data, tmp_path / "run", **{"train.eval_data": str(data), "train.max_steps": 300,
                                             "train.eval_steps": 300, "train.learning_rate": 3e-3,
                                             "lora.enabled": False, "lora.dropout": 0.0})
    result = train(cfg)
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.25 * first
    m = result.eval
    assert m["decision_acc"] > m["majority"] + 0.1 and m["decision_acc"] > 0.9, m
    assert m["speak_recall"] > 0.8, m
    # the final checkpoint loads through the user path and keeps the learned behaviour
    from livecue.model.load import load_model

    model, tok = load_model(result.final_dir)
    assert (result.final_dir / "livecue_config.json").exists()
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in rec for rec in logs) and all("loss" in rec or "eval_loss" in rec for rec in logs)
    ids = torch.tensor([[0, 1, 2]])
    torch.testing.assert_close(model(ids).logits, result.model(ids).logits, atol=1e-5, rtol=1e-5)


def test_kill_and_resume_reproduces_losses(data, tmp_path):
    over = {"train.max_steps": 8, "train.save_steps": 3, "train.gradient_accumulation_steps": 2}
    full = train(cfg_for(data, tmp_path / "full", **over)).losses
    cut = cfg_for(data, tmp_path / "cut", **over)
    killed = train(cut, stop_after=5)          # checkpoints at 3; steps 4-5 are lost with the "kill"
    assert killed.final_dir is None and latest_checkpoint(tmp_path / "cut").name == "checkpoint-3"
    resumed = train(cut, resume=True)
    assert len(full) == 8 and len(resumed.losses) == 5  # steps 4..8
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # steps 4-5 of the killed run are not logged twice
    assert resumed.losses == pytest.approx(full[3:], rel=1e-5, abs=1e-6)
    assert killed.losses[:3] == pytest.approx(full[:3], rel=1e-6)
    for k, v in train_params(resumed).items():
        torch.testing.assert_close(v, train_params_full(tmp_path / "full")[k])


def train_params(result):
    return {k: v.detach().clone() for k, v in result.model.named_parameters() if v.requires_grad}


def train_params_full(out):
    from livecue.model.load import load_model

    model, _ = load_model(out / "final", merge_lora=False)
    from livecue.model.lora import set_trainable

    set_trainable(model)
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from livecue.config import preset
    from livecue.train.recipe import train
    cfg = preset("tiny", json.loads(sys.argv[1]))
    stop = int(sys.argv[3]) if len(sys.argv) > 3 else None
    if stop:
        train(cfg, stop_after=stop)  # "killed" after that step: resumed below from the last checkpoint
    result = train(cfg, resume=bool(stop))
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else 0
    params = torch.cat([p.detach().flatten() for p in result.model.parameters() if p.requires_grad])
    torch.save(params, sys.argv[2] + f".rank{rank}.pt")
""")


def test_two_processes_match_one(data, tmp_path):
    """Two processes, killed after step 3 and resumed from checkpoint-2, train exactly as one uninterrupted process
    with twice the accumulation; both processes' RNG states are in the checkpoint and its manifest."""
    from livecue.train.verify import verify_checkpoint

    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    common = {"train.train_data": str(data), "train.max_steps": 4, "train.log_steps": 1, "lora.dropout": 0.0}
    two = dict(common, **{"train.output_dir": str(tmp_path / "two"), "train.save_steps": 2})
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(script), json.dumps(two), str(tmp_path / "two"), "3"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from" in out.stdout and out.stdout.count("resuming from") == 1  # printed once, not per rank
    manifest = verify_checkpoint(tmp_path / "two" / "checkpoint-2")
    assert manifest["num_processes"] == 2
    assert {"state/random_states_0.pkl", "state/random_states_1.pkl"} <= set(manifest["files"])
    assert not [p for p in (tmp_path / "two").iterdir() if p.name.startswith(".")]
    r0, r1 = torch.load(tmp_path / "two.rank0.pt"), torch.load(tmp_path / "two.rank1.pt")
    assert torch.equal(r0, r1)  # parameters identical across ranks
    one = train(preset("tiny", dict(common, **{"train.output_dir": str(tmp_path / "one"),
                                               "train.gradient_accumulation_steps": 2})))
    logs = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [rec["loss"] for rec in logs] == pytest.approx(one.losses, rel=1e-5)
    params_one = torch.cat([p.detach().flatten() for p in one.model.parameters() if p.requires_grad])
    torch.testing.assert_close(r0, params_one, atol=1e-6, rtol=1e-5)


def test_train_errors(tmp_path):
    with pytest.raises(ValueError, match="train.train_data is not set"):
        train(preset("tiny", {"train.output_dir": str(tmp_path)}))


def test_accelerate_configs_load():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted((Path(__file__).parents[2] / "configs" / "accelerate").glob("*.yaml"))
    kinds = {load_config_from_file(str(f)).distributed_type.value for f in files}
    assert {"MULTI_GPU", "FSDP", "DEEPSPEED"} <= kinds, kinds


def test_continue_with_colour_bins_starts_from_the_same_outputs(data, tmp_path):
    from livecue.model.load import load_model
    from livecue.train.trainable import setup_model

    base = train(cfg_for(data, tmp_path / "base", **{"train.max_steps": 2})).final_dir
    over = {"train.init_from": str(base), "vision.frame_colour_bins": 2, "train.max_steps": 3,
            "train.connector_learning_rate": 5e-3}
    cfg = cfg_for(data, tmp_path / "colour", **over)
    old, _ = load_model(base)
    new, _ = setup_model(cfg)
    new.eval()
    assert new.vision.hidden_size == old.vision.hidden_size + 8
    assert new.connector[0].in_features == old.connector[0].in_features + 8
    frames = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ids = torch.tensor([[0, 1] + [new.v_token_id] * 2 * new.frame_num_tokens + [2]])
    with torch.no_grad():
        torch.testing.assert_close(new(ids, frames=frames).logits, old(ids, frames=frames).logits)
    # the connector trains at its own rate; the new colour columns leave zero; the result reloads as configured
    result = train(cfg)
    first = result.model.connector[0].weight
    assert first.shape[1] == old.connector[0].in_features + 8 and first[:, -8:].abs().sum() > 0
    reloaded, _ = load_model(result.final_dir)
    assert reloaded.cfg.vision.frame_colour_bins == 2 and reloaded.vision.hidden_size == first.shape[1]
    # any other vision change cannot continue a checkpoint
    bad = cfg_for(data, tmp_path / "bad", **dict(over, **{"vision.frame_token_pooled": 2}))
    with pytest.raises(ValueError, match=r"differs in \['frame_colour_bins', 'frame_token_pooled'\]"):
        setup_model(bad)


def test_connector_learning_rate_groups(data, tmp_path):
    from livecue.train.trainable import param_groups, setup_model

    model, _ = setup_model(cfg_for(data, tmp_path / "g"))
    assert len(param_groups(model, model.cfg)) == 1
    cfg = cfg_for(data, tmp_path / "g", **{"train.connector_learning_rate": 1e-2})
    groups = param_groups(model, cfg)
    assert len(groups) == 2 and groups[1]["lr"] == 1e-2
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.connector.parameters()}
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_trainable


def test_continue_with_colour_segments_keeps_the_region_tokens(data, tmp_path):
    from livecue.model.load import load_model
    from livecue.train.trainable import adopt_colour_layout, setup_model

    base = train(cfg_for(data, tmp_path / "base", **{"train.max_steps": 2,
                                                     "vision.frame_colour_bins": 2})).final_dir
    over = {"train.init_from": str(base), "vision.frame_colour_bins": 2, "vision.frame_colour_segments": 2,
            "vision.frame_segment_size": 4, "train.max_steps": 2}
    old, _ = load_model(base)
    new, _ = setup_model(cfg_for(data, tmp_path / "segments", **over))
    new.eval()
    k = old.frame_num_tokens
    assert new.frame_num_tokens == k + 2 and new.connector[0].in_features == old.connector[0].in_features + 18
    # the tower's and the histogram's connector columns are kept, so every region token embeds as before
    frames = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(new.project(new.encode_frames(frames))[:, :k],
                                   old.project(old.encode_frames(frames)))
    result = train(cfg_for(data, tmp_path / "segments", **over))
    reloaded, _ = load_model(result.final_dir)
    assert reloaded.cfg.vision.frame_colour_segments == 2 and reloaded.frame_num_tokens == k + 2
    # continuing with another minimum share keeps every connector column, silhouettes and centroids included
    with torch.no_grad():
        reloaded.connector[0].weight.normal_()
    weights = reloaded.connector[0].weight.clone()
    adopt_colour_layout(reloaded, cfg_for(data, tmp_path / "again", **dict(over, **{
        "vision.frame_segment_min_share": 0.01})))
    torch.testing.assert_close(reloaded.connector[0].weight, weights)
