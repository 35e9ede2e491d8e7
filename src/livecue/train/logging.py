"""Training logs: JSON lines (always), TensorBoard (when installed) and a progress line on a terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TrainLogger:
    """Writes ``log.jsonl`` (one object per logged step) and TensorBoard scalars under ``output_dir``.

    Only the main process should create one (the recipe passes ``enabled=False`` elsewhere). ``resume_step``: the
    step a resumed run continues from; records after it (written by the run that was stopped after its last
    checkpoint) are dropped, in ``log.jsonl`` and in TensorBoard, so every step is logged once.
    """

    def __init__(self, output_dir: str | Path, total_steps: int, enabled: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.total = total_steps
        self.start = time.perf_counter()
        self.start_step = 0
        self._tty = enabled and sys.stderr.isatty()
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        resume = bool(resume_step)
        if resume:
            _truncate_after(out / "log.jsonl", resume_step)
        self._jsonl = (out / "log.jsonl").open("a" if resume else "w", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume else None)
        except ImportError:
            log.info("tensorboard is not installed: logging to log.jsonl only")

    def mark_start(self, step: int) -> None:
        """The run (re)starts at ``step`` now: the progress line's ETA counts from here."""
        self.start, self.start_step = time.perf_counter(), step

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Append ``{"step": step, **values}`` to ``log.jsonl`` (floats rounded to 6 digits); numbers to TensorBoard."""
        if not self.enabled:
            return
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def progress(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """Redraw the progress line (bar, step, loss, lr, tokens/s, ETA) when stderr is a terminal."""
        if not self._tty:
            return
        done = step - self.start_step
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - step) if done else 0.0
        width = 24
        filled = int(width * step / max(1, self.total))
        bar = "█" * filled + "·" * (width - filled)
        sys.stderr.write(f"\r{bar} {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s  "
                         f"ETA {_fmt(eta)}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        """End the progress line and close the files."""
        if self._tty:
            sys.stderr.write("\n")
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _truncate_after(path: Path, step: int) -> None:
    """Keep the records of ``path`` up to ``step`` (lines that are not records, e.g. a torn last line, go too)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
