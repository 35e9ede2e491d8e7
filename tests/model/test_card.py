"""Model cards (livecue.model.card, card_parts, card_files): each section's exact text from typed inputs, the
Hugging Face metadata, the card every checkpoint gets, the packaged default model's card, and the card's Python
snippet running as printed."""

import json
import runpy
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from livecue.config import LiveConfig, preset
from livecue.model import card as C
from livecue.model.card_files import (
    FACTS_FILE,
    card_summary,
    is_generated,
    load_facts,
    read_facts,
    record_evaluation,
    refresh_card,
    save_facts,
    training_from_manifest,
    write_card,
)
from livecue.model.card_parts import base_models, card_license, hub_id, random_parts
from livecue.model.load import DEFAULT_MODEL_DIR, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = preset("tiny")
DEFAULT = LiveConfig.load(DEFAULT_MODEL_DIR)
RUN = C.TrainingSummary(data="data/train.jsonl", records=8, sha256="ab" * 32, steps=2, total_steps=4, epochs=0.5,
                        final_loss=1.23456, final_loss_step=2, validation={"eval_loss": 1.5, "decision_acc": 0.75},
                        validation_step=2, validation_data="data/val.jsonl", validation_records=4,
                        init_from="runs/stage1/final")
EVAL = C.Evaluation("Free-running on 4 streams", "livecue eval --model me/x --data val.jsonl --task free",
                    {"f1": 0.5, "time_diff": 0.25, "samples": 4}, ["A note."])


def text(block: str) -> str:
    return textwrap.dedent(block).strip("\n")


# ---- sections, word for word ---------------------------------------------------------------------------------------
def test_front_matter_of_a_random_model():
    assert C.front_matter(TINY, C.CardFacts()) == text("""
        ---
        library_name: livecue
        license: apache-2.0
        pipeline_tag: video-text-to-text
        tags:
        - video-text-to-text
        - streaming
        - videollm-online
        - live
        - random-weights
        ---""")


def test_front_matter_names_the_pretrained_base_and_its_license():
    assert C.front_matter(DEFAULT, C.CardFacts(training=RUN)) == text("""
        ---
        base_model:
        - HuggingFaceTB/SmolLM2-135M-Instruct
        library_name: livecue
        license: apache-2.0
        pipeline_tag: video-text-to-text
        tags:
        - video-text-to-text
        - streaming
        - videollm-online
        - live
        ---""")


def test_intro_of_a_random_model_says_so_loudly():
    assert C.intro(TINY, C.CardFacts()) == text("""
        # tiny

        > ⚠️ **Random weights: for tests and benchmarks.** Its language model and vision tower were randomly \
initialised and never trained: every reply is gibberish. Use it to exercise code paths and measure speed, never to \
judge quality.

        A streaming video LLM built with livecue, an implementation of LIVE (VideoLLM-online, arXiv 2406.11816): it \
watches a video frame by frame at 2 fps, decides after every frame whether to speak (silent iff p(',') ≥ θ = 0.725), \
and narrates what happens or answers questions about the stream in real time.

        **Architecture**: composed: the vision tower (`siglip`) turns each frame into 10 tokens, the connector \
(`mlp2x_gelu`) maps them into the embeddings of the language model (`llama`).""")


def test_intro_of_trained_random_weights_and_of_untrained_pretrained_ones():
    assert "**Trained from random weights.**" in C.intro(TINY, C.CardFacts(training=RUN))
    untrained = C.intro(DEFAULT, C.CardFacts())
    assert "**No training recorded.**" in untrained and "Random weights" not in untrained
    assert "⚠️" not in C.intro(DEFAULT, C.CardFacts(training=RUN))


def test_parts_section():
    assert C.parts_section(DEFAULT, C.CardFacts(training=RUN), adapter=True) == text("""
        ## Base parts

        | part | kind | source | hub id | training |
        |---|---|---|---|---|
        | vision tower | efficientnet_lite0 | `efficientnet-lite0` | — | frozen |
        | connector | mlp2x_gelu | livecue | — | trained |
        | language model | causal LM | `smollm2-135m-instruct` | `HuggingFaceTB/SmolLM2-135M-Instruct` | \
LoRA (r 16, α 32) |""")


def test_training_section_of_a_checkpoint_saved_part_way():
    assert C.training_section(TINY, C.CardFacts(training=RUN)) == text("""
        ## Training data

        Trained with `livecue train` (the LIVE recipe: streaming loss on the frame decisions and the replies):

        - **data**: `data/train.jsonl` (8 records, sha256 \
`abababababababababababababababababababababababababababababababab`)
        - **steps**: 2 update steps of 4 planned (a checkpoint saved part-way), 0.50 epochs
        - **started from**: `runs/stage1/final`
        - **optimisation** (the run's config): lr 0.001, cosine schedule, warmup 0.05, batch 1 × 1 accumulation per \
device, precision no, seed 0
        - **last training loss**: 1.2346 (step 2)
        - **validation** (step 2, on `data/val.jsonl`, at most 4 records): validation loss 1.500, speak/silence \
decision accuracy 0.750""")
    none = C.training_section(TINY, C.CardFacts())
    assert none == "## Training data\n\nNo training run is recorded for these weights."


def test_config_section_escapes_the_lora_regex_in_its_table():
    lora = "model.*\\.(q_proj\\|k_proj\\|v_proj\\|o_proj\\|gate_proj\\|up_proj\\|down_proj)$\\|lm_head$"
    assert C.config_section(DEFAULT) == text(f"""
        ## Configuration

        From `livecue_config.json` (`livecue config DIR` prints all of it; `--stream.threshold=…` and the other \
`--section.key=value` options override it at run time).

        | | |
        |---|---|
        | frame layout | CLS + 3×3 pooled + 3 colour segments (8×8 silhouette) = 13 tokens per frame, each with a \
27-value colour histogram of its region (3³ bins), 224 px |
        | frame rate | 2 fps |
        | decision | silent iff p(',') ≥ θ = 0.75 |
        | template | `live` chat format |
        | replies | at most 24 tokens |
        | training records | cut at 32 frames |
        | LoRA | r 16, α 32, dropout 0, on `{lora}` |
        | dtype | float32 |""")


def test_evaluation_section_gives_each_metric_table_its_command():
    assert C.evaluation_section(C.CardFacts(evaluations=[EVAL]), "me/x") == text("""
        ## Evaluation

        ### Free-running on 4 streams

        ```bash
        livecue eval --model me/x --data val.jsonl --task free
        ```

        | metric | value |
        |---|---:|
        | speak-timing F1 (free-running) | 0.500 |
        | TimeDiff (s) | 0.250 |
        | streams | 4 |

        A note.""")


def test_evaluation_section_without_results_says_how_to_measure():
    assert C.evaluation_section(C.CardFacts(), "runs/my model") == text("""
        ## Evaluation

        No evaluation is recorded for these weights. Measure them on held-out records (`--calibrate` also \
recommends θ):

        ```bash
        livecue eval --model 'runs/my model' --data RECORDS.jsonl --task narration --calibrate
        livecue eval --model 'runs/my model' --data RECORDS.jsonl --task free
        ```""")


def test_limitations_section():
    random = C.limitations_section(TINY, C.CardFacts())
    assert random.startswith("## Intended use and limitations\n\n**Not for any real use**: random weights")
    trained = C.limitations_section(DEFAULT, C.CardFacts(training=RUN, limitations=["Only shapes."]))
    assert trained.splitlines()[2].startswith("Research and prototyping of always-on video assistants")
    assert "- It decides once per frame at 2 fps:" in trained
    assert "(at most 32 frames) is not guaranteed." in trained and trained.endswith("\n- Only shapes.")


def test_usage_section():
    assert C.usage_section(TINY, "me/x") == text("""
        ## How to use

        With livecue installed:

        ```bash
        # narrate a video file (or a webcam, an rtsp:// URL); ask a question 5 s in
        livecue watch video.mp4 --model me/x
        livecue watch video.mp4 --model me/x --query "What just happened?" --at 5
        # a web page + WebSocket server for many live streams
        livecue serve --model me/x
        # its parts, frame layout and this card's summary
        livecue info --model me/x
        ```

        In Python:

        ```python
        from livecue.inference.engine import StreamEngine
        from livecue.inference.sources import open_source
        from livecue.model.load import load_model

        model, tokenizer = load_model("me/x")
        session = StreamEngine(model, tokenizer).session()   # the model's system prompt and θ
        with open_source("video.mp4", fps=model.cfg.stream.fps) as frames:
            for t, frame in frames:
                for event in session.push_frame(frame, t):
                    print(event.to_json())                    # silence, reply or answer, with its stream time
        for event in session.finish():                         # answer the questions still waiting
            print(event.to_json())
        ```""")


def test_whole_card_is_valid_hub_metadata_and_sections_in_order():
    from huggingface_hub import ModelCard

    rendered = C.render_card(DEFAULT, C.CardFacts(training=RUN, evaluations=[EVAL]), model_ref="me/x", adapter=True)
    data = ModelCard(rendered).data.to_dict()
    assert data == {"base_model": ["HuggingFaceTB/SmolLM2-135M-Instruct"], "library_name": "livecue",
                    "license": "apache-2.0", "pipeline_tag": "video-text-to-text",
                    "tags": ["video-text-to-text", "streaming", "videollm-online", "live"]}
    headings, fenced = [], False
    for line in rendered.splitlines():
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            headings.append(line)
    assert headings == ["# livecue-default", "## Base parts", "## Training data", "## Configuration",
                        "## Evaluation", "### Free-running on 4 streams", "## Intended use and limitations",
                        "## How to use"]
    assert rendered.split("\n---\n", 1)[1].lstrip("\n").startswith(C.MARKER)


# ---- parts, licenses, numbers --------------------------------------------------------------------------------------
def test_hub_ids(tmp_path):
    assert hub_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    snapshot = "/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-VL-3B-Instruct/snapshots/0123abc"
    assert hub_id(snapshot) == "Qwen/Qwen2.5-VL-3B-Instruct"
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    local = tmp_path / "org" / "model"
    assert hub_id(str(local)) is None and hub_id("./org/model") is None and hub_id(None) is None
    assert hub_id("efficientnet-lite0") is None


def test_random_parts_licenses_and_base_models():
    assert random_parts(TINY) == ["language model", "vision tower"]
    assert random_parts(preset("tiny_qwen2_5_vl")) == ["vision-language model"] and random_parts(DEFAULT) == []
    assert card_license(TINY) == "apache-2.0"  # livecue's own: nothing inherited
    assert card_license(DEFAULT) == "apache-2.0"  # SmolLM2's
    assert card_license(preset("live1_plus")) == "llama3"
    assert card_license(preset("live1_plus", {"lm.name_or_path": "someone/unknown-lm"})) is None
    assert base_models(preset("live1_plus"), origin="chenjoya/videollm-online-8b-v1plus") == [
        "chenjoya/videollm-online-8b-v1plus", "google/siglip-large-patch16-384", "meta-llama/Meta-Llama-3-8B-Instruct"]
    assert base_models(TINY) == []


def test_numbers_and_bad_metrics():
    assert [C.number(v) for v in (3662, 0.97222, 0.0, 0.004567, 12.9925)] == ["3,662", "0.972", "0.000", "0.004567",
                                                                                "12.992"]
    with pytest.raises(ValueError, match="metrics must map metric names to numbers, got 'f1': 'high'"):
        C.Evaluation("t", "c", {"f1": "high"})
    with pytest.raises(ValueError, match="validation must map"):
        C.TrainingSummary(data="d", validation={"eval_loss": True})


# ---- files ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tiny, tmp_path):
    model, tok = tiny
    return save_checkpoint(model, tok, tmp_path / "ckpt")


def test_every_saved_checkpoint_gets_a_card(checkpoint):
    card = (checkpoint / C.CARD_FILE).read_text()
    assert is_generated(checkpoint / C.CARD_FILE)
    assert "**Random weights: for tests and benchmarks.**" in card and "- random-weights" in card
    assert f'load_model("{checkpoint}")' in card and f"livecue watch video.mp4 --model {checkpoint}" in card
    assert not (checkpoint / FACTS_FILE).exists()


def test_a_hand_written_card_is_kept(tiny, checkpoint):
    (checkpoint / C.CARD_FILE).write_text("# My model\n\nHand-written.\n")
    save_checkpoint(*tiny, checkpoint)
    assert not refresh_card(checkpoint, model_ref="me/x")
    assert (checkpoint / C.CARD_FILE).read_text() == "# My model\n\nHand-written.\n"
    (checkpoint / C.CARD_FILE).unlink()
    assert refresh_card(checkpoint, model_ref="me/x")
    assert 'load_model("me/x")' in (checkpoint / C.CARD_FILE).read_text()


def test_record_evaluation_adds_replaces_and_refreshes(checkpoint):
    record_evaluation(checkpoint, EVAL)
    better = C.Evaluation(EVAL.title, EVAL.command, {"f1": 0.9})
    other = C.Evaluation("Teacher-forced", "livecue eval --task narration", {"fluency": 0.8})
    record_evaluation(checkpoint, better)
    record_evaluation(checkpoint, other)
    facts = read_facts(checkpoint)
    assert [(e.title, e.metrics) for e in facts.evaluations] == [(EVAL.title, {"f1": 0.9}),
                                                                 ("Teacher-forced", {"fluency": 0.8})]
    card = (checkpoint / C.CARD_FILE).read_text()
    assert "| speak-timing F1 (free-running) | 0.900 |" in card and "| Fluency | 0.800 |" in card
    assert "**Random weights" not in card  # evaluated weights are not "never trained"
    assert load_facts(checkpoint / FACTS_FILE) == facts


def test_invalid_facts_file_is_one_line_naming_it(checkpoint):
    (checkpoint / FACTS_FILE).write_text('{"evaluations": [{"title": "t", "command": "c", "metrics": {}, "x": 1}]}')
    with pytest.raises(ValueError, match=r"invalid '.*livecue_card\.json': unknown key\(s\) 'evaluations\.x'"):
        read_facts(checkpoint)
    (checkpoint / FACTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"invalid JSON in '.*livecue_card\.json' at line 1"):
        write_card(checkpoint)


def test_training_from_a_manifest():
    manifest = {"step": 3, "gradient_accumulation_steps": 2, "batches_per_epoch": 4, "total_steps": 6,
                "data": {"train_data": "d.jsonl", "sha256": "f" * 64, "records": 4},
                "log": {"train": {"step": 3, "loss": 0.5}, "validation": {"step": 2, "eval_loss": 0.7}},
                "config": {"train": {"eval_data": "v.jsonl", "eval_max_samples": 8, "init_from": None}}}
    assert training_from_manifest(manifest) == C.TrainingSummary(
        data="d.jsonl", records=4, sha256="f" * 64, steps=3, total_steps=6, epochs=1.5, final_loss=0.5,
        final_loss_step=3, validation={"eval_loss": 0.7}, validation_step=2, validation_data="v.jsonl",
        validation_records=8)
    assert training_from_manifest({"format": "x"}) is None


def test_card_summary_rows(checkpoint):
    rows = dict(card_summary(checkpoint))
    assert rows["card"].endswith("README.md (generated by livecue)") and rows["base"] == "none (random init)  " \
        "(license apache-2.0)"
    save_facts(checkpoint, C.CardFacts(training=RUN, evaluations=[EVAL]))
    rows = card_summary(checkpoint)
    assert ("trained on", "data/train.jsonl (8 records), 2 steps, final loss 1.2346") in rows
    assert ("validation", "validation loss 1.500, speak/silence decision accuracy 0.750") in rows
    assert ("metrics", "Free-running on 4 streams: speak-timing F1 (free-running) 0.500, TimeDiff (s) 0.250, "
                       "streams 4  (livecue eval --model me/x --data val.jsonl --task free)") in rows
    (checkpoint / C.CARD_FILE).unlink()
    assert card_summary(checkpoint) == []


# ---- the packaged default model ------------------------------------------------------------------------------------
def test_packaged_default_model_card_is_current():
    """The shipped README.md is exactly what livecue's card code renders from the packaged files, and its facts are
    what scripts/default_model_card.py derives from the recorded results (rerun the script after changing either)."""
    from livecue.model.card_files import read_facts as read

    script = runpy.run_path(str(ROOT / "scripts" / "default_model_card.py"))
    assert read(DEFAULT_MODEL_DIR) == script["facts"](), "run: python scripts/default_model_card.py"
    shipped = (DEFAULT_MODEL_DIR / C.CARD_FILE).read_text(encoding="utf-8")
    assert shipped == C.render_card(DEFAULT, read(DEFAULT_MODEL_DIR), model_ref="default", adapter=True), \
        "run: python scripts/default_model_card.py"
    facts = json.loads((DEFAULT_MODEL_DIR / FACTS_FILE).read_text())
    assert [e["metrics"]["f1"] for e in facts["evaluations"] if "f1" in e["metrics"]] == [
        json.loads((ROOT / "benchmarks/results/default_model/trained-free.json").read_text())["metrics"]["f1"]]
    assert "livecue eval --model default" in shipped and "- random-weights" not in shipped


# ---- the card's Python snippet runs as printed ---------------------------------------------------------------------
def _video(path: Path, n: int = 4) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=2)
        stream.height = stream.width = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 2)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 60 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 2)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_the_cards_python_snippet_runs(checkpoint, tmp_path, capsys, monkeypatch):
    card = (checkpoint / C.CARD_FILE).read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    _video(tmp_path / "video.mp4")
    exec(compile(snippet, "card-snippet", "exec"), {})  # noqa: S102 - the card's own example, as printed
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["t"] for e in events] == [0.0, 0.5, 1.0, 1.5]
    assert {e["type"] for e in events} <= {"silence", "reply"}
