"""The ``livecue`` console script: one entry point, lazily imported subcommands.

Each subcommand lives in its own module with a ``main(argv) -> int``; this file only knows their names and one-line
help, so ``livecue --help`` starts instantly and never imports torch.
"""

from __future__ import annotations

import importlib
import os
import sys

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
    "push": ("livecue.commands.push", "publish a checkpoint (weights, tokenizer, model card) to the Hugging Face Hub"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: livecue <command> [options]", "",
             "livecue: online video LLMs that watch a stream and decide when to speak (LIVE / VideoLLM-online).", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'livecue <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
