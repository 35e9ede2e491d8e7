"""Typed configuration: dataclasses, YAML presets, dotted overrides, JSON round trip.

A :class:`LiveConfig` describes one LIVE model completely (vision tower, connector, language model, streaming
template, LoRA, training). It is validated on construction, saved as ``livecue_config.json`` beside every
checkpoint, and rebuilt from that file, a YAML preset (``live1``, ``live1_plus``, ``tiny``) or a YAML path.

This module imports neither torch nor transformers, so the CLI can use it at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "livecue_config.json"
CONFIG_VERSION = 1
PRESET_DIR = Path(__file__).parent / "presets"

UPSTREAM_SYSTEM_PROMPT = (
    "A multimodal AI assistant is helping users with some activities. Below is their conversation, interleaved "
    "with the list of video frames received by the assistant."
)

VISION_KINDS = ("siglip", "clip", "dinov2", "hf", "efficientnet_lite0")
DTYPES = ("float32", "bfloat16", "float16")
MAX_FPS = 240.0  # the highest stream clock (frames per second) livecue accepts anywhere

# random_init keys that size a model: each must be a positive integer (or null for the library's default)
_SIZE_KEY = re.compile(r"(_size|_layers|_heads|_dim|_channels)$|^num_|^max_position_embeddings$")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _check_sizes(section: str, random_init: dict[str, Any] | None) -> None:
    """Refuse random_init dimensions that would build negative or empty tensors, naming the key."""
    for key, value in (random_init or {}).items():
        if not isinstance(key, str) or not _SIZE_KEY.search(key) or value is None:
            continue
        _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
               f"{section}.random_init.{key} must be a positive integer, got {value!r}")


@dataclass
class VisionConfig:
    """The frozen frame encoder and the tokens it emits per frame.

    Attributes:
        kind: tower family: ``siglip`` (pooler_output as "CLS"), ``clip`` / ``dinov2`` / ``hf`` (token 0 as CLS,
            the rest a square patch grid) or ``efficientnet_lite0`` (CNN: global average pool as "CLS").
        name_or_path: hub id or local directory of pretrained weights (``efficientnet-lite0`` for the offline
            ImageNet weights). ``None`` with ``random_init`` builds a randomly initialised tower.
        random_init: keyword arguments of the tower's Hugging Face config (``model_type`` included) for a
            randomly initialised tower (tests, benchmarks).
        resolution: square input size in pixels (frames are letterboxed to it).
        frame_token_cls: emit the "CLS" token first.
        frame_token_pooled: k: emit k×k adaptive-average-pooled spatial tokens (0: none).
        frame_colour_bins: b: append to every token a colour histogram of the image region it covers (the whole
            frame for the CLS, the pooling window for a pooled token): the share of the region's pixels in each of
            the b³ cells of RGB space (b levels per channel), log-scaled as log(1 + 100·share) / log(101) so that a
            small object still shows (0: none). The vision width grows by b³; the token count does not. For towers
            whose features are nearly colour-invariant (ImageNet CNNs), so that the connector sees which colours
            sit where, next to what the tower saw there.
        frozen: keep the tower's weights frozen.
        mean, std: per-channel normalisation after scaling to [0, 1]; ``None`` takes the tower's own.
    """

    kind: str = "siglip"
    name_or_path: str | None = "google/siglip-large-patch16-384"
    random_init: dict[str, Any] | None = None
    resolution: int = 384
    frame_token_cls: bool = True
    frame_token_pooled: int = 3
    frame_colour_bins: int = 0
    frozen: bool = True
    mean: list[float] | None = None
    std: list[float] | None = None

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
        _check(self.frame_token_cls or self.frame_token_pooled > 0,
               "vision emits no token per frame: set frame_token_cls or frame_token_pooled > 0")
        for name in ("mean", "std"):
            v = getattr(self, name)
            _check(v is None or len(v) == 3, f"vision.{name} needs 3 values (RGB), got {v!r}")

    @property
    def frame_num_tokens(self) -> int:
        """K: tokens per frame (CLS + k×k)."""
        return int(self.frame_token_cls) + self.frame_token_pooled**2

    @property
    def colour_width(self) -> int:
        """Values :attr:`frame_colour_bins` appends to every token (b³ histogram cells; 0 when off)."""
        return self.frame_colour_bins**3


@dataclass
class ConnectorConfig:
    """The vision → LM projector. ``mlp2x_gelu``: Linear(D_vision → H) → GELU(erf) → Linear(H → H)."""

    kind: str = "mlp2x_gelu"

    def __post_init__(self) -> None:
        _check(self.kind == "mlp2x_gelu", f"connector.kind must be 'mlp2x_gelu', got {self.kind!r}")


@dataclass
class LMConfig:
    """The causal language model (any ``AutoModelForCausalLM``) and its tokenizer.

    Attributes:
        name_or_path: hub id, local directory or a livecue alias (e.g. ``smollm2-135m-instruct``).
        random_init: keyword arguments of an ``AutoConfig.for_model`` (``model_type`` included) for random weights;
            ``vocab_size`` defaults to the tokenizer's base vocabulary.
        tokenizer: tokenizer location when it differs from ``name_or_path`` (``tiny``: the packaged tiny tokenizer).
        dtype: parameter dtype.
        attn_implementation: passed to transformers (``sdpa``, ``eager``, ...).
    """

    name_or_path: str | None = "meta-llama/Meta-Llama-3-8B-Instruct"
    random_init: dict[str, Any] | None = None
    tokenizer: str | None = None
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"

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
class StreamConfig:
    """The streaming template (SPEC §2), the loss weight (§3) and the decision rule (§6).

    Attributes:
        v_placeholder: the frame-token placeholder added to the tokenizer.
        frame_interval: string between frames of a stream segment (live1+: ``,``; live1: empty, silence = eos).
        system_prompt: default system message.
        fps: the stream clock: frames per second (time = frame index / fps).
        max_num_frames: truncate a training stream at the first segment exceeding this many frames.
        stream_loss_weight: α, the weight of the CE at ``<v>`` positions.
        threshold: θ; stay silent iff p(silence token) ≥ θ. Higher θ → more talkative.
        max_reply_tokens: cap on a reply's length; the turn is always closed with eos.
    """

    v_placeholder: str = "<v>"
    frame_interval: str = ","
    system_prompt: str = UPSTREAM_SYSTEM_PROMPT
    fps: float = 2.0
    max_num_frames: int = 1200
    stream_loss_weight: float = 1.0
    threshold: float = 0.725
    max_reply_tokens: int = 128

    def __post_init__(self) -> None:
        _check(bool(self.v_placeholder), "stream.v_placeholder must be a non-empty string")
        _check(self.v_placeholder not in self.frame_interval,
               f"stream.frame_interval {self.frame_interval!r} must not contain the placeholder")
        _check(0 < self.fps <= MAX_FPS, f"stream.fps must be in (0, {MAX_FPS:g}], got {self.fps}")
        _check(self.max_num_frames > 0, f"stream.max_num_frames must be positive, got {self.max_num_frames}")
        _check(self.stream_loss_weight >= 0, f"stream.stream_loss_weight must be >= 0, got {self.stream_loss_weight}")
        _check(0.0 <= self.threshold <= 1.0, f"stream.threshold must be in [0, 1], got {self.threshold}")
        _check(self.max_reply_tokens > 0, f"stream.max_reply_tokens must be positive, got {self.max_reply_tokens}")


@dataclass
class LoraConfig:
    """LoRA on the LM (upstream: r 128, α 256, dropout 0.05, every projection and lm_head; connector fully trained)."""

    enabled: bool = True
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: str = (
        r"model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$|lm_head$"
    )
    modules_to_save: list[str] = field(default_factory=lambda: ["connector"])

    def __post_init__(self) -> None:
        _check(self.r > 0, f"lora.r must be positive, got {self.r}")
        _check(self.alpha > 0, f"lora.alpha must be positive, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    """Optimisation (upstream recipe, SPEC §5)."""

    output_dir: str = "runs/live"
    train_data: str | None = None
    eval_data: str | None = None
    feature_cache: str | None = None
    init_from: str | None = None
    max_steps: int = -1
    epochs: float = 2.0
    learning_rate: float = 2e-4
    connector_learning_rate: float | None = None  # the connector's own peak lr (None: learning_rate)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int = 500
    eval_steps: int = 500
    log_steps: int = 10
    eval_max_samples: int = 64
    num_workers: int = 0
    save_total_limit: int = 2

    def __post_init__(self) -> None:
        _check(self.epochs > 0, f"train.epochs must be positive, got {self.epochs}")
        _check(self.learning_rate > 0, f"train.learning_rate must be positive, got {self.learning_rate}")
        _check(self.connector_learning_rate is None or self.connector_learning_rate > 0,
               f"train.connector_learning_rate must be positive or null, got {self.connector_learning_rate}")
        _check(self.lr_scheduler in ("cosine", "linear", "constant"),
               f"train.lr_scheduler must be cosine, linear or constant, got {self.lr_scheduler!r}")
        _check(0.0 <= self.warmup_ratio < 1.0, f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check(self.per_device_batch_size > 0, f"train.per_device_batch_size must be positive, got {self.per_device_batch_size}")
        _check(self.gradient_accumulation_steps > 0,
               f"train.gradient_accumulation_steps must be positive, got {self.gradient_accumulation_steps}")
        _check(self.max_steps == -1 or self.max_steps > 0, f"train.max_steps must be -1 or positive, got {self.max_steps}")
        _check(self.save_steps > 0 and self.eval_steps > 0 and self.log_steps > 0,
               "train.save_steps, eval_steps and log_steps must be positive")
        _check(self.mixed_precision in ("no", "bf16", "fp16"),
               f"train.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")
        _check(0 <= self.seed < 2**32, f"train.seed must be in [0, 2^32), got {self.seed}")
        _check(self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers}")
        _check(self.eval_max_samples > 0, f"train.eval_max_samples must be positive, got {self.eval_max_samples}")


@dataclass
class LiveConfig:
    """A whole LIVE model: what ``livecue_config.json`` holds."""

    name: str = "live1_plus"
    vision: VisionConfig = field(default_factory=VisionConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    config_version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check(self.config_version <= CONFIG_VERSION,
               f"config_version {self.config_version} is newer than this livecue ({CONFIG_VERSION}): upgrade livecue")

    @property
    def frame_num_tokens(self) -> int:
        return self.vision.frame_num_tokens

    # ---- serialisation -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LiveConfig":
        return _from_dict(cls, data, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> "LiveConfig":
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
    def load(cls, source: str | Path) -> "LiveConfig":
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

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "LiveConfig":
        """Return a copy with dotted overrides applied (``["stream.threshold=0.8", "lm.dtype=float32"]``)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
        for key, value in items:
            _set_dotted(data, key, value)
        return LiveConfig.from_dict(data)


# ---- presets ------------------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset(name: str, overrides: list[str] | dict[str, Any] | None = None) -> LiveConfig:
    """Load a packaged preset (``live1``, ``live1_plus``, ``tiny``), optionally with dotted overrides."""
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
    _merge(merged, data)
    return merged


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "random_init":
            _merge(into[key], value)
        else:
            into[key] = value


# ---- typed (de)serialisation --------------------------------------------------------------------------------------
def _split_override(text: str) -> tuple[str, Any]:
    text = text[2:] if text.startswith("--") else text
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; unknown keys are reported by :func:`_from_dict` afterwards."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {key!r}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(repr(f'{where}{k}') for k in unknown)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if tp is Any or value is None and tp is type(None):
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {where!r} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(inner, v, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {where!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {where!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"config key {where!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 and 1.0e9 (no exponent sign) as strings
            try:
                value = float(value.strip().replace("_", ""))
            except ValueError:
                raise ValueError(f"config key {where!r} must be a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ValueError(f"config key {where!r} must be a finite number, got {value!r}")
            return number
        raise ValueError(f"config key {where!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"config key {where!r} must be a string, got {value!r}")
    return value
