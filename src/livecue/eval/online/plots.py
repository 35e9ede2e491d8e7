"""Timing plots of the online-video benchmarks (``livecue eval --task ovo|streamingbench|proactive``): when the model
answered, against the ground-truth windows its answers were scored in (matplotlib, the ``[eval]`` extra; Agg backend).

Input: the records of ``OUT/items.jsonl`` (:mod:`.run`): ``{"id", "benchmark", "task", "protocol", "ask_time",
"answers": [[t, text], ...], "score": {...}}`` where ``score`` is an :class:`~.scoring.ItemScore` as a dict (its
``windows`` as dicts of :class:`~.scoring.WindowScore`). Records with ``error`` or without ``score`` are skipped.

:func:`plot_timing` writes one PNG per benchmark sub-task, ``<benchmark>_<task-slug>.png`` (e.g.
``ovo_forward-rec.png``); :func:`timing_figure` builds one (what the tests inspect). Two panels:

* **top**, one row per item (the first ``limit`` items in id order; the title says how many of how many), x = seconds
  from the video start: the item's ground-truth windows, a range ``[start, end]`` as a shaded span and a point window
  (an OVO-Bench test point, a StreamingBench ground-truth time) as a tall tick, green when the window was *credited*
  (its score ≥ 0.5: a hit, a "No" test point rightly left silent, a PAUC turn ≥ 0.5) and red when not; the ask time
  as a black triangle (when the record carries ``ask_time``); every answer the model gave as a dot, coloured by the
  windows it was scored for: green (it counted for windows that all credited it), orange (for several, some credited:
  a count right at one test point and stale at the next), red (none credited: wrong content, too early, too late),
  grey (it counted for no window: outside every window, or a later answer the benchmark's rule ignores).
* **bottom**, over all the selected items (not only the rows shown): a histogram of answer time − window start for
  every window with a counted answer, stacked credited / not credited, timed as the benchmark's rule times it:
  OVO-Bench, the answer standing at a test point (≤ 0 at a point window) or the first answer in a range window;
  StreamingBench, the first answer against the ground-truth time (a hit within ± 2 s, dashed lines); ProactiveVideoQA,
  the first reply inside each turn's reply span.

``mc`` items (a question at ``ask_time`` answered from the frames up to then) are not plotted: the answer is asked for
at the ask time and the stream stops there, so their answer time is the ask time by construction and says nothing; their
accuracy is in ``results.md``. Tasks holding only ``mc`` items get no PNG.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from livecue.eval.plots import NOTE_STYLE, pyplot, save_figure

from .scoring import PASS

COLOURS = {"credited": "tab:green", "partly": "tab:orange", "not credited": "tab:red", "not counted": "grey"}
"""Answer-dot colours by how the windows the answer was scored for treated it (module docstring)."""
WINDOW_COLOURS = {True: "tab:green", False: "tab:red"}
"""Window colours: credited or not."""
STREAMINGBENCH_TOLERANCE = 2.0
"""StreamingBench's timing tolerance (s), :func:`~.scoring.score_forward`'s default there; drawn as dashed lines."""
RULES = {"ovo": "OVO-Bench: the answer standing at a test point, or the first answer in a range window",
         "streamingbench": f"StreamingBench: the first answer, a hit within ± {STREAMINGBENCH_TOLERANCE:g} s",
         "proactive": "ProactiveVideoQA: the first reply inside each turn's reply span"}
_EPS = 1e-9

Record = Mapping[str, Any]

__all__ = ["COLOURS", "RULES", "WINDOW_COLOURS", "plot_timing", "timing_figure", "timing_records"]


def _natural(text: str) -> list[Any]:
    """Sort key putting ``item-2`` before ``item-10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p]


def _values(records: Iterable[Record] | Mapping[str, Record]) -> list[Record]:
    """The records of a list, or of :func:`~.run.read_done`'s ``{id: record}``."""
    if isinstance(records, Mapping):
        return list(records.values())
    return list(records)


def _scored(rec: Record) -> bool:
    return "error" not in rec and isinstance(rec.get("score"), Mapping)


def _plottable(rec: Record) -> bool:
    """A scored item with ground-truth windows (``forward`` / ``proactive``; ``mc`` items have none)."""
    return _scored(rec) and rec.get("protocol") != "mc" and bool(rec["score"].get("windows"))


def timing_records(records: Iterable[Record] | Mapping[str, Record], benchmark: str,
                   task: str | None = None) -> tuple[list[Record], int]:
    """The plottable records of ``benchmark`` (and ``task``, None: all its tasks) in id order, and how many scored
    ``mc`` items of that selection were left out."""
    picked = [r for r in _values(records) if _scored(r) and r.get("benchmark") == benchmark
              and (task is None or r.get("task") == task)]
    shown = sorted((r for r in picked if _plottable(r)), key=lambda r: (_natural(str(r.get("task"))),
                                                                       _natural(str(r["id"]))))
    return shown, sum(1 for r in picked if r.get("protocol") == "mc")


def _credited(window: Mapping[str, Any]) -> bool:
    return float(window["score"]) >= PASS


def _answer_class(t: float, text: str, windows: list[Mapping[str, Any]]) -> str:
    """How the windows an answer was scored for treated it (a key of :data:`COLOURS`)."""
    mine = [w for w in windows if w.get("t") is not None and abs(float(w["t"]) - t) < _EPS and w.get("text") == text]
    if not mine:
        return "not counted"
    credited = sum(_credited(w) for w in mine)
    return "credited" if credited == len(mine) else "partly" if credited else "not credited"


def _draw_rows(ax: Any, rows: list[Record], label_task: bool) -> list[float]:
    """The top panel: windows, ask times and answers, one row per record; returns every x drawn."""
    from matplotlib.patches import Patch, Rectangle

    xs: list[float] = []
    ticks: tuple[list[float], list[float], list[float], list[str]] = ([], [], [], [])  # x, y0, y1, colour
    asks: list[tuple[float, int]] = []
    dots: dict[str, list[tuple[float, int]]] = {k: [] for k in COLOURS}
    kinds: set[tuple[str, bool]] = set()
    for row, rec in enumerate(rows):
        windows = list(rec["score"]["windows"])
        for w in windows:
            start, end, ok = float(w["start"]), float(w["end"]), _credited(w)
            xs += [start, end]
            if end - start > _EPS:
                ax.add_patch(Rectangle((start, row - 0.32), end - start, 0.64, facecolor=WINDOW_COLOURS[ok],
                                       alpha=0.25, edgecolor=WINDOW_COLOURS[ok], lw=0.8, gid="window"))
                kinds.add(("range", ok))
            else:
                for part, value in zip(ticks, (start, row - 0.4, row + 0.4, WINDOW_COLOURS[ok])):
                    part.append(value)
                kinds.add(("point", ok))
        if rec.get("ask_time") is not None:
            asks.append((float(rec["ask_time"]), row))
            xs.append(float(rec["ask_time"]))
        for t, text in rec.get("answers") or ():
            dots[_answer_class(float(t), text, windows)].append((float(t), row))
            xs.append(float(t))
    if ticks[0]:
        ax.vlines(ticks[0], ticks[1], ticks[2], colors=ticks[3], lw=2.5, alpha=0.6, gid="point-window")
    handles: list[Any] = []
    for shape, ok in sorted(kinds, key=lambda k: (k[0] == "point", not k[1])):  # ranges first, credited first
        name = f"{'range' if shape == 'range' else 'point'} window, {'credited' if ok else 'not credited'}"
        handles.append(Patch(facecolor=WINDOW_COLOURS[ok], alpha=0.25 if shape == "range" else 0.6, label=name))
    if asks:
        handles.append(ax.scatter(*zip(*asks), marker=">", s=36, color="black", zorder=4, gid="ask",
                                  label="question asked"))
    for key, pts in dots.items():
        if pts:
            handles.append(ax.scatter(*zip(*pts), marker="o", s=24, color=COLOURS[key], edgecolors="white",
                                      linewidths=0.5, zorder=5, gid=f"answer-{key.replace(' ', '-')}",
                                      label=f"answer: {key} ({len(pts)})"))
    labels = [(f"{r['task']}: " if label_task else "") + str(r["id"]) for r in rows]
    ax.set_yticks(range(len(rows)), [lab if len(lab) <= 32 else "…" + lab[-31:] for lab in labels], fontsize=7)
    ax.set_ylim(max(1, len(rows)) - 0.5, -0.5)  # the first item on top
    ax.set_xlabel("seconds from the video start")
    ax.set_ylabel("item")
    ax.grid(axis="x", alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return xs


def _latencies(records: list[Record]) -> tuple[list[float], list[float], int]:
    """Answer time − window start of every window with a counted answer: (credited, not credited, windows)."""
    good: list[float] = []
    bad: list[float] = []
    total = 0
    for rec in records:
        for w in rec["score"]["windows"]:
            total += 1
            if w.get("t") is not None:
                (good if _credited(w) else bad).append(float(w["t"]) - float(w["start"]))
    return good, bad, total


def _draw_latency(ax: Any, records: list[Record], benchmark: str) -> None:
    """The bottom panel: the latency histogram (module docstring)."""
    good, bad, total = _latencies(records)
    values = good + bad
    if values:
        marks = [0.0, *((-STREAMINGBENCH_TOLERANCE, STREAMINGBENCH_TOLERANCE) if benchmark == "streamingbench" else ())]
        lo, hi = min(values + marks), max(values + marks)  # 0 (and the tolerance) always in view
        if hi - lo < _EPS:
            lo, hi = lo - 0.5, hi + 0.5
        n_bins = min(30, max(5, math.ceil(math.sqrt(len(values)))))
        edges = [lo + (hi - lo) * k / n_bins for k in range(n_bins + 1)]
        ax.hist([good, bad], bins=edges, stacked=True, color=[WINDOW_COLOURS[True], WINDOW_COLOURS[False]],
                label=[f"credited ({len(good)})" if good else "_nolegend_",
                       f"not credited ({len(bad)})" if bad else "_nolegend_"], rwidth=0.9, alpha=0.85)
        ax.yaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(0.5, 0.5, "no window has a counted answer", transform=ax.transAxes, **NOTE_STYLE)
    ax.axvline(0, color="grey", lw=1)
    if benchmark == "streamingbench":
        for x in (-STREAMINGBENCH_TOLERANCE, STREAMINGBENCH_TOLERANCE):
            ax.axvline(x, color="grey", ls="--", lw=1, label=f"± {STREAMINGBENCH_TOLERANCE:g} s" if x > 0 else None)
    ax.set_xlabel("answer time − window start (s)")
    ax.set_ylabel("windows")
    ax.set_title(f"{len(values)} of {total} windows have a counted answer; "
                 f"{RULES.get(benchmark, 'the first counted answer per window')}", fontsize=8)
    if values:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def timing_figure(records: Iterable[Record] | Mapping[str, Record], benchmark: str, task: str | None = None,
                  limit: int = 40) -> Any:
    """Answer times against ground-truth windows for one benchmark's items (one sub-task, or all with ``task=None``):
    one row per item for the first ``limit`` items, and the latency histogram of all of them (module docstring).

    Args:
        records: ``items.jsonl`` records (a list, or :func:`~.run.read_done`'s ``{id: record}``).
        benchmark: ``ovo``, ``streamingbench`` or ``proactive``.
        task: the sub-task (``"forward/REC"``), None for every task of the benchmark.
        limit: at most this many item rows (the histogram covers every item).

    Raises:
        ValueError: ``limit`` < 1.
        ImportError: matplotlib is not installed.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    plt = pyplot()
    selected, mc = timing_records(records, benchmark, task)
    rows = selected[:limit]
    top = 0.9 + 0.26 * max(1, len(rows))
    fig, (ax, hist_ax) = plt.subplots(2, 1, figsize=(11, top + 3.4), gridspec_kw={"height_ratios": [top, 2.2]})
    xs = _draw_rows(ax, rows, label_task=task is None)
    if xs:
        lo, hi = min(0.0, min(xs)), max(xs)
        pad = 0.03 * (hi - lo) or 1.0
        ax.set_xlim(lo - pad, hi + pad)
    else:
        ax.text(0.5, 0.5, "no scored item with ground-truth windows", transform=ax.transAxes, **NOTE_STYLE)
    ax.set_title(f"{len(rows)} of {len(selected)} items shown" + (f"; {mc} mc items not plotted" if mc else ""),
                 fontsize=8)
    _draw_latency(hist_ax, selected, benchmark)
    fig.suptitle(f"{benchmark} · {task or 'all tasks'}: answer time vs ground-truth window", fontsize=10)
    fig.tight_layout()
    return fig


def _slug(task: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-") or "task"


def plot_timing(records: Iterable[Record] | Mapping[str, Record], out_dir: str | Path, limit: int = 40) -> list[Path]:
    """Save :func:`timing_figure` as ``out_dir/<benchmark>_<task-slug>.png`` for every (benchmark, sub-task) with a
    scored ``forward`` / ``proactive`` item (mc-only tasks get none); the paths in (benchmark, task) order.

    Raises:
        ValueError: ``limit`` < 1.
        ImportError: matplotlib is not installed (``pip install 'livecue[eval]'``).
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    recs = _values(records)
    tasks = sorted({(str(r["benchmark"]), str(r["task"])) for r in recs if _plottable(r)},
                   key=lambda bt: (bt[0], _natural(bt[1])))
    paths: list[Path] = []
    used: set[str] = set()
    for bench, task in tasks:
        name = base = f"{bench}_{_slug(task)}"
        k = 2
        while name in used:  # two task names with one slug ("a/b c", "a/b-c"): keep both
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        paths.append(save_figure(timing_figure(recs, bench, task, limit), Path(out_dir) / f"{name}.png"))
    return paths
