"""The resume-corruption matrix: every damaged checkpoint is skipped (with a warning naming it and why, and the
resumed losses still equal an uninterrupted run's) or refused with one line; a changed run config is refused
naming the fields; the CLI exits 1 with one line and no traceback."""

import json
import logging
import re
import shutil

import pytest
import torch

pytest.importorskip("accelerate", reason="training needs the [train] extra (accelerate)")
pytest.importorskip("peft", reason="training needs the [train] extra (peft)")

from test_train import cfg_for, colour_streams  # noqa: E402

from livecue import cli  # noqa: E402
from livecue.train.checkpoint import MANIFEST, file_sha256, latest_checkpoint  # noqa: E402
from livecue.train.recipe import train  # noqa: E402
from livecue.train.verify import verify_checkpoint  # noqa: E402

OVER = {"train.max_steps": 4, "train.save_steps": 1}  # a "kill" after step 3 leaves checkpoint-2 and checkpoint-3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Data, the losses of an uninterrupted run, and a pristine killed run (checkpoints 2 and 3) to copy."""
    root = tmp_path_factory.mktemp("resume")
    data = colour_streams(root / "data", 4, frames=8)
    full = train(cfg_for(data, root / "full", **OVER)).losses
    killed = train(cfg_for(data, root / "killed", **OVER), stop_after=3)
    assert killed.final_dir is None and [p.name for p in sorted((root / "killed").glob("checkpoint-*"))] == [
        "checkpoint-2", "checkpoint-3"]
    return data, full, root / "killed"


@pytest.fixture
def killed(runs, tmp_path):
    data, full, pristine = runs
    out = tmp_path / "run"
    shutil.copytree(pristine, out)
    return data, full, out


def flip(path, offset=None, bit=0xFF):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 if offset is None else offset] ^= bit
    path.write_bytes(bytes(raw))


def rewrite_manifest(ckpt):
    """What a careless tool (or an attacker) does: re-record sizes and hashes after the damage."""
    manifest = json.loads((ckpt / MANIFEST).read_text())
    for rel, meta in manifest["files"].items():
        meta.update(size=(ckpt / rel).stat().st_size, sha256=file_sha256(ckpt / rel))
    (ckpt / MANIFEST).write_text(json.dumps(manifest))


def edit_torch(ckpt, rel, change):
    from accelerate.utils import load

    obj = load(ckpt / rel)
    change(obj)
    torch.save(obj, ckpt / rel)
    rewrite_manifest(ckpt)


def bad_rng_structure(obj):
    obj["random_state"] = (3, (1, 2, 3), None)


def nan_weight(ckpt):
    from safetensors.torch import load_file, save_file

    state = load_file(ckpt / "state" / "model.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, ckpt / "state" / "model.safetensors", metadata={"format": "pt"})
    rewrite_manifest(ckpt)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def set_json(path, key, value):
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))


def wrong_hash(ckpt):
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"]["state/random_states_0.pkl"]["sha256"] = "0" * 64
    (ckpt / MANIFEST).write_text(json.dumps(manifest))


def rng_member_offset(ckpt, member):
    """A byte inside one member of random_states_0.pkl's zip (torch.save's format)."""
    import zipfile

    with zipfile.ZipFile(ckpt / "state" / "random_states_0.pkl") as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member))
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2


def flip_rng_rewrite(member):
    def corrupt(ckpt):
        flip(ckpt / "state" / "random_states_0.pkl", rng_member_offset(ckpt, member), bit=0x01)
        rewrite_manifest(ckpt)
    return corrupt


# (id, how checkpoint-3 is damaged, the reason the warning must give)
FALLBACK = [
    ("no-manifest", lambda c: (c / MANIFEST).unlink(), rf"it has no {MANIFEST}"),
    ("truncated-model-weights", lambda c: truncate(c / "livecue_model.safetensors"),
     r"livecue_model\.safetensors has \d+ bytes, the manifest says \d+"),
    ("truncated-state-weights", lambda c: truncate(c / "state" / "model.safetensors"),
     r"state/model\.safetensors has \d+ bytes"),
    ("flipped-optimizer", lambda c: flip(c / "state" / "optimizer.bin"),
     r"state/optimizer\.bin does not match its sha256"),
    ("flipped-scheduler", lambda c: flip(c / "state" / "custom_checkpoint_0.pkl"),
     r"state/custom_checkpoint_0\.pkl does not match its sha256"),
    ("flipped-rng", lambda c: flip(c / "state" / "random_states_0.pkl"),
     r"state/random_states_0\.pkl does not match its sha256"),
    ("deleted-state-file", lambda c: (c / "state" / "optimizer.bin").unlink(), r"state/optimizer\.bin is missing"),
    ("deleted-rng-file", lambda c: (c / "state" / "random_states_0.pkl").unlink(),
     r"state/random_states_0\.pkl is missing"),
    ("manifest-wrong-hash", wrong_hash, r"state/random_states_0\.pkl does not match its sha256"),
    ("manifest-corrupt-json", lambda c: truncate(c / MANIFEST), rf"{MANIFEST} is not valid JSON \(line"),
    ("manifest-step-edited", lambda c: set_json(c / MANIFEST, "step", 2), r"trainer_state\.json .* disagrees"),
    # the manifest rewritten after the damage: the loaded objects must still give it away
    ("rng-pickle-flip-rewritten", flip_rng_rewrite("data.pkl"),
     r"state/random_states_0\.pkl is corrupt: the CRC of its member .*data\.pkl"),
    ("rng-torch-state-flip-rewritten", flip_rng_rewrite("data/0"),
     r"state/random_states_0\.pkl is corrupt: the CRC of its member .*data/0"),
    ("rng-structure-rewritten", lambda c: edit_torch(c, "state/random_states_0.pkl", bad_rng_structure),
     r"state/random_states_0\.pkl: invalid Python random state"),
    ("rng-not-a-state-rewritten", lambda c: edit_torch(c, "state/random_states_0.pkl", lambda o: o.clear()),
     r"state/random_states_0\.pkl has no 'random_state'"),
    ("rng-data-position-rewritten",
     lambda c: edit_torch(c, "state/random_states_0.pkl", lambda o: o.update(step=o["step"] + 1)),
     r"state/random_states_0\.pkl is at micro-batch 4, the manifest at 3"),
    ("scheduler-step-rewritten",
     lambda c: edit_torch(c, "state/custom_checkpoint_0.pkl", lambda o: o.update(last_epoch=7)),
     r"state/custom_checkpoint_0\.pkl is at step 7, the manifest at 3"),
    ("optimizer-garbage-rewritten",
     lambda c: edit_torch(c, "state/optimizer.bin", lambda o: o.pop("param_groups")),
     r"state/optimizer\.bin is not an optimizer state"),
    ("nan-weights-rewritten", nan_weight, r"state/model\.safetensors holds non-finite values"),
]


@pytest.mark.parametrize("corrupt,reason", [c[1:] for c in FALLBACK], ids=[c[0] for c in FALLBACK])
def test_damaged_newest_checkpoint_falls_back(killed, corrupt, reason, caplog):
    data, full, out = killed
    corrupt(out / "checkpoint-3")
    with caplog.at_level(logging.WARNING, logger="livecue"):
        resumed = train(cfg_for(data, out, **OVER), resume=True, stop_after=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert re.search(rf"skipping checkpoint-3: {reason}.*; falling back to checkpoint-2$", warnings[0]), warnings[0]
    assert "\n" not in warnings[0]
    # step 3 again, with checkpoint-2's weights, optimizer, schedule, data position and dropout RNG
    assert resumed.losses == pytest.approx(full[2:3], rel=1e-5, abs=1e-6)


def test_half_written_save_is_removed_and_ignored(killed, caplog):
    data, full, out = killed
    (out / "checkpoint-3" / MANIFEST).unlink()  # a save killed before its rename: a hidden, manifest-less dir
    half = out / ".checkpoint-3.tmp-00c0ffee"
    (out / "checkpoint-3").rename(half)
    with caplog.at_level(logging.WARNING, logger="livecue"):
        resumed = train(cfg_for(data, out, **OVER), resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and ".checkpoint-3.tmp-00c0ffee" in warnings[0] and "interrupted" in warnings[0]
    assert not half.exists()
    assert resumed.losses == pytest.approx(full[2:], rel=1e-5, abs=1e-6)  # steps 3 and 4, as if never killed
    assert resumed.final_dir == out / "final" and (out / "final" / MANIFEST).is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_resume_from_the_newest_checkpoint_writes_each_step_once(killed):
    data, full, out = killed
    resumed = train(cfg_for(data, out, **OVER), resume=True)
    assert resumed.losses == pytest.approx(full[3:], rel=1e-5, abs=1e-6)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary directory left
    verify_checkpoint(out / "checkpoint-3")  # a checkpoint verifies on its own


def test_all_checkpoints_corrupt_is_refused(killed):
    data, _, out = killed
    flip(out / "checkpoint-3" / "state" / "optimizer.bin")
    (out / "checkpoint-2" / MANIFEST).unlink()
    with pytest.raises(ValueError) as e:
        train(cfg_for(data, out, **OVER), resume=True)
    msg = str(e.value)
    assert "\n" not in msg and "no usable checkpoint" in msg
    assert "checkpoint-3: state/optimizer.bin does not match its sha256" in msg
    assert f"checkpoint-2: it has no {MANIFEST}" in msg


CONFIG_CHANGES = [
    ({"train.learning_rate": 0.002}, ["train.learning_rate (0.002 vs 0.001)"]),
    ({"lora.r": 4, "train.seed": 1}, ["train.seed (1 vs 0)", "lora.r (4 vs 8)"]),
    ({"train.max_steps": 5}, ["train.max_steps (5 vs 4)"]),
    ({"train.gradient_accumulation_steps": 2, "train.per_device_batch_size": 2},
     ["train.gradient_accumulation_steps (2 vs 1)", "train.per_device_batch_size (2 vs 1)"]),
    ({"lm.random_init.num_hidden_layers": 3, "lora.dropout": 0.0},
     ["lm.random_init.num_hidden_layers (3 vs 2)", "lora.dropout (0.0 vs 0.1)"]),
]


@pytest.mark.parametrize("change,named", CONFIG_CHANGES, ids=["lr", "lora-seed", "schedule", "batch", "model"])
def test_changed_run_config_is_refused_naming_the_fields(killed, change, named):
    data, _, out = killed
    with pytest.raises(ValueError) as e:
        train(cfg_for(data, out, **dict(OVER, **change)), resume=True)
    msg = str(e.value)
    assert msg.startswith("--resume: the run config differs from checkpoint-3's in ") and "\n" not in msg
    for field in named:
        assert field in msg, msg
    assert "train.save_steps" in msg  # it says what may change


def test_changed_records_are_refused_and_moved_records_accepted(killed, tmp_path):
    data, full, out = killed
    moved = tmp_path / "moved"
    shutil.copytree(data.parent, moved, ignore=shutil.ignore_patterns("full", "killed"))
    resumed = train(cfg_for(moved / data.name, out, **OVER), resume=True)  # the same records elsewhere: fine
    assert resumed.losses == pytest.approx(full[3:], rel=1e-5, abs=1e-6)
    shutil.rmtree(out / "final")
    lines = (moved / data.name).read_text().splitlines()
    (moved / data.name).write_text("\n".join(lines[:3]) + "\n")  # other records at another path
    with pytest.raises(ValueError, match=r"in train\.train_data's records \('.*/moved/train\.jsonl' vs "
                                         r"'.*/data/train\.jsonl'; 3 records, sha256 \w+ vs 4 records"):
        train(cfg_for(moved / data.name, out, **OVER), resume=True)
    manifest = json.loads((out / "checkpoint-3" / MANIFEST).read_text())  # as if the run had read them there
    manifest["data"]["train_data"] = manifest["config"]["train"]["train_data"] = str(moved / data.name)
    (out / "checkpoint-3" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"in train\.train_data's records \(3 records, sha256 \w+ vs 4 records"):
        train(cfg_for(moved / data.name, out, **OVER), resume=True)


def test_moved_output_dir_and_new_save_and_log_steps_resume(killed, tmp_path):
    data, full, out = killed
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    over = dict(OVER, **{"train.save_steps": 3, "train.log_steps": 2, "train.save_total_limit": 1})
    resumed = train(cfg_for(data, moved, **over), resume=True)
    assert resumed.losses == pytest.approx(full[3:], rel=1e-5, abs=1e-6)


def test_checkpoint_with_the_legacy_lora_key_resumes(killed):
    """A checkpoint written before ``lora.modules_to_save`` was removed (its run config and livecue_config.json still
    hold it) resumes: the key is legacy, not a change of the run config."""
    from livecue.train.checkpoint import config_sha256

    data, full, out = killed
    ckpt = out / "checkpoint-3"
    saved = json.loads((ckpt / "livecue_config.json").read_text())
    saved["lora"]["modules_to_save"] = ["connector"]
    (ckpt / "livecue_config.json").write_text(json.dumps(saved))
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["config"]["lora"]["modules_to_save"] = ["connector"]
    manifest["config_sha256"] = config_sha256(manifest["config"])  # as the older livecue computed it
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    rewrite_manifest(ckpt)
    verify_checkpoint(ckpt)
    resumed = train(cfg_for(data, out, **OVER), resume=True)
    assert resumed.losses == pytest.approx(full[3:], rel=1e-5, abs=1e-6)


def test_no_checkpoint_starts_from_scratch(runs, tmp_path, caplog):
    data, full, _ = runs
    with caplog.at_level(logging.WARNING, logger="livecue"):
        result = train(cfg_for(data, tmp_path / "new", **dict(OVER, **{"train.max_steps": 2})), resume=True)
    assert any("no checkpoint in" in r.getMessage() for r in caplog.records)
    assert result.losses == pytest.approx(full[:2], rel=1e-5)  # max_steps changes the schedule, not step 1's lr
    assert latest_checkpoint(tmp_path / "new").name == "checkpoint-1"


# ---- through the command line --------------------------------------------------------------------------------------
def cli_args(data, out, **over):
    ov = {"train.train_data": str(data), "train.output_dir": str(out), "train.log_steps": 1, "lora.dropout": 0.1,
          **OVER, **over}
    return ["train", "tiny", "--resume"] + [f"--{k}={v}" for k, v in ov.items()]


@pytest.mark.parametrize("damage,change,expect", [
    ("both", {}, r"^livecue train: error: --resume: no usable checkpoint in .*checkpoint-3: .*checkpoint-2: "),
    (None, {"train.learning_rate": 0.0002}, r"^livecue train: error: --resume: the run config differs from "
                                            r"checkpoint-3's in train\.learning_rate \(0\.0002 vs 0\.001\)"),
    ("newest", {"train.learning_rate": 0.0002}, r"differs from checkpoint-2's in train\.learning_rate"),
], ids=["all-corrupt", "config", "config-after-fallback"])
def test_cli_refusals_are_one_line(killed, capsys, damage, change, expect):
    data, _, out = killed
    if damage in ("both", "newest"):
        flip(out / "checkpoint-3" / "state" / "random_states_0.pkl")
    if damage == "both":
        truncate(out / "checkpoint-2" / "state" / "optimizer.bin")
    assert cli.main(cli_args(data, out, **change)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(expect, err.strip()), err


def test_cli_falls_back_with_a_warning(killed, capsys, caplog):
    data, _, out = killed
    flip(out / "checkpoint-3" / "state" / "random_states_0.pkl")
    with caplog.at_level(logging.WARNING, logger="livecue"):
        assert cli.main(cli_args(data, out)) == 0
    assert [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()] == [
        "--resume: skipping checkpoint-3: state/random_states_0.pkl does not match its sha256 in "
        f"{MANIFEST} (corrupt or modified); falling back to checkpoint-2"]
    assert f"resuming from {out / 'checkpoint-2'} (step 2" in capsys.readouterr().out
