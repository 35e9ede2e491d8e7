"""PNG plots of evaluation results (matplotlib, the ``[eval]`` extra; headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'livecue[eval]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_calibration(rows: Sequence[dict[str, Any]], recommended: float, path: str | Path) -> Path:
    """TimeDiff, Fluency and F1 against θ, one panel each, the recommended θ marked."""
    plt = _pyplot()
    th = [r["threshold"] for r in rows]
    panels = [("time_diff", "TimeDiff (s) ↓"), ("fluency", "Fluency ↑"), ("f1", "speak F1 ↑")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, title) in zip(axes, panels):
        series = [(key, "teacher-forced" if key != "f1" else "teacher-forced (per frame)")]
        if key == "f1":
            series = [("speak_f1", "teacher-forced (per frame)"), ("free_f1", "free-running (±tolerance)")]
        elif key == "time_diff" and any(r.get("free_time_diff") is not None for r in rows):
            series.append(("free_time_diff", "free-running"))
        for k, label in series:
            pts = [(t, r[k]) for t, r in zip(th, rows) if r.get(k) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.axvline(recommended, color="grey", ls="--", lw=1)
        ax.set_xlabel("θ (silent iff p(silence) ≥ θ)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"threshold calibration (recommended θ = {recommended:.2f})", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_frame_diffs(diffs: Sequence[int], fps: float, path: str | Path) -> Path:
    """Histogram of per-turn signed frame_diff (positive = early, negative = late) in seconds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    secs = [d / fps for d in diffs]
    if diffs:  # one bin per frame, centred on it
        lo, hi = min(diffs), max(diffs)
        ax.hist(secs, bins=[(k - 0.5) / fps for k in range(lo, hi + 2)], color="tab:blue", alpha=0.8, rwidth=0.9)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_xlabel("speak time error (s): > 0 early, < 0 late")
    ax.set_ylabel("turns")
    ax.set_title(f"teacher-forced timing over {len(secs)} turns")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_timelines(samples: Sequence[dict[str, Any]], path: str | Path, limit: int = 8) -> Path:
    """Predicted vs reference reply times for the first ``limit`` free-running samples."""
    plt = _pyplot()
    shown = list(samples)[:limit]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.5 * max(1, len(shown))))
    for row, s in enumerate(shown):
        ref = s.get("reference_times_s", [])
        pred = [e["t"] for e in s.get("events", [])]
        ax.scatter(ref, [row + 0.18] * len(ref), marker="|", s=90, color="tab:green",
                   label="reference" if row == 0 else None)
        ax.scatter(pred, [row - 0.18] * len(pred), marker="|", s=90, color="tab:red",
                   label="model" if row == 0 else None)
    ax.set_yticks(range(len(shown)), [str(s["id"])[-24:] for s in shown], fontsize=7)
    ax.set_xlabel("stream time (s)")
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_title("free-running replies vs reference")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_ed_curves(curves: dict[str, list[float]], path: str | Path) -> Path:
    """LTA ED@Z against Z for verbs, nouns and actions."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name)
    ax.set_xlabel("Z")
    ax.set_ylabel("ED@Z ↓")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("LTA edit distance by horizon")
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
