"""Model cards: the ``README.md`` beside every livecue checkpoint, in the Hugging Face format.

A card is YAML front matter (``library_name: livecue``, ``base_model``, ``tags``, ``license``, ``pipeline_tag``)
followed by sections: what the model is, its base parts, its training data, its configuration, its metrics with the
command that produced them, intended use and limitations, and how to use it. :func:`render_card` writes that text
from typed inputs only: the model's :class:`~livecue.config.LiveConfig` and :class:`CardFacts` (how it was trained,
how it was evaluated). :mod:`livecue.model.card_parts` lists a config's parts (hub ids, licenses);
:mod:`livecue.model.card_files` gathers the inputs from a checkpoint directory and writes the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config import LiveConfig
from .card_parts import base_models, base_parts, card_license, random_parts

CARD_FILE = "README.md"
TAGS = ("video-text-to-text", "streaming", "videollm-online", "live")
PIPELINE_TAG = "video-text-to-text"
# The first line after the front matter of every card livecue writes: a card with it is rewritten when its inputs
# change (``livecue push``); delete the line to keep hand edits.
MARKER = ("<!-- livecue model card: generated from livecue_config.json, livecue_manifest.json and livecue_card.json; "
          "livecue rewrites it (delete this line to keep your edits) -->")
METRIC_NAMES = {  # livecue's metric keys (eval reports, log.jsonl) -> what a card calls them
    "f1": "speak-timing F1 (free-running)", "precision": "speak precision", "recall": "speak recall",
    "time_diff": "TimeDiff (s)", "fluency": "Fluency", "lm_correctness": "LM-Correctness", "lm_ppl": "LM-PPL",
    "speak_f1": "speak F1 per frame (teacher-forced)", "reply_similarity": "reply similarity",
    "reply_exact": "reply exact match", "answer_similarity": "answer similarity", "answer_exact": "answer exact match",
    "replies_per_minute": "replies per minute", "eval_loss": "validation loss",
    "decision_acc": "speak/silence decision accuracy", "majority": "majority-decision baseline",
    "speak_recall": "speak recall", "samples": "streams", "recommended_threshold": "recommended θ",
}


# ---- typed inputs --------------------------------------------------------------------------------------------------
@dataclass
class TrainingSummary:
    """How the weights were trained: a training checkpoint's manifest, or written by hand (``livecue_card.json``)."""

    data: str
    """The training records: their file, or a description."""
    records: int | None = None
    sha256: str | None = None
    """The sha256 of the records file (the run's fingerprint of its data)."""
    steps: int | None = None
    """Optimizer update steps done."""
    total_steps: int | None = None
    """Update steps the run planned (a checkpoint saved part-way says so)."""
    epochs: float | None = None
    """Passes over the training records done."""
    final_loss: float | None = None
    """The last training loss logged (``log.jsonl``), at step ``final_loss_step``."""
    final_loss_step: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    """The last validation metrics of the run (``log.jsonl``), at step ``validation_step`` on ``validation_data``."""
    validation_step: int | None = None
    validation_data: str | None = None
    validation_records: int | None = None
    """At most this many records of ``validation_data`` were used (``train.eval_max_samples``)."""
    init_from: str | None = None
    """The checkpoint the run started from (``train.init_from``)."""
    command: str | None = None
    """A command that reproduces the run."""
    notes: list[str] = field(default_factory=list)
    """Further lines (e.g. the stages of a multi-stage recipe), each a sentence of markdown."""

    def __post_init__(self) -> None:
        _check_metrics("validation", self.validation)


@dataclass
class Evaluation:
    """Metrics measured on the model, with the command that produced them."""

    title: str
    """What was measured, on what (e.g. ``free-running on 40 held-out world streams``)."""
    command: str
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_metrics("metrics", self.metrics)


@dataclass
class CardFacts:
    """What a card says beyond the config: training, evaluations, provenance (``livecue_card.json`` holds the parts
    that no other file of the checkpoint records)."""

    training: TrainingSummary | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    origin: str | None = None
    """Where converted weights came from (a hub id or directory), e.g. the paper's released adapter."""
    license: str | None = None
    """The weights' license when the base parts do not settle it."""
    limitations: list[str] = field(default_factory=list)
    """Known limits of this model beyond the general ones."""

    @property
    def trained(self) -> bool:
        return self.training is not None or self.origin is not None or bool(self.evaluations)


def _check_metrics(name: str, metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must map metric names to numbers, got {key!r}: {value!r}")


# ---- rendering -----------------------------------------------------------------------------------------------------
def render_card(cfg: LiveConfig, facts: CardFacts, *, model_ref: str, adapter: bool) -> str:
    """The whole card of a model. ``model_ref``: what to pass as ``--model`` to use it (a directory, a hub id,
    ``default``); ``adapter``: the checkpoint holds a LoRA adapter for its language model."""
    blocks = [front_matter(cfg, facts), MARKER, intro(cfg, facts), parts_section(cfg, facts, adapter=adapter),
              training_section(cfg, facts), config_section(cfg), evaluation_section(facts, model_ref),
              limitations_section(cfg, facts), usage_section(cfg, model_ref)]
    return "\n\n".join(b.strip("\n") for b in blocks if b) + "\n"


def front_matter(cfg: LiveConfig, facts: CardFacts) -> str:
    """The YAML metadata block the hub reads (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    tags = list(TAGS) + (["random-weights"] if _untrained_random(cfg, facts) else [])
    data = ModelCardData(library_name="livecue", base_model=base_models(cfg, origin=facts.origin) or None, tags=tags,
                         license=facts.license or card_license(cfg, origin=facts.origin), pipeline_tag=PIPELINE_TAG)
    return f"---\n{data.to_yaml()}\n---"


def intro(cfg: LiveConfig, facts: CardFacts) -> str:
    """The title, a loud warning for random weights, and what the model is."""
    lines = [f"# {cfg.name}", ""]
    random = random_parts(cfg)
    if _untrained_random(cfg, facts):
        lines += [f"> ⚠️ **Random weights: for tests and benchmarks.** Its {' and '.join(random)} "
                  f"{'was' if len(random) == 1 else 'were'} randomly initialised and never trained: every reply is "
                  "gibberish. Use it to exercise code paths and measure speed, never to judge quality.", ""]
    elif random:
        lines += [f"> ⚠️ **Trained from random weights.** Its {' and '.join(random)} started at random: it knows only "
                  "what its training run taught it (a small model for tests and experiments).", ""]
    elif not facts.trained:
        lines += ["> ⚠️ **No training recorded.** Unless these weights were trained elsewhere, the parts livecue "
                  "adds (the connector, the LoRA adapter) are at their initialisation and the model does not "
                  "narrate.", ""]
    fps, theta = f"{cfg.stream.fps:g}", f"{cfg.stream.threshold:g}"
    silent = f"p({cfg.stream.frame_interval!r}) ≥ θ = {theta}"
    lines.append(f"A streaming video LLM built with livecue, an implementation of LIVE (VideoLLM-online, arXiv "
                 f"2406.11816): it watches a video frame by frame at {fps} fps, decides after every frame whether "
                 f"to speak (silent iff {silent}), and narrates what happens or answers questions about the stream "
                 f"in real time.")
    if cfg.is_vlm:
        family = cfg.vlm.family or (cfg.vlm.random_init or {}).get("model_type", "?")
        arch = (f"a pretrained vision-language model of the {family} family used whole: its own "
                f"vision encoder and projector turn each frame into tokens of its language model; livecue adds the "
                f"streaming template and the per-frame decision")
    else:
        lm = cfg.lm.name_or_path or (cfg.lm.random_init or {}).get("model_type", "random")
        arch = (f"composed: the vision tower (`{cfg.vision.kind}`) turns each frame into {_tokens(cfg)} tokens, the "
                f"connector (`{cfg.connector.kind}`) maps them into the embeddings of the language model (`{lm}`)")
    lines += ["", f"**Architecture**: {arch}."]
    if facts.origin:
        lines += ["", f"**Converted from** `{facts.origin}` (livecue checkpoint layout, tensors bit for bit)."]
    return "\n".join(lines)


def parts_section(cfg: LiveConfig, facts: CardFacts, *, adapter: bool) -> str:
    rows = [_row(p.role, p.kind, _code(p.source) if p.source else "random init" if p.pretrainable else "livecue",
                 _code(p.hub_id) if p.hub_id else "—", p.how)
            for p in base_parts(cfg, adapter=adapter, trained=facts.trained)]
    return "\n".join(["## Base parts", "", "| part | kind | source | hub id | training |", "|---|---|---|---|---|",
                      *rows])


def training_section(cfg: LiveConfig, facts: CardFacts) -> str:
    lines = ["## Training data", ""]
    t = facts.training
    if t is None:
        lines.append(f"Not recorded: see `{facts.origin}` for how it was trained." if facts.origin else
                     "No training run is recorded for these weights.")
        return "\n".join(lines)
    records = ", ".join(x for x in (f"{t.records:,} records" if t.records is not None else "",
                                    f"sha256 `{t.sha256}`" if t.sha256 else "") if x)
    lines += ["Trained with `livecue train` (the LIVE recipe: streaming loss on the frame decisions and the replies):",
              "", f"- **data**: {_code_or_text(t.data)}" + (f" ({records})" if records else "")]
    if t.steps is not None:
        partial = (f" of {t.total_steps:,} planned (a checkpoint saved part-way)"
                   if t.total_steps and t.total_steps > t.steps else "")
        epochs = f", {t.epochs:.2f} epochs" if t.epochs is not None else ""
        lines.append(f"- **steps**: {t.steps:,} update steps{partial}{epochs}")
    if t.init_from:
        lines.append(f"- **started from**: `{t.init_from}`")
    tc = cfg.train
    lr = f"lr {tc.learning_rate:g}" + (f" (connector {tc.connector_learning_rate:g})"
                                        if tc.connector_learning_rate else "")
    lines.append(f"- **optimisation** (the run's config): {lr}, {tc.lr_scheduler} schedule, warmup "
                 f"{tc.warmup_ratio:g}, batch {tc.per_device_batch_size} × {tc.gradient_accumulation_steps} "
                 f"accumulation per device, precision {tc.mixed_precision}, seed {tc.seed}")
    if t.final_loss is not None:
        lines.append(f"- **last training loss**: {t.final_loss:.4f}" +
                     (f" (step {t.final_loss_step:,})" if t.final_loss_step is not None else ""))
    if t.validation:
        where = ", ".join(x for x in (f"step {t.validation_step:,}" if t.validation_step is not None else "",
                                      f"on {_code_or_text(t.validation_data)}" if t.validation_data else "",
                                      f"at most {t.validation_records:,} records" if t.validation_records else "")
                 if x)
        lines.append(f"- **validation**{f' ({where})' if where else ''}: "
                     + ", ".join(f"{metric_name(k)} {number(v)}" for k, v in t.validation.items()))
    lines += [f"- {note}" for note in t.notes]
    if t.command:
        lines += ["", "Reproduce:", "", "```bash", t.command, "```"]
    return "\n".join(lines)


def config_section(cfg: LiveConfig) -> str:
    s = cfg.stream
    rows = [("frame layout", _layout(cfg)), ("frame rate", f"{s.fps:g} fps"),
            ("decision", f"silent iff p({s.frame_interval!r}) ≥ θ = {s.threshold:g}"),
            ("template", f"`{s.chat_format}` chat format"), ("replies", f"at most {s.max_reply_tokens} tokens"),
            ("training records", f"cut at {s.max_num_frames} frames")]
    if cfg.lora.enabled:
        rows.append(("LoRA", f"r {cfg.lora.r}, α {cfg.lora.alpha}, dropout {cfg.lora.dropout:g}, on "
                             f"`{cfg.lora.target_modules}`"))
    rows.append(("dtype", cfg.vlm.dtype if cfg.is_vlm else cfg.lm.dtype))
    intro = ("From `livecue_config.json` (`livecue config DIR` prints all of it; `--stream.threshold=…` and the "
             "other `--section.key=value` options override it at run time).")
    return "\n".join(["## Configuration", "", intro, "", "| | |", "|---|---|", *(_row(k, v) for k, v in rows)])


def evaluation_section(facts: CardFacts, model_ref: str) -> str:
    lines = ["## Evaluation", ""]
    if facts.training and facts.training.validation:
        lines += ["The training run's last validation metrics are under *Training data*.", ""]
    if not facts.evaluations:
        lines += ["No evaluation is recorded for these weights. Measure them on held-out records (`--calibrate` "
                  "also recommends θ):", "", "```bash",
                  f"livecue eval --model {_shell(model_ref)} --data RECORDS.jsonl --task narration --calibrate",
                  f"livecue eval --model {_shell(model_ref)} --data RECORDS.jsonl --task free", "```"]
    for ev in facts.evaluations:
        lines += [f"### {ev.title}", "", "```bash", ev.command, "```", "", "| metric | value |", "|---|---:|",
                  *(_row(metric_name(k), number(v)) for k, v in ev.metrics.items()), ""]
        lines += [*ev.notes, ""] if ev.notes else []
    return "\n".join(lines).rstrip("\n")


def limitations_section(cfg: LiveConfig, facts: CardFacts) -> str:
    s = cfg.stream
    if _untrained_random(cfg, facts):
        use = ("**Not for any real use**: random weights, for tests of code paths and benchmarks of speed and memory "
               "(its outputs say nothing about livecue's quality).")
    else:
        use = ("Research and prototyping of always-on video assistants: live narration of a video stream and answers "
               "to questions about it, on video like its training data.")
    limits = [f"It decides once per frame at {s.fps:g} fps: an event shorter than a frame interval can be missed, "
              "and a reply starts at the end of the frame that triggered it.",
              "θ trades replies against silence and its best value depends on the data: calibrate it with "
              "`livecue eval --calibrate` (`--save-threshold` stores it in the checkpoint).",
              f"Its context grows by {_tokens(cfg)} tokens per frame plus its replies: bound the memory of long or "
              "endless streams with `--memory sink:N`. Quality on streams much longer than its training records (at "
              f"most {s.max_num_frames} frames) is not guaranteed.",
              f"Replies are capped at {s.max_reply_tokens} tokens. Like any language model it can state wrong "
              "content fluently; it knows only the domain of its training data."]
    return "\n".join(["## Intended use and limitations", "", use, "", *(f"- {x}" for x in limits + facts.limitations)])


def usage_section(cfg: LiveConfig, model_ref: str) -> str:
    ref = _shell(model_ref)
    return "\n".join([
        "## How to use", "", "With livecue installed:", "", "```bash",
        "# narrate a video file (or a webcam, an rtsp:// URL); ask a question 5 s in",
        f"livecue watch video.mp4 --model {ref}",
        f'livecue watch video.mp4 --model {ref} --query "What just happened?" --at 5',
        "# a web page + WebSocket server for many live streams",
        f"livecue serve --model {ref}",
        "# its parts, frame layout and this card's summary",
        f"livecue info --model {ref}",
        "```", "", "In Python:", "", "```python",
        "from livecue.inference.engine import StreamEngine",
        "from livecue.inference.sources import open_source",
        "from livecue.model.load import load_model", "",
        f"model, tokenizer = load_model({json.dumps(model_ref)})",
        "session = StreamEngine(model, tokenizer).session()   # the model's system prompt and θ",
        "with open_source(\"video.mp4\", fps=model.cfg.stream.fps) as frames:",
        "    for t, frame in frames:",
        "        for event in session.push_frame(frame, t):",
        "            print(event.to_json())                    # silence, reply or answer, with its stream time",
        "for event in session.finish():                         # answer the questions still waiting",
        "    print(event.to_json())", "```"])


# ---- formatting helpers --------------------------------------------------------------------------------------------
def metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key)


def number(value: float) -> str:
    """A metric as a card shows it: integers with thousands separators, other numbers to 3 decimals (4 significant
    digits when smaller than 0.01)."""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.4g}"


def _untrained_random(cfg: LiveConfig, facts: CardFacts) -> bool:
    return bool(random_parts(cfg)) and not facts.trained


def _tokens(cfg: LiveConfig) -> str:
    try:
        return str(cfg.frame_num_tokens)
    except ValueError:  # a VLM config not yet resolved by building its model
        return "K"


def _layout(cfg: LiveConfig) -> str:
    if cfg.is_vlm:
        pooled = f", pooled to {cfg.vlm.frame_pooled}×{cfg.vlm.frame_pooled}" if cfg.vlm.frame_pooled else ""
        res = f"{cfg.vlm.frame_resolution} px" if cfg.vlm.frame_resolution else "the family's own size"
        return f"{_tokens(cfg)} tokens per frame ({res}{pooled})"
    v = cfg.vision
    parts = (["CLS"] if v.frame_token_cls else []) + ([f"{v.frame_token_pooled}×{v.frame_token_pooled} pooled"]
                                                      if v.frame_token_pooled else [])
    parts += [f"{v.frame_colour_segments} colour segments ({v.frame_segment_size}×{v.frame_segment_size} "
              f"silhouette)"] if v.frame_colour_segments else []
    colour = (f", each with a {v.frame_colour_bins**3}-value colour histogram of its region ({v.frame_colour_bins}³ "
              f"bins)" if v.frame_colour_bins else "")
    return f"{' + '.join(parts)} = {v.frame_num_tokens} tokens per frame{colour}, {v.resolution} px"


def _row(*cells: str) -> str:
    """A markdown table row; ``|`` inside a cell (a regex) is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _code(text: str) -> str:
    return f"`{text}`"


def _code_or_text(text: str) -> str:
    """A path or id in code style; a description (with spaces) as it is."""
    return text if " " in text else _code(text)


def _shell(text: str) -> str:
    import shlex

    return shlex.quote(text)
