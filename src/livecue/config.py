"""Typed configuration: dataclasses, YAML presets, dotted overrides, JSON round trip.

A :class:`LiveConfig` describes one LIVE model completely (vision tower, connector and language model, or a
pretrained vision-language model: ``architecture``; streaming template, LoRA, training). It is validated on
construction, saved as ``livecue_config.json`` beside every checkpoint, and rebuilt from that file, a YAML preset
(``live1``, ``live1_plus``, ``tiny`` and the tiny VLM bases ``tiny_qwen2_5_vl``, ``tiny_qwen3_vl``,
``tiny_llava_onevision``, ``tiny_smolvlm``, ``tiny_gemma3``) or a YAML path.

Every field is documented by the docstring under it (meaning, unit, range); ``livecue config --fields [SECTION]``
prints them and ``docs/config.md`` is generated from them. The typed (de)serialisation lives in
:mod:`livecue.config_fields`.

This module imports neither torch nor transformers, so the CLI can use it at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .argtypes import FPS, MAX_FPS, REPLY_TOKENS, UNIT_INTERVAL  # noqa: F401 - MAX_FPS: also this module's
from .config_fields import from_dict, merge, set_dotted, split_override

CONFIG_FILE = "livecue_config.json"
CONFIG_VERSION = 1
PRESET_DIR = Path(__file__).parent / "presets"

UPSTREAM_SYSTEM_PROMPT = (
    "A multimodal AI assistant is helping users with some activities. Below is their conversation, interleaved "
    "with the list of video frames received by the assistant."
)

VISION_KINDS = ("siglip", "clip", "dinov2", "hf", "efficientnet_lite0")
DTYPES = ("float32", "bfloat16", "float16")
ARCHITECTURES = ("composed", "vlm")
CHAT_FORMATS = ("live", "template")  # stream.chat_format
TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")  # train.report_to: accelerate's experiment trackers

# Keys that older livecue versions wrote into livecue_config.json and nothing reads any more: accepted and dropped
# on load, so their checkpoints keep loading (and resuming: see livecue.train.checkpoint.config_differences).
#   lora.modules_to_save: always ["connector"]; the connector is trained in full by set_trainable, not through it.
LEGACY_KEYS = frozenset({"lora.modules_to_save"})

# random_init keys that size a model: each must be a positive integer (or null for the library's default)
_SIZE_KEY = re.compile(r"(_size|_layers|_heads|_dim|_channels)$|^num_|^depth$|^max_position_embeddings$")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _check_sizes(section: str, random_init: dict[str, Any] | None, *, nested: bool = False) -> None:
    """Refuse random_init dimensions that would build negative or empty tensors, naming the key (with ``nested``,
    also inside nested mappings such as a VLM's ``vision_config``)."""
    _check_size_keys(f"{section}.random_init", random_init or {}, nested)


def _check_size_keys(where: str, values: dict[str, Any], nested: bool) -> None:
    for key, value in values.items():
        if nested and isinstance(value, dict):
            _check_size_keys(f"{where}.{key}", value, nested)
        elif isinstance(key, str) and _SIZE_KEY.search(key) and value is not None:
            _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                   f"{where}.{key} must be a positive integer, got {value!r}")


@dataclass
class VisionConfig:
    """The frame encoder: the vision tower and the tokens it emits per frame.

    Each frame becomes K = (1 if ``frame_token_cls``) + ``frame_token_pooled``² + ``frame_colour_segments`` tokens
    of width D_vision (the tower's width, plus :attr:`colour_width` colour values); the connector maps them into
    the LM.
    """

    kind: str = "siglip"
    """Tower family, one of ``siglip`` (its pooler_output as the "CLS"), ``clip`` / ``dinov2`` / ``hf`` (token 0
    as the CLS, the rest a square patch grid) or ``efficientnet_lite0`` (a CNN: the global average pool as the
    "CLS")."""
    name_or_path: str | None = "google/siglip-large-patch16-384"
    """Hub id or local directory of the pretrained tower (``efficientnet-lite0``: the offline ImageNet weights of
    the ``[models]`` extra). null builds a randomly initialised tower from ``random_init``; one of the two must be
    set."""
    random_init: dict[str, Any] | None = None
    """Keyword arguments of the tower's Hugging Face config (``model_type`` included) for a randomly initialised
    tower (tests, benchmarks); its sizes (``*_size``, ``*_layers``, ``*_heads``, ``num_*`` ...) must be positive
    integers. null: pretrained weights."""
    resolution: int = 384
    """Square input size in pixels (> 0); every frame is letterboxed to resolution × resolution."""
    frame_token_cls: bool = True
    """Emit the "CLS" token (the tower's summary of the whole frame) as each frame's first token."""
    frame_token_pooled: int = 3
    """k in 0..64: also emit k×k spatial tokens, the tower's patch grid adaptive-average-pooled to k×k (0: none).
    A frame needs at least one token: with ``frame_token_cls`` false, k must be ≥ 1."""
    frame_colour_bins: int = 0
    """b in 0..8: append to every token a colour histogram of the image region it covers (the whole frame for the
    CLS, the pooling window for a pooled token): the share of the region's pixels in each of the b³ cells of RGB
    space (b levels per channel), log-scaled as log(1 + 100·share) / log(101) so that a small object still shows
    (0: none). The vision width grows by b³; the token count does not. For towers whose features are nearly
    colour-invariant (ImageNet CNNs), so that the connector sees which colours sit where, next to what the tower saw
    there."""
    frame_colour_segments: int = 0
    """n in 0..8 (needs ``frame_colour_bins`` ≥ 2): also emit n *colour-segment* tokens per frame, after the others,
    one per colour cell of the frame's histogram, largest first, skipping the largest of all (the background) and
    cells under ``frame_segment_min_share`` (a missing segment is a token of zeros). A segment token carries
    object-bound evidence the region tokens mix up when two objects share a region: the tower's features averaged
    over the segment's pixels, the segment's own colour cell (log-scaled share, the other cells zero), its
    silhouette (its pixels in their square bounding box, ``frame_segment_size``² values) and its centroid (x, y in
    [0, 1]). The vision width grows by ``frame_segment_size``² + 2 (zeros on the other tokens). 0: none."""
    frame_segment_size: int = 8
    """s in 2..32: side of a colour segment's silhouette (s² values per token; used when
    ``frame_colour_segments`` > 0)."""
    frame_segment_min_share: float = 0.002
    """A colour cell becomes a segment when at least this share of the frame's pixels (in (0, 1)) falls in it;
    smaller ones (anti-aliased edges, noise) are skipped."""
    frozen: bool = True
    """Keep the tower's weights frozen (upstream's recipe and livecue's never train it); false: they train too."""
    mean: list[float] | None = None
    """Per-channel (R, G, B) mean subtracted after pixels are scaled to [0, 1]: 3 values, or null for the tower's
    own."""
    std: list[float] | None = None
    """Per-channel (R, G, B) standard deviation the pixels are divided by after ``mean``: 3 values, or null for the
    tower's own."""

    def __post_init__(self) -> None:
        _check(self.kind in VISION_KINDS, f"vision.kind must be one of {VISION_KINDS}, got {self.kind!r}")
        _check(self.name_or_path is not None or self.random_init is not None,
               "vision needs name_or_path (pretrained) or random_init (random weights); both are None")
        _check(self.resolution > 0, f"vision.resolution must be positive, got {self.resolution}")
        _check(0 <= self.frame_token_pooled <= 64,
               f"vision.frame_token_pooled must be in 0..64 (k×k tokens per frame), got {self.frame_token_pooled}")
        _check(self.random_init is None or isinstance(self.random_init, dict),
               f"vision.random_init must be a mapping or null, got {self.random_init!r}")
        _check_sizes("vision", self.random_init)
        _check(0 <= self.frame_colour_bins <= 8,
               f"vision.frame_colour_bins must be in 0..8 (b³ histogram cells), got {self.frame_colour_bins}")
        _check(0 <= self.frame_colour_segments <= 8,
               f"vision.frame_colour_segments must be in 0..8 (segment tokens per frame), "
               f"got {self.frame_colour_segments}")
        _check(not self.frame_colour_segments or self.frame_colour_bins >= 2,
               f"vision.frame_colour_segments={self.frame_colour_segments} needs vision.frame_colour_bins >= 2 "
               f"(a segment is a colour cell of the histogram), got frame_colour_bins={self.frame_colour_bins}")
        _check(2 <= self.frame_segment_size <= 32,
               f"vision.frame_segment_size must be in 2..32 (silhouette side), got {self.frame_segment_size}")
        _check(0 < self.frame_segment_min_share < 1,
               f"vision.frame_segment_min_share must be in (0, 1), got {self.frame_segment_min_share}")
        _check(self.frame_token_cls or self.frame_token_pooled > 0,
               "vision emits no token per frame: set frame_token_cls or frame_token_pooled > 0")
        for name in ("mean", "std"):
            v = getattr(self, name)
            _check(v is None or len(v) == 3, f"vision.{name} needs 3 values (RGB), got {v!r}")

    @property
    def frame_num_tokens(self) -> int:
        """K: tokens per frame (CLS + k×k + colour segments)."""
        return int(self.frame_token_cls) + self.frame_token_pooled**2 + self.frame_colour_segments

    @property
    def segment_width(self) -> int:
        """Values :attr:`frame_colour_segments` appends to every token (silhouette s² + centroid 2; 0 when off)."""
        return self.frame_segment_size**2 + 2 if self.frame_colour_segments else 0

    @property
    def colour_width(self) -> int:
        """Values appended to the tower's features in every token: the b³ histogram cells of
        :attr:`frame_colour_bins`, then :attr:`segment_width` (0 when both are off)."""
        return self.frame_colour_bins**3 + self.segment_width


@dataclass
class ConnectorConfig:
    """The projector from the vision width into the LM's embedding space."""

    kind: str = "mlp2x_gelu"
    """The projector's architecture; only ``mlp2x_gelu``: Linear(D_vision → H) → GELU (erf) → Linear(H → H), H the
    LM's hidden size. It is always trained in full."""

    def __post_init__(self) -> None:
        _check(self.kind == "mlp2x_gelu", f"connector.kind must be 'mlp2x_gelu', got {self.kind!r}")


@dataclass
class LMConfig:
    """The language model (any Hugging Face ``AutoModelForCausalLM``) and its tokenizer."""

    name_or_path: str | None = "meta-llama/Meta-Llama-3-8B-Instruct"
    """Hub id, local directory or livecue alias (e.g. ``smollm2-135m-instruct``) of the pretrained LM. null builds
    a randomly initialised LM from ``random_init``; one of the two must be set."""
    random_init: dict[str, Any] | None = None
    """Keyword arguments of ``AutoConfig.for_model`` (``model_type`` required, e.g. ``llama``) for random weights;
    ``vocab_size`` defaults to the tokenizer's base vocabulary; sizes must be positive integers (null: the
    library's default). null: pretrained weights."""
    tokenizer: str | None = None
    """Where the tokenizer is when it is not beside the weights (``tiny``: the packaged tiny byte-level BPE
    tokenizer). null: ``name_or_path``'s own; required when the LM is randomly initialised."""
    dtype: str = "bfloat16"
    """Parameter dtype: ``float32``, ``bfloat16`` or ``float16``. (Training keeps the weights it trains in
    float32 whatever this says.)"""
    attn_implementation: str = "sdpa"
    """Attention implementation, passed to transformers (``sdpa``, ``eager``, ...). The streaming engine runs an
    ``sdpa`` LM through livecue's grouped-query attention kernel (same results)."""

    def __post_init__(self) -> None:
        _check(self.name_or_path is not None or self.random_init is not None,
               "lm needs name_or_path (pretrained) or random_init (random weights); both are None")
        _check(self.random_init is None or "model_type" in self.random_init,
               f"lm.random_init needs a model_type (e.g. 'llama'), got keys {sorted(self.random_init or {})}")
        _check_sizes("lm", self.random_init)
        _check(self.name_or_path is not None or self.tokenizer is not None,
               "lm.tokenizer must be set when the LM is randomly initialised (e.g. 'tiny')")
        _check(self.dtype in DTYPES, f"lm.dtype must be one of {DTYPES}, got {self.dtype!r}")


@dataclass
class VLMConfig:
    """A pretrained vision-language model as the base (``architecture: vlm``): its own vision encoder and projector.

    Any Hugging Face image-text-to-text model of a family livecue has an adapter for (:mod:`livecue.model.vlm`:
    ``qwen2_5_vl``, ``qwen3_vl``, ``qwen3_vl_moe``, ``llava_onevision``, ``smolvlm``, ``idefics3``, ``gemma3``). Each
    frame is letterboxed to
    ``frame_resolution`` pixels square and encoded by the VLM's own vision encoder and projector into K tokens in
    its language model's embedding space (optionally pooled to ``frame_pooled``²); the language model reads them at
    the family's image-token placeholders, with the family's positions (Qwen: M-RoPE). The adapter fills
    ``stream.v_placeholder`` (and the frame prefix/suffix) and ``frame_tokens`` from the tokenizer and the model's
    config when the model is built; the model saves them. The ``vision``, ``connector`` and ``lm`` sections are
    ignored.
    """

    name_or_path: str | None = None
    """Hub id or local directory of the pretrained VLM (e.g. ``Qwen/Qwen2.5-VL-3B-Instruct``). null builds a randomly
    initialised VLM from ``random_init``; with ``architecture: vlm`` one of the two must be set."""
    random_init: dict[str, Any] | None = None
    """Keyword arguments of the family's Hugging Face config class for random weights (tests, benchmarks):
    ``model_type`` (e.g. ``qwen2_5_vl``) and the nested ``vision_config`` / ``text_config`` mappings; sizes must be
    positive integers; the token ids and the vocabulary size come from the tokenizer. null: pretrained weights."""
    tokenizer: str | None = None
    """Where the tokenizer is when it is not beside the weights (``tiny``: the packaged tiny tokenizer with the
    family's special tokens and chat template). null: ``name_or_path``'s own; required with ``random_init``."""
    family: str | None = None
    """The adapter that drives the VLM (e.g. ``qwen2_5_vl``); null: the ``model_type`` of its Hugging Face config
    (or of ``random_init``)."""
    frame_resolution: int = 0
    """Square size in pixels (≥ 0) every frame is letterboxed to before the family's own preprocessing; it sets the
    tokens per frame. 0: the family's own size, filled in when the model is built (Qwen2.5-VL: 224 px → 8×8 = 64
    tokens; Qwen3-VL: 256 px → 64 tokens; LLaVA-OneVision, SmolVLM2/Idefics3, Gemma 3: their vision encoder's
    ``image_size``). Qwen2.5-VL takes multiples of 28 (14-pixel patches, 2×2 merged), Qwen3-VL multiples of 32;
    Gemma 3 only its ``image_size``."""
    frame_pooled: int = 0
    """k in 0..64: average-pool each frame's token grid to k×k (the live1+ style budget: k² tokens per frame); 0: the
    family's whole grid."""
    frame_tokens: int = 0
    """K, the tokens per frame (≥ 0): derived from the family's layout (``frame_resolution``, ``frame_pooled``) when
    the model is built, and saved with it; 0 until then. A value set by hand must equal the derived one."""
    train_vision: bool = False
    """Train the VLM's vision encoder (its projector aside) in full; false: frozen."""
    train_projector: bool = False
    """Train the VLM's projector (Qwen: the patch merger) in full; false: frozen. A feature cache holds the
    projector's outputs, so neither this nor ``train_vision`` can train from one."""
    lora_vision: bool = False
    """LoRA (the ``lora`` section's r, alpha and dropout) on every linear layer of the VLM's vision encoder, its
    projector aside; the encoder's own weights stay frozen. Not with ``train_vision``, nor from a feature cache. The
    adapter weights are saved in the checkpoint's weights file (``vision.tower.*.lora_A/B.weight``) and merged into
    the encoder when the checkpoint is loaded for inference."""
    lora_projector: bool = False
    """LoRA as ``lora_vision``, on the linear layers of the VLM's projector (Qwen: the patch merger; Qwen3-VL: also
    the DeepStack mergers). Not with ``train_projector``, nor from a feature cache; a family whose projector has no
    linear layer (Gemma 3's is a matrix) refuses it."""
    dtype: str = "bfloat16"
    """Parameter dtype: ``float32``, ``bfloat16`` or ``float16``. (Training keeps the weights it trains in float32
    whatever this says.)"""
    attn_implementation: str = "sdpa"
    """Attention implementation, passed to transformers (``sdpa``, ``eager``, ...). The streaming engine runs an
    ``sdpa`` language model through livecue's grouped-query attention kernel (same results)."""

    def __post_init__(self) -> None:
        _check(self.random_init is None or isinstance(self.random_init, dict),
               f"vlm.random_init must be a mapping or null, got {self.random_init!r}")
        _check_sizes("vlm", self.random_init, nested=True)
        _check(self.frame_resolution >= 0, f"vlm.frame_resolution must be >= 0 (0: the family's own), got "
               f"{self.frame_resolution}")
        _check(0 <= self.frame_pooled <= 64,
               f"vlm.frame_pooled must be in 0..64 (k×k tokens per frame), got {self.frame_pooled}")
        _check(self.frame_tokens >= 0, f"vlm.frame_tokens must be >= 0 (0: derived), got {self.frame_tokens}")
        _check(not self.frame_pooled or self.frame_tokens in (0, self.frame_pooled**2),
               f"vlm.frame_tokens {self.frame_tokens} differs from frame_pooled² = {self.frame_pooled**2}")
        _check(self.dtype in DTYPES, f"vlm.dtype must be one of {DTYPES}, got {self.dtype!r}")
        _check(not (self.train_vision and self.lora_vision),
               "vlm.train_vision trains the vision encoder in full and vlm.lora_vision through LoRA: choose one")
        _check(not (self.train_projector and self.lora_projector),
               "vlm.train_projector trains the projector in full and vlm.lora_projector through LoRA: choose one")

    def check_source(self) -> None:
        """Refuse a VLM section that names no model (what ``architecture: vlm`` needs)."""
        _check(self.name_or_path is not None or self.random_init is not None,
               "vlm needs name_or_path (pretrained) or random_init (random weights); both are None")
        _check(self.random_init is None or "model_type" in self.random_init or self.family is not None,
               f"vlm.random_init needs a model_type (e.g. 'qwen2_5_vl'), got keys {sorted(self.random_init or {})}")
        _check(self.name_or_path is not None or self.tokenizer is not None,
               "vlm.tokenizer must be set when the VLM is randomly initialised (e.g. 'tiny')")


@dataclass
class StreamConfig:
    """The streaming template (SPEC §2), the loss weight (§3) and the decision rule (§6).

    ``fps``, ``threshold``, ``system_prompt`` and ``max_reply_tokens`` are the model's defaults for streaming; every
    front door (``watch``, ``demo``, ``serve``, ``eval``, ``bench``, the Python API) can override them per stream.
    """

    v_placeholder: str = "<v>"
    """The frame-token placeholder, added to the tokenizer as one special token; a frame's K tokens take its
    place in the input. Non-empty."""
    frame_interval: str = ","
    """The text between two frames of a stream segment: after a frame, the model predicts it to stay silent (live1+:
    ``,``, the silence token). Empty (live1): frames follow each other and silence is eos. Must not contain
    ``v_placeholder``."""
    system_prompt: str = UPSTREAM_SYSTEM_PROMPT
    """The system message a conversation starts with (training records and streams that give none)."""
    fps: float = 2.0
    """The stream clock in frames per second, in (0, 240]: frame i is at i / fps seconds; videos are sampled at
    this rate."""
    max_num_frames: int = 1200
    """Training: frames per sample (> 0); a record is cut before the first stream segment that would take it past
    this many frames (1200 = 10 minutes at 2 fps)."""
    stream_loss_weight: float = 1.0
    """α ≥ 0: the weight of the cross-entropy at frame (``<v>``) positions, where the model learns when to speak;
    reply tokens weigh 1 (SPEC §3). 0 learns replies only."""
    threshold: float = 0.725
    """θ in [0, 1]: after a frame, stay silent iff p(silence token) ≥ θ, else reply. Higher θ → more
    talkative."""
    max_reply_tokens: int = 128
    """The longest reply in tokens (> 0); a reply cut there is still closed with eos."""
    chat_format: str = "live"
    """How a conversation is written: ``live`` (the upstream-exact LIVE text: ``User:``/``Assistant:`` lines, frames
    in ``[...]``, the tokenizer's eos ends a reply) or ``template`` (the roles, turn ends and reply end token cut out
    of the tokenizer's own chat template; a stream segment is a user turn of frames). A VLM base sets ``template``."""
    frame_prefix: str = ""
    """Text before each frame's placeholders (e.g. Qwen ``<|vision_start|>``); empty for the LIVE models. A VLM base
    fills it from its family's tokenizer. Must not contain ``v_placeholder``."""
    frame_suffix: str = ""
    """Text after each frame's placeholders (e.g. Qwen ``<|vision_end|>``): when set, it must be one token, and that
    token (not the last placeholder) is where the model decides to stay silent or speak. A VLM base fills it from
    its family's tokenizer. Must not contain ``v_placeholder``."""

    def __post_init__(self) -> None:
        _check(bool(self.v_placeholder), "stream.v_placeholder must be a non-empty string")
        _check(self.v_placeholder not in self.frame_interval,
               f"stream.frame_interval {self.frame_interval!r} must not contain the placeholder")
        _check(self.chat_format in CHAT_FORMATS,
               f"stream.chat_format must be one of {', '.join(CHAT_FORMATS)}, got {self.chat_format!r}")
        for name in ("frame_prefix", "frame_suffix"):
            _check(self.v_placeholder not in getattr(self, name),
                   f"stream.{name} {getattr(self, name)!r} must not contain the placeholder")
        self.fps = FPS.validate("stream.fps", self.fps)  # the same checkers as the stream options
        _check(self.max_num_frames > 0, f"stream.max_num_frames must be positive, got {self.max_num_frames}")
        _check(self.stream_loss_weight >= 0, f"stream.stream_loss_weight must be >= 0, got {self.stream_loss_weight}")
        self.threshold = UNIT_INTERVAL.validate("stream.threshold", self.threshold)
        self.max_reply_tokens = REPLY_TOKENS.validate("stream.max_reply_tokens", self.max_reply_tokens)


@dataclass
class LoraConfig:
    """LoRA on the LM (upstream: r 128, α 256, dropout 0.05, every projection and lm_head).

    The connector is always trained in full and the vision tower stays frozen (``vision.frozen``), LoRA or not.
    """

    enabled: bool = True
    """Train LoRA adapters on the LM (its base weights frozen); false trains the whole LM."""
    r: int = 128
    """LoRA rank (> 0): the inner width of each low-rank update."""
    alpha: int = 256
    """LoRA α (> 0): the update is scaled by α / r."""
    dropout: float = 0.05
    """Dropout in [0, 1) on the input of each LoRA update, while training."""
    target_modules: str = (
        r"model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$|lm_head$"
    )
    """A regular expression over the LM's module names (peft matches it against the whole name): the layers that
    get a LoRA update. The default is upstream's: every attention and MLP projection, and lm_head."""
    # ``modules_to_save`` (always ["connector"]) was written by older livecue versions and never read: it is accepted
    # and dropped on load (LEGACY_KEYS), so their checkpoints keep loading.

    def __post_init__(self) -> None:
        _check(self.r > 0, f"lora.r must be positive, got {self.r}")
        _check(self.alpha > 0, f"lora.alpha must be positive, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")


QUANTIZE_SCHEMES = ("none", "int8", "int4", "fp8")  # quantize.scheme (livecue.model.quantize.SCHEMES, plus none)


@dataclass
class QuantizeConfig:
    """Weight-only quantization applied when the model loads, with θ re-calibrated for it.

    ``livecue quantize`` writes this section (docs/quantization.md); ``--quantize`` on a command overrides
    ``scheme``."""

    scheme: str = "none"
    """``none`` (full precision), ``int8``, ``int4`` or ``fp8`` (a float8 GPU only): the LM's linear layers are
    quantized with torchao after loading (the ``quant`` extra)."""
    threshold: float | None = None
    """θ in [0, 1] re-calibrated for ``scheme`` (its speak rate matched to the full-precision model's at
    ``stream.threshold``); used instead of ``stream.threshold`` when the model loads quantized with this scheme.
    null: not re-calibrated (``stream.threshold`` is used)."""

    def __post_init__(self) -> None:
        _check(self.scheme in QUANTIZE_SCHEMES,
               f"quantize.scheme must be one of {', '.join(QUANTIZE_SCHEMES)}, got {self.scheme!r}")
        if self.threshold is not None:
            self.threshold = UNIT_INTERVAL.validate("quantize.threshold", self.threshold)
        _check(self.threshold is None or self.scheme != "none",
               "quantize.threshold needs quantize.scheme (the scheme it was re-calibrated for)")


@dataclass
class TrainConfig:
    """A training run: data, optimisation, schedule, checkpoints and logs (upstream recipe, SPEC §5).

    Step counts are optimizer update steps: one update per ``gradient_accumulation_steps`` micro-batches of
    ``per_device_batch_size`` records on each process. What may change when resuming a run, and how training works:
    docs/training.md.
    """

    output_dir: str = "runs/live"
    """The run directory: ``livecue_config.json``, ``log.jsonl``, ``tensorboard/``, ``checkpoint-STEP/`` and
    ``final/``."""
    train_data: str | None = None
    """The training records (a JSONL file, docs/records.md); videos are found relative to it. Required to train."""
    eval_data: str | None = None
    """Records to evaluate on every ``eval_steps`` and at the end (loss and speak/silence decision accuracy);
    null: no evaluation."""
    feature_cache: str | None = None
    """A feature cache written by ``livecue encode`` for this vision config: frames are read from it instead of
    decoded from the videos. null: decode the videos."""
    init_from: str | None = None
    """A trained livecue checkpoint (e.g. ``RUN/final``) to continue from, LoRA and connector included, instead
    of a fresh model; its vision config must equal this one but for its colour fields (``vision.frame_colour_bins``,
    ``frame_colour_segments``, ``frame_segment_size``, ``frame_segment_min_share``). null: a fresh model."""
    max_steps: int = -1
    """The number of update steps (> 0); -1: as many as ``epochs`` take."""
    epochs: float = 2.0
    """Passes over the training records (> 0; fractions allowed), when ``max_steps`` is -1."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (> 0), reached after warmup."""
    connector_learning_rate: float | None = None
    """The connector's own peak learning rate (> 0; LLaVA's "projector lr"); null: ``learning_rate``."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warmup: ``cosine`` (to 0), ``linear`` (to 0) or ``constant``."""
    warmup_ratio: float = 0.05
    """The share of the update steps, in [0, 1), spent warming the learning rate up linearly from 0."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay (≥ 0)."""
    per_device_batch_size: int = 1
    """Records per micro-batch on each process (> 0)."""
    gradient_accumulation_steps: int = 8
    """Micro-batches per update step (> 0). The global batch is per_device_batch_size × this × processes
    (upstream: 1 × 8 × 8 = 64)."""
    mixed_precision: str = "bf16"
    """accelerate's mixed precision: ``no`` (float32), ``bf16`` or ``fp16``."""
    gradient_checkpointing: bool = True
    """Recompute the LM's activations in the backward pass: less memory, about a third more compute."""
    max_grad_norm: float = 1.0
    """Clip the gradients' global L2 norm to this (≥ 0; 0: no clipping)."""
    seed: int = 42
    """Seed in [0, 2³²) of the model's initialisation, the data order (a pure function of seed and epoch) and
    dropout."""
    save_steps: int = 500
    """Write ``checkpoint-STEP`` every this many update steps (> 0); the last step goes to ``final/``."""
    eval_steps: int = 500
    """Evaluate on ``eval_data`` every this many update steps (> 0), and after the last."""
    log_steps: int = 10
    """Write loss, learning rate and tokens/s to ``log.jsonl`` every this many update steps (> 0), and after the
    last."""
    eval_max_samples: int = 64
    """Evaluate on at most this many records of ``eval_data`` (> 0)."""
    num_workers: int = 0
    """DataLoader worker processes (≥ 0; 0: load in the training process)."""
    save_total_limit: int = 2
    """Keep the newest this many checkpoints, removing older ones (0 or less: keep all)."""
    report_to: str = "tensorboard"
    """The experiment trackers (accelerate's) that get the run config and the values of ``log.jsonl`` (loss, lr,
    tokens/s, evaluation metrics): ``tensorboard`` (event files in ``output_dir/tensorboard``), ``wandb``,
    ``trackio``, ``mlflow``, several joined by commas (``tensorboard,wandb``), ``all`` (every one installed) or
    ``none``. ``log.jsonl`` is written whatever this says. A tracker that is not installed stops the run before it
    starts, naming its package (tensorboard comes with the ``[train]`` extra). The default writes local files only:
    nothing leaves the machine unless you name an online tracker (docs/training.md). May change on resume."""

    def __post_init__(self) -> None:
        _check(self.epochs > 0, f"train.epochs must be positive, got {self.epochs}")
        _check(self.learning_rate > 0, f"train.learning_rate must be positive, got {self.learning_rate}")
        _check(self.connector_learning_rate is None or self.connector_learning_rate > 0,
               f"train.connector_learning_rate must be positive or null, got {self.connector_learning_rate}")
        _check(self.lr_scheduler in ("cosine", "linear", "constant"),
               f"train.lr_scheduler must be cosine, linear or constant, got {self.lr_scheduler!r}")
        _check(0.0 <= self.warmup_ratio < 1.0, f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check(self.per_device_batch_size > 0,
               f"train.per_device_batch_size must be positive, got {self.per_device_batch_size}")
        _check(self.gradient_accumulation_steps > 0,
               f"train.gradient_accumulation_steps must be positive, got {self.gradient_accumulation_steps}")
        _check(self.max_steps == -1 or self.max_steps > 0,
               f"train.max_steps must be -1 or positive, got {self.max_steps}")
        _check(self.save_steps > 0 and self.eval_steps > 0 and self.log_steps > 0,
               "train.save_steps, eval_steps and log_steps must be positive")
        _check(self.mixed_precision in ("no", "bf16", "fp16"),
               f"train.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")
        _check(0 <= self.seed < 2**32, f"train.seed must be in [0, 2^32), got {self.seed}")
        _check(self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers}")
        _check(self.eval_max_samples > 0, f"train.eval_max_samples must be positive, got {self.eval_max_samples}")
        tracker_names(self.report_to)

    @property
    def trackers(self) -> tuple[str, ...]:
        """``report_to`` as tracker names: ``()`` for ``none``, ``("all",)`` for ``all``."""
        return tracker_names(self.report_to)


def tracker_names(report_to: str) -> tuple[str, ...]:
    """``train.report_to`` (``"tensorboard,wandb"``, ``"all"``, ``"none"``) as a tuple of names, validated: ``()``
    for ``none``, ``("all",)`` for ``all``."""
    names = tuple(n.strip() for n in str(report_to).split(",") if n.strip())
    _check(bool(names) and all(n in (*TRACKERS, "all", "none") for n in names),
           f"train.report_to must be {', '.join(TRACKERS)} (several joined by commas), all or none; got "
           f"{report_to!r}")
    _check(len(names) == 1 or not {"all", "none"} & set(names),
           f"train.report_to: all and none stand alone, got {report_to!r}")
    return () if names == ("none",) else tuple(dict.fromkeys(names))


@dataclass
class LiveConfig:
    """A whole LIVE model: what ``livecue_config.json`` holds.

    A config is set in YAML (a preset, or a file that starts with ``base: PRESET`` and overrides some fields), on
    the command line (``--section.key=value``, e.g. ``--stream.threshold=0.8``), or in Python
    (``preset("tiny", ["train.max_steps=100"])``). It is validated when built: a value out of range is refused
    with one line naming the key. Every checkpoint carries its config as ``livecue_config.json``.
    """

    name: str = "live1_plus"
    """A name for the model (informational: shown by ``livecue info`` and its model card, not used to find anything).
    A training run that continues a checkpoint is renamed after its output directory unless ``--name`` is given
    (docs/training.md)."""
    architecture: str = "composed"
    """What the model is built from: ``composed`` (the paper's: a vision tower, a connector trained from scratch and
    a language model; sections ``vision``, ``connector``, ``lm``) or ``vlm`` (a pretrained vision-language model used
    whole, its own vision encoder and projector included; section ``vlm``). Configs written before this field existed
    are ``composed``."""
    vision: VisionConfig = field(default_factory=VisionConfig)
    """The frame encoder (section ``vision``)."""
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    """The vision → LM projector (section ``connector``)."""
    lm: LMConfig = field(default_factory=LMConfig)
    """The language model and tokenizer (section ``lm``)."""
    vlm: VLMConfig = field(default_factory=VLMConfig)
    """The pretrained vision-language model of ``architecture: vlm`` (section ``vlm``)."""
    stream: StreamConfig = field(default_factory=StreamConfig)
    """The streaming template and decision rule (section ``stream``)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA on the LM (section ``lora``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training run (section ``train``)."""
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    """Weight-only quantization at load time and its re-calibrated θ (section ``quantize``)."""
    config_version: int = CONFIG_VERSION
    """The config format this file was written in; a livecue refuses a config newer than it reads."""

    def __post_init__(self) -> None:
        _check(self.config_version <= CONFIG_VERSION,
               f"config_version {self.config_version} is newer than this livecue ({CONFIG_VERSION}): upgrade livecue")
        _check(self.architecture in ARCHITECTURES,
               f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.is_vlm:
            self.vlm.check_source()
            trained = [f"vlm.{name}" for name in ("train_vision", "train_projector", "lora_vision", "lora_projector")
                       if getattr(self.vlm, name)]
            _check(not (self.train.feature_cache and trained),
                   f"train.feature_cache holds the VLM projector's outputs: {' and '.join(trained)} need the frames "
                   "decoded (set train.feature_cache to null)")

    @property
    def is_vlm(self) -> bool:
        """Whether the base is a pretrained vision-language model (``architecture: vlm``)."""
        return self.architecture == "vlm"

    @property
    def frame_num_tokens(self) -> int:
        """K: tokens per frame (a VLM's is derived when its model is built: ``vlm.frame_tokens``)."""
        if not self.is_vlm:
            return self.vision.frame_num_tokens
        k = self.vlm.frame_pooled**2 or self.vlm.frame_tokens
        _check(k > 0, "vlm.frame_tokens is derived when the model is built: build the model (or "
                      "livecue.model.build.resolve_config) before reading the frame layout")
        return k

    @property
    def frame_resolution(self) -> int:
        """The square size in pixels frames are letterboxed to (``vision.resolution`` or ``vlm.frame_resolution``)."""
        return self.vlm.frame_resolution if self.is_vlm else self.vision.resolution

    # ---- serialisation -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveConfig:
        return from_dict(cls, data, ignore=LEGACY_KEYS)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> LiveConfig:
        """Parse ``livecue_config.json`` text. Errors are one line, naming ``source`` (the file) when given: invalid
        JSON with its line and column, or the key that does not validate."""
        where = f" in {str(source)!r}" if source is not None else ""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON{where} at line {e.lineno} column {e.colno}: {e.msg}") from None
        if source is None:
            return cls.from_dict(data)
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"invalid config {str(source)!r}: {e}") from None

    def save(self, directory: str | Path) -> Path:
        """Write ``livecue_config.json`` into ``directory`` (created if needed); returns the file path."""
        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, source: str | Path) -> LiveConfig:
        """Load from a checkpoint directory, a ``.json`` / ``.yaml`` file, or a preset name."""
        path = Path(source)
        if path.is_dir():
            path = path / CONFIG_FILE
            if not path.exists():
                raise FileNotFoundError(f"no {CONFIG_FILE} in checkpoint directory {str(path.parent)!r}")
        if path.is_file() and path.suffix == ".json":
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{str(path)!r} is not UTF-8 text (byte {e.start}): not a livecue config") from None
            return cls.from_json(text, path)
        if path.is_file():
            data = _read_yaml(path)  # names the file in its own errors
            try:
                return cls.from_dict(data)
            except (ValueError, TypeError) as e:
                raise ValueError(f"invalid config {str(path)!r}: {e}") from None
        if str(source) in list_presets():
            return preset(str(source))
        raise ValueError(f"unknown config {str(source)!r}: not a checkpoint directory, a config file or a preset "
                         f"({', '.join(list_presets())})")

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> LiveConfig:
        """Return a copy with dotted overrides applied (``["stream.threshold=0.8", "lm.dtype=float32"]``)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else (split_override(o) for o in overrides)
        for key, value in items:
            set_dotted(data, key, value)
        return LiveConfig.from_dict(data)


# ---- presets ------------------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset(name: str, overrides: list[str] | dict[str, Any] | None = None) -> LiveConfig:
    """Load a packaged preset (``live1``, ``live1_plus``, ``tiny``, ``tiny_<family>`` VLMs), optionally with dotted
    overrides."""
    name = name.replace("live1+", "live1_plus").replace("-", "_")
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    cfg = LiveConfig.from_dict(_read_yaml(path))
    return cfg.with_overrides(overrides) if overrides else cfg


def yaml_error(path: str | Path, error: Exception) -> str:
    """A YAML (or decoding) error as one line naming the file and the line/column: ``invalid YAML in 'x.yaml'
    (line 3, column 5): expected ',' or ']', but got '}'``."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
    if isinstance(error, UnicodeDecodeError):
        where, problem = f" (byte {error.start})", "not UTF-8 text"
    return f"invalid YAML in {str(path)!r}{where}: {' '.join(str(problem).split())}"


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config; ``base: PRESET`` (or a path) merges the file over that config."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(yaml_error(path, e)) from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    merged = LiveConfig.load(base_path if base_path.exists() else base).to_dict()
    merge(merged, data, atomic=frozenset({"random_init"}))  # a random_init replaces the base's whole
    return merged
