"""The ``livecue`` console script: one entry point, lazily imported subcommands.

Each subcommand lives in its own module with a ``main(argv) -> int``; this file only knows their names and one-line
help, so ``livecue --help`` starts instantly and never imports torch.

It is also the edge where third-party noise is turned down: while a command runs, the known-benign warnings, log
lines and progress bars of other libraries listed below are hidden (``livecue -v COMMAND`` or ``LIVECUE_VERBOSE=1``
shows them). Library modules never do this: ``import livecue`` leaves warnings and logging as they are.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("livecue.commands.demo", "the default model narrating a held-out stream in real time (offline, CPU)"),
    "watch": ("livecue.commands.watch", "watch a video file, image folder, webcam or stream URL and narrate it live"),
    "serve": ("livecue.commands.serve", "serve a model to many live streams: WebSocket protocol + live web page"),
    "convert-data": ("livecue.commands.convert_data", "convert official annotations (Ego4D, GoalStep, COIN, LTA) "
                                                      "to streaming-dialogue records"),
    "world": ("livecue.commands.world", "generate the built-in streaming world: rendered videos + dialogue records"),
    "train": ("livecue.commands.train", "fine-tune a LIVE model (LoRA + connector) with accelerate; resumable"),
    "eval": ("livecue.commands.eval", "evaluate: paper metrics (narration, COIN, LTA), free-running, θ calibration"),
    "encode": ("livecue.commands.encode", "pre-encode videos with the frozen vision tower into a resumable feature "
                                          "cache (sharded with accelerate)"),
    "convert": ("livecue.commands.convert", "convert the paper's released adapter layout to a livecue checkpoint "
                                            "and back"),
    "config": ("livecue.commands.config", "show a preset, config file or checkpoint config, with --a.b=c overrides"),
    "bench": ("livecue.commands.bench", "benchmark streaming speed and memory vs stream length (forced replies)"),
    "info": ("livecue.commands.info", "build a model and print its parts, frame layout and marker token ids"),
    "render": ("livecue.commands.render", "render a conversation (JSON) with the LIVE template and show its labels"),
    "quantize": ("livecue.commands.quantize", "quantize a checkpoint's LM (int8/int4/fp8, torchao) and re-calibrate "
                                              "θ for it"),
    "push": ("livecue.commands.push", "publish a checkpoint (weights, tokenizer, model card) to the Hugging Face Hub"),
}


# ---- known-benign third-party messages, hidden unless verbose ------------------------------------------------------
# Each entry matches one message precisely (a regular expression matched from the message's start, plus the category
# and the emitting module or logger), with why it is benign for livecue. Never a whole category or library: anything
# not listed here (e.g. torch's "Failed to initialize NumPy", a real installation problem) is always shown.

# (message, category, module) for warnings.filterwarnings. No transformers FutureWarning is listed: with transformers
# 5.24 none reaches a livecue command (watch, demo, train, eval, serve and info of every preset were checked; the
# deprecated `is_gradient_checkpointing` is asked for only by peft's get_peft_model, which livecue does not call).
BENIGN_WARNINGS: list[tuple[str, type[Warning], str]] = [
    # peft, when LoRA targets the LM head of a model with tied embeddings (SmolLM2, the default model's LM): tying
    # the adapters (ensure_weight_tying) only matters to merge the adapter or convert the weights to another format.
    # livecue never merges a tied head (model.lora.merge_lora leaves it unmerged) and writes its own safetensors
    # files with the tie undone (model.load), so the LoRA on the head is exactly what was trained.
    (r"Model has `tie_word_embeddings=True` and a tied layer is part of the adapter", UserWarning, r"peft\."),
]

# (logger, message) for a logging filter on that logger
BENIGN_LOGS: list[tuple[str, str]] = [
    # accelerate, when a training checkpoint (save_state) holds a tied LM head: safetensors cannot store one tensor
    # twice, so the head's copy of the embedding matrix is dropped; the tie is rebuilt when the model is built again
    # on resume (the resume tests check the run continues bit-exactly). Only heads: any other shared tensor is shown.
    ("accelerate.utils.other",
     r"(\[RANK \d+\] )?Removed shared tensor \{'[^']*lm_head[^']*'(, '[^']*lm_head[^']*')*\} while saving"),
    # torchao (the [quant] extra), imported by peft whenever it is installed: its import registers its enums with
    # torch's pytree, which torch 2.13 deprecates for enums (they need no registration any more); nothing to act on.
    ("torch.utils._pytree", r"<enum '[^']*'> is an Enum subclass and is now natively supported by torch\.compile"),
    # torchao's import also tries its GPU-only kernel libraries (CUTLASS for Hopper, sm_90a; MXFP8, built for one
    # CPython ABI); where they cannot load (a CPU machine, another GPU or Python) they are never used: livecue's CPU
    # int8/int4 paths do not need them. (-v shows the lines, e.g. to check an H100's FP8 kernels.)
    ("torchao", r"Failed to load \S*/torchao/_C_(cutlass_90a|mxfp8)[^/]*\.so"),
    # torchao's int8 matmul module, on a machine without triton (every CPU machine): triton only serves GPU
    # dynamic-activation schemes, not the weight-only schemes livecue uses.
    ("torchao.kernel.intmm", r"Warning: Detected no triton"),
]

# transformers progress bars, by their description, hidden through transformers.utils.logging.set_tqdm_hook: no
# other bar is touched (huggingface_hub's download bars, the real progress of a long download, stay). The environment
# switch HF_HUB_DISABLE_PROGRESS_BARS would hide those too, and TRANSFORMERS_VERBOSITY does not reach bars.
BENIGN_BARS: tuple[str, ...] = (
    # from_pretrained's per-tensor loading bar (transformers.core_model_loading): a second or two for livecue's
    # models, and \r-joined noise in logs and pipes; livecue's own progress covers the long work.
    "Loading weights",
)


def verbose_from_env() -> bool:
    """``LIVECUE_VERBOSE=1`` (or true/yes/on): show third-party messages, like ``livecue -v``."""
    return os.environ.get("LIVECUE_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


class _DropLogs(logging.Filter):
    """Drops the log records whose message matches one of ``patterns``."""

    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``callback(module)`` as soon as the module ``name`` has been imported by whoever imports it (at once if
    it already is), so that the CLI can set a library up without importing it itself: ``livecue --help`` and the
    light commands stay free of transformers. ``remove()`` cancels a pending call."""

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name, self.callback = name, callback
        if name in sys.modules:
            callback(sys.modules[name])
        else:
            sys.meta_path.insert(0, self)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        if fullname != self.name:
            return None
        self.remove()
        spec = importlib.util.find_spec(fullname)  # what the other finders give, as without this one
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenCall(spec.loader, self.callback)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class _ThenCall(importlib.abc.Loader):
    """A module's own loader, then ``callback(module)`` once the module has run."""

    def __init__(self, loader: importlib.abc.Loader, callback: Callable[[ModuleType], None]) -> None:
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.callback(module)

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ...: the module's own loader's
        return getattr(self.loader, name)


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Hide the :data:`BENIGN_WARNINGS`, :data:`BENIGN_LOGS` and :data:`BENIGN_BARS` while the block runs; everything
    is as before afterwards (warning filters, logger filters, transformers' tqdm hook)."""
    undo: list[Callable[[], None]] = []

    def hush_bars(transformers_logging: ModuleType) -> None:
        def hook(factory, args, kwargs):
            if kwargs.get("desc") in BENIGN_BARS:
                kwargs = {**kwargs, "disable": True}
            return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

        previous = transformers_logging.set_tqdm_hook(hook)
        undo.append(lambda: transformers_logging.set_tqdm_hook(previous))

    drop = _DropLogs([message for _, message in BENIGN_LOGS])
    loggers = [logging.getLogger(name) for name in dict.fromkeys(name for name, _ in BENIGN_LOGS)]
    with warnings.catch_warnings():
        for message, category, module in BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        for logger in loggers:
            logger.addFilter(drop)
        pending = _AfterImport("transformers.utils.logging", hush_bars)
        try:
            yield
        finally:
            pending.remove()
            for logger in loggers:
                logger.removeFilter(drop)
            for step in reversed(undo):
                step()


# ---- the entry point ----------------------------------------------------------------------------------------------
def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: livecue [-v] <command> [options]", "",
             "livecue: online video LLMs that watch a stream and decide when to speak (LIVE / VideoLLM-online).", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "options:",
              "  -v, --verbose  show other libraries' warnings, logs and progress bars that livecue hides as benign",
              "                 (also LIVECUE_VERBOSE=1)",
              "", "Run 'livecue <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = verbose_from_env()
    while argv and argv[0] in ("-v", "--verbose"):  # livecue's own options come before the command's name
        verbose = True
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        from . import __version__

        print(f"livecue {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"livecue: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        if verbose:
            return int(module.main(rest) or 0)
        with quiet_third_party():
            return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print("livecue: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as e:
        if os.environ.get("LIVECUE_DEBUG"):
            raise
        print(f"livecue {name}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last-resort net: one line, never a traceback
        if os.environ.get("LIVECUE_DEBUG"):
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        print(f"livecue {name}: error: {type(e).__name__}: {first or '(no message)'} "
              f"(set LIVECUE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """An error's message on one line (a multi-line third-party message has its lines joined)."""
    text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) if "\n" in text else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
