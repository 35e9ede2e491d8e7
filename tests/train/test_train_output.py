"""What a training run shows and how it is named: the run header, progress (a bar on a terminal, plain lines in a
pipe), each evaluation's metrics and a summary on stderr, only on the main process; the result line on stdout; and a
run that continues a checkpoint (the packaged default model included) is not named after it."""

import io
import json
import re
import sys

import pytest

pytest.importorskip("accelerate", reason="training needs the [train] extra (accelerate)")
pytest.importorskip("peft", reason="training needs the [train] extra (peft)")

from test_train import cfg_for, colour_streams  # noqa: E402

from livecue import cli  # noqa: E402
from livecue.config import LiveConfig, preset  # noqa: E402
from livecue.train.logging import RunHeader, TrainLogger  # noqa: E402
from livecue.train.recipe import train  # noqa: E402

RESULT = re.compile(r"^trained \d+ steps \(last loss \d+\.\d{4}\); model: .*final$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_streams(tmp_path_factory.mktemp("output"), 4, frames=8)


# ---- the logger on its own (no training) ---------------------------------------------------------------------------
class FakeAccelerator:
    """What TrainLogger uses of accelerate's Accelerator."""

    def __init__(self, main=True):
        self.is_main_process = main
        self.started, self.logged, self.trackers = [], [], []

    def init_trackers(self, project, config=None, init_kwargs=None):
        self.started.append((project, config, init_kwargs))

    def log(self, values, step=None):
        self.logged.append((step, values))


class Terminal(io.StringIO):
    def isatty(self):
        return True


def header(tmp_path, **over):
    cfg = preset("tiny", {"train.output_dir": str(tmp_path / "run"), "train.train_data": "data/train.jsonl",
                          "train.gradient_accumulation_steps": 2, "train.per_device_batch_size": 3, **over})
    return RunHeader(cfg=cfg, records=12, total_steps=4, batches_per_epoch=4, num_processes=2, device="cpu",
                     distributed="MULTI_CPU", mixed_precision="no", trainable=1234, parameters=56789,
                     trackers=["tensorboard"], eval_records=5)


def run_logger(acc, head, resume_step=None):
    """Four update steps, an evaluation at steps 2 and 4, then the summary."""
    logger = TrainLogger(acc, head, head.cfg.name, {"train.learning_rate": 0.001}, resume_step=resume_step)
    for step in range((resume_step or 0) + 1, 5):
        logger.step(step, 1.0 / step, 1e-3, 1234.5)
        logger.log(step, {"loss": 1.0 / step, "lr": 1e-3, "tokens_per_s": 1234.5, "epoch": 0})
        if step % 2 == 0:
            logger.evaluation(step, {"eval_loss": 0.5, "decision_acc": 0.75})
    logger.close(4, [1.0, 0.25], {"eval_loss": 0.5, "decision_acc": 0.75}, head.cfg.train.output_dir + "/final")
    return logger


def test_the_header_says_what_the_run_is(tmp_path):
    lines = header(tmp_path, **{"train.eval_data": "data/val.jsonl"}).lines()
    assert lines[0].startswith("train: model 'tiny': vision random siglip, connector mlp2x_gelu, LM random llama; "
                               "LoRA r 8 on the LM; 1,234 of 56,789 parameters train")
    assert lines[1] == ("train: data data/train.jsonl: 12 records (streams); eval data/val.jsonl: 5 records every "
                        "500 steps")
    assert lines[2].startswith("train: 4 update steps = 2 epochs of 4 micro-batches per process; lr 0.001 cosine")
    assert lines[3] == ("train: 2 processes (cpu, MULTI_CPU) x per-device batch 3 x gradient accumulation 2 = "
                        "effective batch 12; mixed precision no")
    assert lines[4].startswith(f"train: output {tmp_path / 'run'} (checkpoints every 500 steps, final/); logs: "
                               "log.jsonl, tensorboard")


def test_piped_output_is_plain_lines(tmp_path, monkeypatch):
    """Off a terminal at the default interval (30 s): the header, the evaluations, one last progress line and the
    summary; never a carriage return."""
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    monkeypatch.delenv("LIVECUE_PROGRESS_INTERVAL", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    acc = FakeAccelerator()
    run_logger(acc, header(tmp_path))
    text = sys.stderr.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 5 + 2 + 1 + 1, lines
    assert lines[5] == "train: eval at step 2/4: eval_loss 0.5, decision_acc 0.75"
    assert re.match(r"^train: 100% 4/4 \[.*step/s\], loss=0\.25, lr=0\.001, tokens/s=1234$", lines[7]), lines[7]
    assert re.match(r"^train: 4 steps in 00:00 \(.* step/s\); loss 1 -> 0\.25; eval_loss 0\.5, decision_acc 0\.75; "
                    r"model: .*/run/final$", lines[8]), lines[8]
    # log.jsonl as before; the trackers got the same numbers and the config
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[0] == {"step": 1, "loss": 1.0, "lr": 0.001, "tokens_per_s": 1234.5, "epoch": 0}
    assert [step for step, _ in acc.logged] == [r["step"] for r in records]
    assert acc.logged[2] == (2, {"eval_loss": 0.5, "decision_acc": 0.75})
    project, config, kwargs = acc.started[0]
    assert project == "livecue" and config == {"train.learning_rate": 0.001}
    assert kwargs == {"tensorboard": {"purge_step": 1}}


def test_piped_output_every_interval(tmp_path, monkeypatch):
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    run_logger(FakeAccelerator(), header(tmp_path), resume_step=1)  # resumed: steps 2..4
    lines = [line for line in sys.stderr.getvalue().splitlines() if re.search(r" \d/3 ", line)]
    assert [re.search(r" (\d)/3 ", line).group(1) for line in lines] == ["1", "2", "3"]
    assert all(line.startswith("train (from step 1): ") for line in lines), lines
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 2, 3, 4, 4]  # evaluations at 2 and 4


def test_a_terminal_gets_a_bar(tmp_path, monkeypatch):
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    run_logger(FakeAccelerator(), header(tmp_path))
    text = sys.stderr.getvalue()
    assert "\r" in text and "4/4" in text and "loss=0.25" in text  # the bar, redrawn in place
    lines = [line.strip("\r") for line in text.split("\n")]
    assert "train: eval at step 4/4: eval_loss 0.5, decision_acc 0.75" in [line.rpartition("\r")[2] for line in lines]
    assert text.rstrip("\n").rpartition("\n")[2].startswith("train: 4 steps in")  # the summary, below the bar


def test_only_the_main_process_writes_or_prints(tmp_path, monkeypatch):
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    acc = FakeAccelerator(main=False)
    run_logger(acc, header(tmp_path))
    assert sys.stderr.getvalue() == "" and not (tmp_path / "run").exists()
    assert acc.started == [] and acc.logged == []


def test_progress_off_prints_nothing_but_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVECUE_PROGRESS", "0")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    acc = FakeAccelerator()
    run_logger(acc, header(tmp_path))
    assert sys.stderr.getvalue() == ""
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 6 and len(acc.logged) == 6


# ---- a real run through the command line ---------------------------------------------------------------------------
def test_piped_training_prints_a_line_per_interval(data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "0")  # a line per update step
    out = tmp_path / "run"
    rc = cli.main(["train", "tiny", "--report-to", "none", f"--train.train_data={data}", f"--train.output_dir={out}",
                   f"--train.eval_data={data}", "--train.eval_steps=2", "--train.eval_max_samples=2",
                   "--train.max_steps=4", "--train.gradient_accumulation_steps=1", "--train.log_steps=1"])
    captured = capsys.readouterr()
    assert rc == 0
    assert [line for line in captured.out.splitlines() if line] and all(
        RESULT.match(line) for line in captured.out.splitlines() if line)  # stdout: the result, nothing else
    err = captured.err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train")]
    assert lines[0].startswith("train: model 'tiny'")
    assert "train: data " in lines[1] and ": 4 records (streams); eval " in lines[1]
    assert lines[2].startswith("train: 4 update steps = 1 epoch of 4 micro-batches per process")
    assert "= effective batch 1; mixed precision" in lines[3] and lines[4].endswith("logs: log.jsonl")
    progress = [line for line in lines if re.match(r"^train: +\d+% \d/4 ", line)]
    assert [re.search(r" (\d)/4 ", line).group(1) for line in progress] == ["1", "2", "3", "4"]
    assert all(re.search(r", loss=[\d.]+, lr=[\de.+-]+, tokens/s=\d+$", line) for line in progress), progress
    evals = [line for line in lines if line.startswith("train: eval at step")]
    assert [line.split(":")[1] for line in evals] == [" eval at step 2/4", " eval at step 4/4"]
    assert all("eval_loss" in line and "decision_acc" in line for line in evals)
    assert lines[-1].startswith("train: 4 steps in ") and lines[-1].endswith(f"model: {out / 'final'}")
    assert not (out / "tensorboard").exists()  # --report-to none
    assert len((out / "log.jsonl").read_text().splitlines()) == 4 + 2


# ---- the trained model's name --------------------------------------------------------------------------------------
def saved_name(directory):
    return json.loads((directory / "livecue_config.json").read_text())["name"]


def test_a_continued_run_gets_a_name_of_its_own(data, tmp_path, capsys):
    base = train(cfg_for(data, tmp_path / "base", **{"train.max_steps": 1, "train.report_to": "none"})).final_dir
    assert saved_name(base) == "tiny"
    common = [f"--train.train_data={data}", "--train.max_steps=1", "--report-to=none"]
    assert cli.main(["train", "tiny", f"--train.init_from={base}", f"--train.output_dir={tmp_path / 'cont'}",
                     *common]) == 0
    assert saved_name(tmp_path / "cont") == saved_name(tmp_path / "cont" / "final") == "cont"
    # a checkpoint directory as the config: its name is that model's too
    assert cli.main(["train", str(base), f"--train.output_dir={tmp_path / 'again'}", *common]) == 0
    assert saved_name(tmp_path / "again" / "final") == "again"
    # --name is the user's choice, even the checkpoint's own name
    assert cli.main(["train", "tiny", f"--train.init_from={base}", f"--train.output_dir={tmp_path / 'kept'}",
                     "--name", "tiny", *common]) == 0
    assert saved_name(tmp_path / "kept" / "final") == "tiny"
    # a name that differs from the checkpoint's is the user's as well
    cfg = cfg_for(data, tmp_path / "mine", **{"train.init_from": str(base), "train.max_steps": 1,
                                              "train.report_to": "none", "name": "my-model"})
    assert saved_name(train(cfg).final_dir) == "my-model"
    assert "train: model 'cont' from " in capsys.readouterr().err


@pytest.mark.realism
def test_a_run_from_the_default_model_is_not_named_livecue_default(tmp_path):
    from livecue import pretrained as offline

    if not offline.available():
        pytest.skip("the [models] extra is not installed (SmolLM2 package missing)")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [models] extra is not installed")
    from livecue.model.load import DEFAULT_MODEL_DIR
    from livecue.train.trainable import setup_model

    cfg = LiveConfig.load(DEFAULT_MODEL_DIR).with_overrides({"train.init_from": "default",
                                                             "train.output_dir": str(tmp_path / "my-run")})
    assert cfg.name == "livecue-default"
    model, _ = setup_model(cfg)
    assert model.cfg.name == "my-run" and model.cfg.train == cfg.train
    model, _ = setup_model(cfg, keep_name=True)  # --name livecue-default
    assert model.cfg.name == "livecue-default"
