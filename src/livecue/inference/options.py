"""StreamOptions: the options of a stream, one set for every front door (``watch``, ``demo``, ``serve``, ``eval``,
``bench``, the WebSocket ``open`` message and the Python API).

Each option is declared once in :data:`OPTIONS` with its command-line name, its checker and its help; the same
checker validates a value whether it comes from argparse (``--fps nan`` -> one line naming the option and the
range), from a WebSocket message or from Python (``StreamOptions(fps=0)`` -> ``ValueError``; :func:`check_option`
checks one value). ``None`` means "not set here": the engine's value, else the model's own (``stream.*`` of its
config), else the built-in default (greedy sampling; unbounded memory in the library, ``sink:4096`` in
``livecue serve``).

    opts = StreamOptions(threshold=0.8, memory="sink:4096")
    engine = StreamEngine(model, tokenizer, options=opts)        # defaults of every session of this engine
    session = engine.session(options=StreamOptions(threshold=0.5))  # per-session overrides

Pure Python (no torch): commands build their parsers from it at start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..argtypes import (
    FPS,
    MAX_REPLY_TOKENS,
    REPLY_TOKENS,
    UNIT_INTERVAL,
    Number,
    finite_float,
    nonnegative_float,
    positive_float,
    text,
)
from .memory import MemoryPolicy, parse_memory

MAX_SYSTEM_CHARS = 8000   # the longest system prompt
MAX_QUERY_CHARS = 2000    # the longest query / instruction text


@dataclass(frozen=True)
class SamplingConfig:
    """Reply decoding. ``temperature = 0`` is greedy (the default)."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            check_option(name, getattr(self, name))


def _memory(spec: str) -> str:
    """argparse ``type=`` / checker of ``--memory``: the spec itself, once it parses."""
    try:
        parse_memory(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return str(spec).strip().lower()


_memory.__name__ = "memory policy"


@dataclass(frozen=True)
class Option:
    """One stream option: its flag, its checker (an argparse ``type=``) and its help."""

    flag: str
    check: Callable[[Any], Any]
    help: str
    metavar: str | None = None


OPTIONS: dict[str, Option] = {
    "threshold": Option("--threshold", UNIT_INTERVAL, f"θ in {UNIT_INTERVAL.range}: stay silent iff p(silence) >= θ; "
                                                      "higher = more talkative (default: the model's)"),
    "fps": Option("--fps", FPS, f"frames per second fed to the model, in {FPS.range} (default: the model's)"),
    "system_prompt": Option("--system", text(MAX_SYSTEM_CHARS, "system prompt"),
                            f"system prompt, at most {MAX_SYSTEM_CHARS:,} characters (default: the model's)",
                            metavar="TEXT"),
    "max_reply_tokens": Option("--max-reply-tokens", REPLY_TOKENS,
                               f"cap on a reply's length, in [1, {MAX_REPLY_TOKENS}] (default: the model's)"),
    "temperature": Option("--temperature", nonnegative_float(100.0), "reply sampling temperature in [0, 100] "
                                                                     "(0 = greedy; default: 0)"),
    "top_p": Option("--top-p", finite_float(0.0, 1.0, lo_open=True), "nucleus sampling mass in (0, 1] (default: 1)"),
    "repetition_penalty": Option("--repetition-penalty", positive_float(100.0),
                                 "penalise repeated reply tokens, in (0, 100] (1 = off; default: 1)"),
    "memory": Option("--memory", _memory, "what each stream keeps in its KV cache: 'unbounded', or an attention sink "
                                          "+ sliding window 'sink:MAX_TOKENS[:CHUNK]', e.g. sink:4096 "
                                          "(default: unbounded)", metavar="SPEC"),
}


def check_option(name: str, value: Any) -> Any:
    """``value`` checked by option ``name``'s checker (a number as its kind: ``2`` -> ``2.0`` for θ); ValueError
    naming the option otherwise, in the words argparse prints for it: ``threshold must be a finite number in [0, 1],
    got '2'``. The one check of every stream option, whatever the front door."""
    option = OPTIONS[name]
    check = option.check
    try:
        if not isinstance(check, Number):
            if not isinstance(value, str):
                raise _not_text(check, value)
            return check(value)
        return check.validate(name, value)
    except argparse.ArgumentTypeError as e:
        message = str(e)
        raise ValueError(message if message.startswith(name) else f"{name} {message}") from None


def _not_text(check: Callable[[Any], Any], value: Any) -> argparse.ArgumentTypeError:
    """The error of a text option's checker for a value that is not text."""
    what = getattr(check, "__name__", "text")
    return argparse.ArgumentTypeError(f"must be a {what} (a string), got {type(value).__name__}")


@dataclass(frozen=True)
class StreamOptions:
    """The options of a stream (see the module docstring). Every field is optional: ``None`` is "not set here"
    (the engine's value, else the model's ``stream.*``, else the built-in default).

    Attributes:
        threshold: θ in [0, 1]: silent iff p(silence) >= θ.
        fps: the stream clock (frames per second fed to the model).
        system_prompt: the system message.
        max_reply_tokens: cap on a reply's length (a capped reply is still closed with eos).
        temperature, top_p, repetition_penalty: reply sampling (:class:`SamplingConfig`; greedy when unset).
        memory: ``unbounded`` | ``sink:MAX_TOKENS[:CHUNK]`` (:func:`~livecue.inference.memory.parse_memory`).
    """

    threshold: float | None = None
    fps: float | None = None
    system_prompt: str | None = None
    max_reply_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    memory: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, check_option(f.name, value))

    @property
    def sampling(self) -> SamplingConfig:
        """Reply decoding: the sampling fields set here, the defaults (greedy) for the others."""
        return SamplingConfig(**{name: getattr(self, name) for name in SAMPLING if getattr(self, name) is not None})

    def memory_policy(self, default: MemoryPolicy | None = None) -> MemoryPolicy | None:
        """The memory policy ``memory`` names, or ``default`` when it is None."""
        return default if self.memory is None else parse_memory(self.memory)

    def merged(self, other: StreamOptions | None) -> StreamOptions:
        """These options with every field ``other`` sets (not None) taking its place."""
        if other is None:
            return self
        return dataclasses.replace(self, **other.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (not None), by name: e.g. the fields of a WebSocket ``open`` message."""
        return {name: getattr(self, name) for name in OPTIONS if getattr(self, name) is not None}

    # ---- command line --------------------------------------------------------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      defaults: dict[str, Any] | None = None) -> None:
        """Add the options ``names`` (default: all) to ``parser`` with their checkers and help; ``defaults`` may
        replace a default (its help then says so)."""
        defaults = defaults or {}
        for name in names or tuple(OPTIONS):
            option = OPTIONS[name]
            default = defaults.get(name, _DEFAULTS[name])
            help_ = option.help if name not in defaults else f"{option.help.split(' (default')[0]} (default: {default})"
            parser.add_argument(option.flag, dest=name, type=option.check, default=default, help=help_,
                                metavar=option.metavar)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StreamOptions:
        """The options a parsed command line holds (those :meth:`add_arguments` added)."""
        return cls(**{name: getattr(args, name) for name in OPTIONS if hasattr(args, name)})


SAMPLING = ("temperature", "top_p", "repetition_penalty")  # the options that make a SamplingConfig
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StreamOptions)}
assert set(_DEFAULTS) == set(OPTIONS), "every StreamOptions field is declared in OPTIONS"

ATTENTION_CHOICES = ("auto", "loop", "padded", "flex")  # livecue.model.kvpool.ATTENTION, plus auto


@dataclass(frozen=True)
class FastPath:
    """How an engine runs its forwards: engine-wide (every session of it), unlike :class:`StreamOptions`.

    Attributes:
        compile: ``torch.compile`` the step (``--compile``): every forward is a round over a preallocated KV pool
            padded to a few bucketed shapes, attending with FlexAttention; CUDA graphs (``reduce-overhead``) on a
            GPU. The first rounds of each shape compile (about a minute on a CPU).
        kv_pool: keep the sessions' caches in one preallocated KV pool (:mod:`livecue.model.kvpool`); None: when
            compiling.
        attention: how a pooled round attends: ``loop`` (one SDPA per session), ``padded`` (one SDPA over the
            sessions' gathered caches), ``flex`` (one FlexAttention call over the pool), ``auto`` (flex when
            compiling, else loop).
        pool_capacity: positions per session in the pool (it grows when a session needs more); 0: the memory
            policy's budget plus headroom, else 2048.
        pool_slots: sessions the pool holds before it doubles.
    """

    compile: bool = False
    kv_pool: bool | None = None
    attention: str = "auto"
    pool_capacity: int = 0
    pool_slots: int = 4

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, got {self.attention!r}")
        if self.compile and self.kv_pool is False:
            raise ValueError("compile needs the KV pool (its static shapes): leave kv_pool unset")
        if self.compile and self.attention in ("loop", "padded"):
            raise ValueError(f"a compiled step attends with flex (static shapes), not {self.attention!r}")
        for name in ("pool_capacity", "pool_slots"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "pool_capacity" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'pool_capacity' else 1}, got {value!r}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """``--compile``, ``--kv-pool``, ``--attention``: the fast path of the command's engine."""
        parser.add_argument("--compile", action="store_true",
                            help="torch.compile the step over a preallocated KV pool (static, bucketed shapes; CUDA "
                                 "graphs on a GPU). The first frames of each shape compile: ~1 min on a CPU, where "
                                 "it is not faster (docs/fast_path.md)")
        parser.add_argument("--kv-pool", action="store_true",
                            help="keep every session's KV cache in one preallocated pool (implied by --compile)")
        parser.add_argument("--attention", choices=ATTENTION_CHOICES, default="auto",
                            help="how a batched round attends over the pool: loop (one call per session), padded "
                                 "(one SDPA call), flex (one FlexAttention call), auto (flex when compiled, else "
                                 "loop; default)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FastPath:
        """The fast path the command line asked for (ValueError naming a combination that cannot work)."""
        return cls(compile=bool(getattr(args, "compile", False)),
                   kv_pool=True if getattr(args, "kv_pool", False) or getattr(args, "attention", "auto") != "auto"
                   else None, attention=getattr(args, "attention", "auto"))

    @property
    def pooled(self) -> bool:
        """Whether sessions' caches live in a KV pool."""
        return self.compile if self.kv_pool is None else self.kv_pool

    @property
    def pool_attention(self) -> str:
        return ("flex" if self.compile else "loop") if self.attention == "auto" else self.attention


__all__ = ["ATTENTION_CHOICES", "FastPath", "MAX_QUERY_CHARS", "MAX_REPLY_TOKENS", "MAX_SYSTEM_CHARS", "OPTIONS",
           "Option", "SAMPLING", "SamplingConfig", "StreamOptions", "check_option"]
