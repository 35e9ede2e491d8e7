"""Evaluation: the paper's metrics exactly (SPEC §7), free-running streaming evaluation, θ calibration.

* :mod:`~livecue.eval.metrics` — pure per-turn stream metrics: LM-PPL, LM-Correctness, frame_diff (early rule and
  the late look-ahead rule), TimeDiff, Fluency, each honouring θ.
* :mod:`~livecue.eval.textmetrics` — pure text metrics: Levenshtein, COIN accuracy with fuzzy matching, Procedure
  per line, Ego4D LTA ED@Z / AUED, free-running timing matching (precision / recall / F1, TimeDiff).
* :mod:`~livecue.eval.narration` — teacher-forced narration evaluation over a records file (batched).
* :mod:`~livecue.eval.free` — the model running free through :class:`~livecue.inference.engine.StreamEngine`.
* :mod:`~livecue.eval.benchmarks` — COIN and LTA: generation after the prompt and the frames.
* :mod:`~livecue.eval.calibrate` — θ sweeps, the recommended θ and what it rests on (n, a bootstrap interval).
* :mod:`~livecue.eval.plots` — the PNG plots (matplotlib).

``livecue eval`` (:mod:`livecue.commands.eval`) is the command-line front door.
"""
