"""PNG plots of evaluation results (matplotlib, the ``[eval]`` extra; headless Agg backend).

Each plot has a ``*_figure`` function that builds the matplotlib figure (what the tests inspect) and a ``plot_*``
function that saves it. Plots stay readable when every value is the same (all timing errors 0, every F1 equal): the
axes keep a sensible range instead of collapsing around one value, and a note on the plot says what happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

NOTE_STYLE = dict(ha="center", va="center", fontsize=8, color="dimgrey",
                  bbox=dict(facecolor="white", edgecolor="none", alpha=0.85))


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend; one line naming the extra when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'livecue[eval]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _flat_note(ax: Any, values: Sequence[float], what: str) -> None:
    """A note in the middle of the panel when every value is the same (the line alone would look like an axis)."""
    if values and max(values) - min(values) < 1e-12:
        ax.text(0.5, 0.5, f"{what} = {values[0]:.3g} everywhere", transform=ax.transAxes, **NOTE_STYLE)


def calibration_figure(rows: Sequence[dict[str, Any]], recommended: float, current: float | None = None) -> Any:
    """TimeDiff, Fluency and F1 against θ, one panel each; the recommended θ (dashed) and the model's current θ
    (dotted) marked."""
    plt = pyplot()
    th = [r["threshold"] for r in rows]
    panels = [("time_diff", "TimeDiff (s) ↓"), ("fluency", "Fluency ↑"), ("f1", "speak F1 ↑")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, title) in zip(axes, panels):
        series = [(key, "teacher-forced")]
        if key == "f1":
            series = [("speak_f1", "teacher-forced (per frame)"), ("free_f1", "free-running (±tolerance)")]
        elif key == "time_diff" and any(r.get("free_time_diff") is not None for r in rows):
            series.append(("free_time_diff", "free-running"))
        values: list[float] = []
        for k, label in series:
            pts = [(t, r[k]) for t, r in zip(th, rows) if r.get(k) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
                values += [v for _, v in pts]
        # TimeDiff from 0 s, never a range around a flat 0; Fluency and F1 in [0, 1]; a margin keeps 0 visible
        top = (max(values, default=0.0) * 1.15 or 1.0) if key == "time_diff" else 1.05
        ax.set_ylim(-0.03 * top, top)
        _flat_note(ax, values, title.split(" ")[0] if key != "f1" else "F1")
        ax.axvline(recommended, color="grey", ls="--", lw=1, label=f"recommended θ = {recommended:.2f}")
        if current is not None:
            ax.axvline(current, color="tab:purple", ls=":", lw=1.5, label=f"current θ = {current:.3g}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("θ (silent iff p(silence) ≥ θ)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    now = "" if current is None else f", current θ = {current:.3g}"
    fig.suptitle(f"threshold calibration (recommended θ = {recommended:.2f}{now})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_calibration(rows: Sequence[dict[str, Any]], recommended: float, path: str | Path,
                     current: float | None = None) -> Path:
    """Save :func:`calibration_figure` as a PNG."""
    return save_figure(calibration_figure(rows, recommended, current), path)


def frame_diffs_figure(diffs: Sequence[int], fps: float) -> Any:
    """Histogram of per-turn signed frame_diff (positive = early, negative = late) in seconds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    secs = [d / fps for d in diffs]
    if diffs:  # one bin per frame, centred on it; at least ±2 frames shown
        lo, hi = min(diffs), max(diffs)
        counts, _, _ = ax.hist(secs, bins=[(k - 0.5) / fps for k in range(lo, hi + 2)], color="tab:blue", alpha=0.8,
                               rwidth=0.9)
        ax.set_xlim((min(lo, -2) - 0.5) / fps, (max(hi, 2) + 0.5) / fps)
        ax.set_ylim(0, max(counts) * 1.25)  # room for a note above the bars
        if lo == hi == 0:
            ax.text(0.5, 0.92, f"all {len(diffs)} turns on time (error 0)", transform=ax.transAxes, **NOTE_STYLE)
    else:
        ax.text(0.5, 0.5, "no turn has a speak decision", transform=ax.transAxes, **NOTE_STYLE)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_xlabel("speak time error (s): > 0 early, < 0 late")
    ax.set_ylabel("turns")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"teacher-forced timing over {len(secs)} turns")
    fig.tight_layout()
    return fig


def plot_frame_diffs(diffs: Sequence[int], fps: float, path: str | Path) -> Path:
    """Save :func:`frame_diffs_figure` as a PNG."""
    return save_figure(frame_diffs_figure(diffs, fps), path)


def timelines_figure(samples: Sequence[dict[str, Any]], limit: int = 8) -> Any:
    """Predicted vs reference reply times for the first ``limit`` free-running samples."""
    plt = pyplot()
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
    return fig


def plot_timelines(samples: Sequence[dict[str, Any]], path: str | Path, limit: int = 8) -> Path:
    """Save :func:`timelines_figure` as a PNG."""
    return save_figure(timelines_figure(samples, limit), path)


def ed_curves_figure(curves: dict[str, list[float]]) -> Any:
    """LTA ED@Z against Z for verbs, nouns and actions."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name)
    ax.set_xlabel("Z")
    ax.set_ylabel("ED@Z ↓")
    ax.set_ylim(0, 1.05)
    _flat_note(ax, [y for ys in curves.values() for y in ys], "ED@Z")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("LTA edit distance by horizon")
    fig.tight_layout()
    return fig


def plot_ed_curves(curves: dict[str, list[float]], path: str | Path) -> Path:
    """Save :func:`ed_curves_figure` as a PNG."""
    return save_figure(ed_curves_figure(curves), path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
