"""Timing plots of the online benchmarks (:mod:`livecue.eval.online.plots`): records scored by the real scorers, the
figure's artists inspected (windows, ticks, answer colours, ask marks, the latency histogram, the row limit), and the
PNG files :func:`plot_timing` writes."""

from __future__ import annotations

import dataclasses

import pytest

from livecue.eval.online.items import OnlineItem, Response, Window
from livecue.eval.online.scoring import score_item

pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgba  # noqa: E402

from livecue.eval.online import plots  # noqa: E402

GREEN, RED, ORANGE, GREY = (to_rgba(c) for c in ("tab:green", "tab:red", "tab:orange", "grey"))


def record(item: OnlineItem, answers: list[tuple[float, str]], ask: bool = True) -> dict:
    """An ``items.jsonl`` record as :mod:`.run` writes it (plus ``ask_time``)."""
    score = score_item(item, Response(item.id, tuple(answers)))
    rec = {"id": item.id, "benchmark": item.benchmark, "task": item.task, "protocol": item.protocol,
           "answers": [list(a) for a in answers], "score": dataclasses.asdict(score)}
    return {**rec, "ask_time": item.ask_time} if ask else rec


def crr(ident: str = "crr-1") -> OnlineItem:
    """Two range windows expecting "Yes"."""
    return OnlineItem("ovo", "forward/CRR", ident, "v.mp4", "Is it answerable?", 1.0, "forward",
                      windows=(Window(4.0, 6.0, "Yes"), Window(10.0, 12.0, "Yes")))


# in time and right (5), ignored inside the same window (5.5), in time but wrong (11), after every window (15)
CRR_ANSWERS = [(5.0, "Yes"), (5.5, "Yes"), (11.0, "No"), (15.0, "Yes")]
REC = OnlineItem("ovo", "forward/REC", "rec-1", "v.mp4", "How many times?", 0.0, "forward",
                 windows=(Window(6.0, 6.0, "1"), Window(9.0, 9.0, "2")))  # "1" stands at both test points
MC = OnlineItem("ovo", "backward/EPM", "epm-1", "v.mp4", "What color?", 3.0, "mc", options=("red", "blue"), answer="A")
SB = OnlineItem("streamingbench", "proactive/Proactive Output", "sb-1", "v.mp4", "Tell me when", 2.0, "proactive",
                windows=(Window(10.0, 10.0, "now"),))
PRO = OnlineItem("proactive", "proactive/WEB", "web-1", "v.mp4", "Narrate", 0.0, "proactive",
                 windows=(Window(2.0, 8.0, "the man opens the door"), Window(12.0, 20.0, "he sits down")))


@pytest.fixture()
def records() -> list[dict]:
    return [record(crr(), CRR_ANSWERS), record(REC, [(3.0, "1")], ask=False), record(MC, [(3.0, "A")]),
            record(SB, [(11.5, "now")]), record(PRO, [(3.0, "the man opens the door"), (14.0, "a dog barks")]),
            {"id": "bad-1", "benchmark": "ovo", "task": "forward/CRR", "protocol": "forward",
             "error": "video not found: bad.mp4"}]


def by_gid(ax, gid: str) -> list:
    return [a for a in ax.get_children() if a.get_gid() == gid]


def offsets(ax, gid: str) -> list[tuple[float, float]]:
    found = by_gid(ax, gid)
    assert len(found) <= 1
    return [tuple(map(float, xy)) for xy in found[0].get_offsets()] if found else []


def bar_heights(ax) -> list[float]:
    return [p.get_height() for c in ax.containers for p in c]


def close(fig) -> None:
    plots.pyplot().close(fig)


def test_forward_item_windows_answers_ask_and_latency(records):
    fig = plots.timing_figure(records, "ovo", "forward/CRR")
    top, hist = fig.axes
    spans = by_gid(top, "window")
    assert [(s.get_x(), s.get_width()) for s in spans] == [(4.0, 2.0), (10.0, 2.0)]
    assert [s.get_facecolor()[:3] for s in spans] == [GREEN[:3], RED[:3]]  # hit, wrong
    assert offsets(top, "answer-credited") == [(5.0, 0.0)]
    assert offsets(top, "answer-not-credited") == [(11.0, 0.0)]
    assert offsets(top, "answer-not-counted") == [(5.5, 0.0), (15.0, 0.0)]
    assert offsets(top, "answer-partly") == [] and by_gid(top, "point-window") == []
    assert [tuple(by_gid(top, f"answer-{k}")[0].get_facecolor()[0]) for k in ("credited", "not-credited",
                                                                               "not-counted")] == [GREEN, RED, GREY]
    assert offsets(top, "ask") == [(1.0, 0.0)]
    assert [t.get_text() for t in top.get_yticklabels()] == ["crr-1"]  # the error record of that task is skipped
    assert top.get_xlabel() == "seconds from the video start" and top.get_xlim()[0] <= 0
    assert top.get_title() == "1 of 1 items shown"
    assert "ovo · forward/CRR" in fig._suptitle.get_text()
    # latency: 5 − 4 (credited) and 11 − 10 (not): both in one bin, stacked
    assert sum(bar_heights(hist)) == 2
    assert [sum(p.get_height() for p in c) for c in hist.containers] == [1, 1]
    assert hist.get_xlabel() == "answer time − window start (s)" and hist.get_ylabel() == "windows"
    assert hist.get_title().startswith("2 of 2 windows have a counted answer; OVO-Bench")
    close(fig)


def test_all_tasks_point_windows_partly_credited_and_mc_skipped(records):
    fig = plots.timing_figure({r["id"]: r for r in records}, "ovo")  # read_done's {id: record} form
    top, hist = fig.axes
    assert [t.get_text() for t in top.get_yticklabels()] == ["forward/CRR: crr-1", "forward/REC: rec-1"]
    assert top.get_title() == "2 of 2 items shown; 1 mc items not plotted"
    (ticks,) = by_gid(top, "point-window")
    assert [tuple(seg[:, 0]) for seg in ticks.get_segments()] == [(6.0, 6.0), (9.0, 9.0)]
    assert [tuple(c) for c in ticks.get_colors()] == [GREEN[:3] + (0.6,), RED[:3] + (0.6,)]
    assert offsets(top, "answer-partly") == [(3.0, 1.0)]  # the standing "1": right at 6 s, stale at 9 s
    assert tuple(by_gid(top, "answer-partly")[0].get_facecolor()[0]) == ORANGE
    assert offsets(top, "ask") == [(1.0, 0.0)]  # the REC record carries no ask_time: no mark
    assert sum(bar_heights(hist)) == 4  # 2 CRR windows + 2 REC test points (3 − 6, 3 − 9)
    assert len(by_gid(top, "window")) == 2
    close(fig)


def test_streamingbench_tolerance_and_proactive_pauc_windows(records):
    fig = plots.timing_figure(records, "streamingbench")
    top, hist = fig.axes
    assert offsets(top, "answer-credited") == [(11.5, 0.0)]  # 1.5 s after the ground truth: within ± 2 s
    dashed = sorted(line.get_xdata()[0] for line in hist.get_lines() if line.get_linestyle() == "--")
    assert dashed == [-2.0, 2.0]
    assert [p.get_x() <= 1.5 <= p.get_x() + p.get_width() for c in hist.containers for p in c if p.get_height()] \
        == [True]
    close(fig)
    fig = plots.timing_figure(records, "proactive", "proactive/WEB")
    top, hist = fig.axes
    spans = by_gid(top, "window")
    assert [s.get_facecolor()[:3] for s in spans] == [GREEN[:3], RED[:3]]  # PAUC 0.94 and 0.03
    assert offsets(top, "answer-credited") == [(3.0, 0.0)] and offsets(top, "answer-not-credited") == [(14.0, 0.0)]
    assert not [line for line in hist.get_lines() if line.get_linestyle() == "--"]  # no ± 2 s outside StreamingBench
    close(fig)


def test_limit_bounds_rows_but_histogram_covers_every_item():
    recs = [record(crr(f"crr-{i}"), CRR_ANSWERS) for i in range(45)]
    fig = plots.timing_figure(recs, "ovo", "forward/CRR", limit=40)
    top, hist = fig.axes
    labels = [t.get_text() for t in top.get_yticklabels()]
    assert len(labels) == 40 and labels[:3] == ["crr-0", "crr-1", "crr-2"] and labels[-1] == "crr-39"  # id order
    assert top.get_title() == "40 of 45 items shown"
    assert len(by_gid(top, "window")) == 80 and len(offsets(top, "answer-not-counted")) == 80
    assert sum(bar_heights(hist)) == 90
    close(fig)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        plots.timing_figure(recs, "ovo", limit=0)


def test_nothing_to_plot_says_so(records):
    fig = plots.timing_figure(records, "ovo", "backward/EPM")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no scored item with ground-truth windows" in texts and "no window has a counted answer" in texts
    assert fig.axes[0].get_title() == "0 of 0 items shown; 1 mc items not plotted"
    close(fig)


def test_plot_timing_writes_one_png_per_task_with_windows(records, tmp_path):
    paths = plots.plot_timing(records, tmp_path / "timing")
    assert [p.name for p in paths] == ["ovo_forward-crr.png", "ovo_forward-rec.png", "proactive_proactive-web.png",
                                       "streamingbench_proactive-proactive-output.png"]  # no mc-only backward/EPM
    assert sorted(p.name for p in (tmp_path / "timing").iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = plots.plot_timing(records, tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # deterministic
    assert plots.plot_timing([records[2], records[5]], tmp_path / "none") == []  # mc and error only: no file
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="limit must be >= 1"):
        plots.plot_timing(records, tmp_path, limit=0)


def test_task_names_sharing_a_slug_keep_separate_files(tmp_path):
    a = dataclasses.replace(crr("a"), task="forward/CRR x")
    b = dataclasses.replace(crr("b"), task="forward/CRR-x")
    paths = plots.plot_timing([record(a, CRR_ANSWERS), record(b, CRR_ANSWERS)], tmp_path)
    assert [p.name for p in paths] == ["ovo_forward-crr-x.png", "ovo_forward-crr-x-2.png"]
