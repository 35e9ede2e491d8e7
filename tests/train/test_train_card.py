"""The model card of a training run's checkpoints and final model: its training data (records fingerprint, steps,
epochs), the last loss and validation metrics of log.jsonl, written after the manifest and not listed in it, so a
refreshed card never breaks a resume."""

import json

import pytest

pytest.importorskip("accelerate", reason="training needs the [train] extra (accelerate)")
pytest.importorskip("peft", reason="training needs the [train] extra (peft)")

from test_train import cfg_for, colour_streams  # noqa: E402

from livecue.model.card import CARD_FILE, MARKER, Evaluation  # noqa: E402
from livecue.model.card_files import FACTS_FILE, read_facts, record_evaluation  # noqa: E402
from livecue.train.checkpoint import MANIFEST, file_sha256, last_logged  # noqa: E402
from livecue.train.recipe import train  # noqa: E402
from livecue.train.verify import verify_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card_run")
    data = colour_streams(root / "data", 4, frames=8)
    out = root / "out"
    train(cfg_for(data, out, **{"train.max_steps": 2, "train.save_steps": 1, "train.eval_data": str(data),
                                "train.eval_steps": 1, "train.eval_max_samples": 2}))
    return data, out


def logged(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_checkpoint_card_records_the_run_up_to_its_step(run):
    data, out = run
    ckpt = out / "checkpoint-1"
    card = (ckpt / CARD_FILE).read_text()
    step1 = [r for r in logged(out) if r["step"] == 1]
    loss = next(r["loss"] for r in step1 if "loss" in r)
    validation = next(r for r in step1 if "eval_loss" in r)
    assert MARKER in card and "**Trained from random weights.**" in card
    assert f"- **data**: `{data}` (4 records, sha256 `{file_sha256(data)}`)" in card
    assert "- **steps**: 1 update steps of 2 planned (a checkpoint saved part-way), 0.25 epochs" in card
    assert f"- **last training loss**: {loss:.4f} (step 1)" in card
    assert (f"- **validation** (step 1, on `{data}`, at most 2 records): validation loss "
            f"{validation['eval_loss']:.3f}, speak/silence decision accuracy {validation['decision_acc']:.3f}") in card
    assert f'load_model("{ckpt}")' in card  # the published name, not the temporary directory it was written in


def test_final_card(run):
    data, out = run
    card = (out / "final" / CARD_FILE).read_text()
    last = [r for r in logged(out) if r["step"] == 2]
    assert "- **steps**: 2 update steps, 0.50 epochs" in card and "planned" not in card
    assert f"- **last training loss**: {next(r['loss'] for r in last if 'loss' in r):.4f} (step 2)" in card
    assert f'load_model("{out / "final"}")' in card
    assert read_facts(out / "final").training.sha256 == file_sha256(data)


def test_card_is_not_in_the_manifest_so_refreshing_it_keeps_the_checkpoint_valid(run, tmp_path):
    import shutil

    _, out = run
    ckpt = tmp_path / "checkpoint-1"
    shutil.copytree(out / "checkpoint-1", ckpt)
    listed = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert CARD_FILE not in listed and "livecue_model.safetensors" in listed
    (ckpt / CARD_FILE).write_text((ckpt / CARD_FILE).read_text() + "\nEdited by hand.\n")
    record_evaluation(ckpt, Evaluation("Free-running", "livecue eval --task free", {"f1": 0.5}))
    assert (ckpt / FACTS_FILE).is_file()
    assert "| speak-timing F1 (free-running) | 0.500 |" in (ckpt / CARD_FILE).read_text()
    assert verify_checkpoint(ckpt)["step"] == 1  # what --resume checks first


def test_last_logged_reads_up_to_the_step(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join([
        json.dumps({"step": 1, "loss": 2.0, "lr": 0.1, "tokens_per_s": 5.0, "epoch": 0}),
        json.dumps({"step": 2, "loss": 1.5, "lr": 0.1, "tokens_per_s": 5.0, "epoch": 0}),
        json.dumps({"step": 2, "eval_loss": 1.7, "decision_acc": 0.8}),
        json.dumps({"step": 4, "loss": 0.5, "lr": 0.1, "tokens_per_s": 5.0, "epoch": 1}),
        '{"step": 4, "eval_lo']) + "\n")  # a torn last line
    assert last_logged(log, 3) == {"train": {"step": 2, "loss": 1.5},
                                   "validation": {"step": 2, "eval_loss": 1.7, "decision_acc": 0.8}}
    assert last_logged(log, 4)["train"] == {"step": 4, "loss": 0.5}
    assert last_logged(tmp_path / "missing.jsonl", 4) == {}
