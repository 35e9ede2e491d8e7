"""Experiment tracking through accelerate's trackers (``train.report_to`` / ``--report-to``): TensorBoard end to end
(the values of log.jsonl, each step once across a kill and a resume, the run config as hyperparameters); a tracker
that is not installed is refused in one line before anything loads; resumable and hash-stable config fields."""

import hashlib
import json

import pytest
import yaml

pytest.importorskip("accelerate", reason="training needs the [train] extra (accelerate)")
pytest.importorskip("peft", reason="training needs the [train] extra (peft)")

from test_train import cfg_for, colour_streams  # noqa: E402

from livecue import cli  # noqa: E402
from livecue.config import preset  # noqa: E402
from livecue.train import logging as train_logging  # noqa: E402
from livecue.train.logging import installed_trackers, resolve_trackers  # noqa: E402
from livecue.train.manifest import RESUMABLE_CHANGES, config_sha256, flatten  # noqa: E402
from livecue.train.recipe import train  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_streams(tmp_path_factory.mktemp("tracking"), 4, frames=8)


def test_report_to_is_validated():
    assert preset("tiny").train.trackers == ("tensorboard",)  # the default: local files only
    assert preset("tiny", {"train.report_to": "tensorboard, wandb"}).train.trackers == ("tensorboard", "wandb")
    assert preset("tiny", {"train.report_to": "none"}).train.trackers == ()
    assert preset("tiny", {"train.report_to": "all"}).train.trackers == ("all",)
    for bad in ("neptune", "", "all,wandb", "none,tensorboard"):
        with pytest.raises(ValueError, match=r"^train\.report_to"):
            preset("tiny", {"train.report_to": bad})


def test_cli_refuses_an_unknown_tracker_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "tiny", "--report-to", "neptune"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("livecue train: error: argument --report-to: --report-to must be tensorboard, wandb, "
                             "trackio, mlflow")


@pytest.mark.parametrize("tracker", ["wandb", "trackio", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_before_training(tracker, data, tmp_path, capsys):
    if tracker in installed_trackers():
        pytest.skip(f"{tracker} is installed here")
    out = tmp_path / "run"
    rc = cli.main(["train", "tiny", f"--report-to={tracker}", f"--train.train_data={data}",
                   f"--train.output_dir={out}"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"livecue train: error: train.report_to: {tracker} is not installed: pip install {tracker} "
        "(or --report-to none)"]
    assert not out.exists()  # refused before the model, the data or the output directory


def test_missing_tensorboard_names_the_train_extra(monkeypatch):
    monkeypatch.setattr(train_logging, "installed_trackers", lambda: set())
    with pytest.raises(ImportError, match=r"^train\.report_to: tensorboard is not installed: pip install tensorboard "
                                          r"\(it comes with pip install 'livecue\[train\]'\) \(or --report-to none\)$"):
        resolve_trackers("tensorboard")
    assert resolve_trackers("all") == [] and resolve_trackers("none") == []
    monkeypatch.setattr(train_logging, "installed_trackers", lambda: {"tensorboard", "mlflow"})
    assert resolve_trackers("all") == ["tensorboard", "mlflow"]


def test_tensorboard_gets_what_log_jsonl_gets_each_step_once(data, tmp_path):
    """A run killed after step 3 and resumed from checkpoint-2: TensorBoard's scalars are log.jsonl's, step for step
    (the killed run's step 3 hidden by purge_step), and the run config is there as hyperparameters."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = cfg_for(data, out, **{"train.max_steps": 4, "train.save_steps": 2, "train.eval_data": str(data),
                                "train.eval_steps": 2, "train.eval_max_samples": 2,
                                "train.report_to": "tensorboard"})
    train(cfg, stop_after=3)
    train(cfg, resume=True)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    events = EventAccumulator(str(out / "tensorboard" / "livecue"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "tokens_per_s", "epoch", "eval_loss", "decision_acc", "majority", "speak_recall"} <= tags
    for key in ("loss", "lr", "eval_loss", "decision_acc"):
        expected = [(r["step"], r[key]) for r in records if key in r]
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-6), key
    assert [s for s, _ in expected] == [2, 4]  # evaluated at step 2 (the killed run) and 4 (the resumed one)
    hparams = sorted((out / "tensorboard" / "livecue").glob("*/hparams.yml"))
    assert len(hparams) == 2  # one per run
    logged = yaml.safe_load(hparams[-1].read_text())
    assert logged["train.learning_rate"] == cfg.train.learning_rate and logged["name"] == cfg.name
    assert logged["run.records"] == 4 and logged["run.total_steps"] == 4
    assert logged["lora.target_modules"] == cfg.lora.target_modules


def test_resuming_may_change_the_trackers_and_the_name():
    assert {"train.report_to", "name"} <= RESUMABLE_CHANGES


def test_older_manifests_keep_their_config_hash():
    """The fields the hash leaves out are those of format 1 (before name and train.report_to became resumable), so a
    checkpoint written by an older livecue still verifies."""
    config = preset("tiny").to_dict()
    del config["train"]["report_to"]  # an older livecue's config has no such field
    older = {"train.output_dir", "train.eval_data", "train.eval_steps", "train.eval_max_samples", "train.log_steps",
             "train.save_steps", "train.save_total_limit", "train.num_workers", "train.gradient_checkpointing"}
    fixed = {k: v for k, v in flatten(config).items() if k not in older and k != "train.train_data"}
    assert config_sha256(config) == hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()
