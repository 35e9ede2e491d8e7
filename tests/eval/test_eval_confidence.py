"""Eval outputs that don't overstate: the θ recommendation's basis (n) and confidence note, the bootstrap, the
calibration plot marking the current θ, and plots that stay readable when every error is 0."""

from pathlib import Path

import numpy as np
import pytest

from livecue.eval import plots
from livecue.eval.calibrate import (
    FEW_STREAMS,
    SweepPart,
    assess,
    check_checkpoint,
    pooled_rows,
    recommend,
    sweep_teacher_forced,
)
from livecue.eval.metrics import StreamScore, TurnScores
from livecue.eval.narration import RecordScores

GRID = [0.3, 0.5, 0.7]


def record(rid: str, p_silence: list[float]) -> RecordScores:
    """One reply turn (speak at its last stream position) and one last turn, no look-ahead needed."""
    stream = [StreamScore(p, p >= 0.5) for p in p_silence]
    turns = [TurnScores(0, lm_ce=[0.5, 0.2], lm_correct=[True, False], stream=stream, gold_speak=True,
                        num_frames=len(stream), last_stream_pos=10),
             TurnScores(1, lm_ce=[0.1], lm_correct=[True], stream=[StreamScore(0.9, True)], gold_speak=True,
                        num_frames=1, first_frame=len(stream), last_stream_pos=20)]
    return RecordScores(rid, 2.0, turns, future={0: [StreamScore(0.2, False)]})  # late: speaks 1 frame after


def scores(n: int, seed: int = 0) -> list[RecordScores]:
    rng = np.random.default_rng(seed)
    return [record(f"r{i}", [float(x) for x in rng.uniform(0.2, 0.9, 4)]) for i in range(n)]


def test_pooled_rows_with_unit_weights_are_the_sweep():
    """The bootstrap pools exactly what the sweep reports: resampling every record once gives the same rows."""
    tf = sweep_teacher_forced(scores(6), GRID)
    (rows,) = pooled_rows(GRID, tf.table, np.ones((1, 6)))
    for mine, sweep in zip(rows, tf.rows):
        for key in ("speak_f1", "fluency", "time_diff"):
            assert mine[key] == pytest.approx(sweep[key], abs=1e-12), key
    assert recommend(rows, 0.5) == recommend(tf.rows, 0.5)
    assert tf.streams == 6 and tf.decisions == 6 * 5 and tf.references == 6 * 2
    # a record drawn twice counts twice: the same as a sweep over the list with it repeated
    many = scores(6)
    (twice,) = pooled_rows(GRID, tf.table, np.array([[2, 0, 1, 1, 1, 1]], float))
    again = sweep_teacher_forced([many[0], many[0], *many[2:]], GRID).rows
    assert [r["speak_f1"] for r in twice] == pytest.approx([r["speak_f1"] for r in again])
    assert [r["fluency"] for r in twice] == pytest.approx([r["fluency"] for r in again])


def test_one_stream_gives_no_interval_and_says_so():
    tf = sweep_teacher_forced(scores(1), GRID)
    best = recommend(tf.rows, 0.5)
    conf = assess(GRID, tf, None, best, 0.5)
    assert conf.streams == 1 and conf.interval is None and conf.agreement is None
    out = conf.to_dict()
    assert out["n"] == {"source": "teacher-forced", "streams": 1, "decisions": 5, "references": 2}
    assert "rough guide" in out["note"] and "no interval" in out["note"]
    assert conf.summary().startswith("rests on 1 teacher-forced stream (5 speak/silence decisions")


def test_few_streams_are_a_rough_guide_and_many_identical_ones_are_stable():
    few = sweep_teacher_forced(scores(5), GRID)
    conf = assess(GRID, few, None, recommend(few.rows, 0.5), 0.5, resamples=200)
    lo, hi = conf.interval
    assert lo <= recommend(few.rows, 0.5) <= hi and 0 < conf.agreement <= 1
    assert f"fewer than {FEW_STREAMS} streams" in conf.to_dict()["note"]
    assert "90% bootstrap interval" in conf.summary()
    same = sweep_teacher_forced([record(f"r{i}", [0.8, 0.6, 0.4, 0.45]) for i in range(FEW_STREAMS)], GRID)
    best = recommend(same.rows, 0.5)
    steady = assess(GRID, same, None, best, 0.5, resamples=100)
    assert steady.interval == (best, best) and steady.agreement == 1.0 and "rough guide" not in steady.to_dict()["note"]


def test_free_running_decides_when_swept_and_a_flat_f1_is_named():
    tf = sweep_teacher_forced(scores(4), GRID)
    table = {"replies": np.full((3, 3), 2.0), "references": np.full((3, 3), 2.0), "matched": np.ones((3, 3))}
    free = SweepPart([{"threshold": t, "free_f1": 0.5} for t in GRID], table, decisions=60, references=6)
    rows = [dict(r, free_f1=0.5) for r in tf.rows]
    conf = assess(GRID, tf, free, recommend(rows, 0.5), 0.5, resamples=50)
    assert (conf.source, conf.streams, conf.decisions, conf.references) == ("free-running", 3, 60, 6)
    assert "F1 is 0.500 at every θ of the grid: the tie-breakers" in conf.to_dict()["note"]


def test_save_threshold_refuses_presets_and_the_packaged_model(tmp_path):
    import livecue

    with pytest.raises(ValueError, match="needs a checkpoint directory"):
        check_checkpoint("tiny")
    (tmp_path / "livecue_config.json").write_text("{}")
    assert check_checkpoint(tmp_path) == tmp_path
    packaged = next(Path(livecue.__file__).parent.rglob("livecue_config.json")).parent  # the default model
    with pytest.raises(ValueError, match="installed with livecue"):
        check_checkpoint(packaged)


# ---- plots ---------------------------------------------------------------------------------------------------------
def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_calibration_plot_marks_current_and_recommended_theta_and_survives_zero_errors():
    pytest.importorskip("matplotlib")
    rows = [{"threshold": t, "time_diff": 0.0, "fluency": 1.0, "speak_f1": 1.0, "free_f1": 1.0,
             "free_time_diff": 0.0} for t in GRID]
    fig = plots.calibration_figure(rows, recommended=0.3, current=0.725)
    for ax in fig.axes:
        marks = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines() if "θ =" in line.get_label()}
        assert marks == {"recommended θ = 0.30": 0.3, "current θ = 0.725": 0.725}
        lo, hi = ax.get_ylim()
        assert -0.05 < lo < 0 and hi >= 1  # never a sliver around a flat line; 0 just inside the axes
    assert "TimeDiff = 0 everywhere" in texts(fig) and "F1 = 1 everywhere" in texts(fig)
    assert "current θ = 0.725" in fig._suptitle.get_text()
    plots.pyplot().close(fig)


def test_other_plots_with_zero_or_no_errors(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    fig = plots.frame_diffs_figure([0, 0, 0], fps=2.0)
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 0 < hi and hi - lo >= 2 / 2.0 and "all 3 turns on time (error 0)" in texts(fig)
    plots.pyplot().close(fig)
    fig = plots.frame_diffs_figure([], fps=2.0)
    assert "no turn has a speak decision" in texts(fig)
    plots.pyplot().close(fig)
    fig = plots.ed_curves_figure({"verb": [0.0, 0.0], "noun": [0.0, 0.0]})
    assert "ED@Z = 0 everywhere" in texts(fig) and fig.axes[0].get_ylim() == (0, 1.05)
    plots.pyplot().close(fig)
    path = plots.plot_calibration([{"threshold": 0.5, "time_diff": 0.0, "fluency": 1.0, "speak_f1": 0.0}], 0.5,
                                  tmp_path / "c.png", current=0.5)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
