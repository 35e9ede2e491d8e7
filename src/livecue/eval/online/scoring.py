"""Scoring the online-video benchmarks' items (:mod:`.items`) by each benchmark's own rule, and their summaries.

Every scorer takes an :class:`~.items.OnlineItem` and the model's :class:`~.items.Response` and returns an
:class:`ItemScore` (score in [0, 1], correct flag, timing, the extracted answer, a reason). Answers are read by
:mod:`.answers` (its docstring lists where that differs from the upstream scripts). Pure Python.

**mc** (a question at ``ask_time``): the first answer counts. With options: correct iff :func:`extract_letter` gives
the item's letter (none / ambiguous → wrong). Open question: ``judge(question, reference, answer) -> float`` in
[0, 1] (required; correct iff ≥ 0.5).

**forward, OVO-Bench** (REC/SSR/CRR). Upstream asks at every test point (with the video up to it) and scores each
test point; a task's accuracy is the mean over all its test points. Online the model answers when it chooses, and
each window is scored (status, score):

* a **point** window ``(t, t, expected)`` (a test point, as the loader gives OVO-Bench): the answer *standing* at
  ``t`` is scored: the latest answer at or before ``t + tolerance`` (after ``ask_time``) — what the model last said
  is its answer at that moment (a count stands until updated, a "Yes" until retracted). ``hit`` (1) if right,
  ``wrong`` (0) if not (an answer given too early is wrong at the test points before the evidence); none yet →
  ``missed`` (0), except that with ``silence_is_no`` (default) a test point expecting "No" (SSR: step not yet done;
  CRR: not yet answerable) is ``silent`` (1): staying quiet is the right behaviour;
* a **range** window ``(start, end)`` (``end > start``): **the first answer after the previous window closed** (for
  the first window: any answer) counts: inside ``[start − tolerance, end + tolerance]`` → ``hit``/``wrong`` by its
  content, later answers inside the same window ignored; before it → ``early`` (0), even if a later one is right;
  none by its end → ``missed`` (0) or ``silent`` (1) as above. An answer exactly on a shared boundary belongs to the
  earlier window.

``tolerance`` defaults to 0 (OVO-Bench defines none). Answers after the last window are counted as ``late``
(unscored). Content per sub-task: REC digits (:func:`extract_count`), SSR/CRR yes/no (:func:`extract_yes_no`), a
letter when the item has options, else the judge (≥ 0.5) or normalised equality. Item score = mean over its windows;
the summary pools windows as upstream pools test points.

**StreamingBench Proactive Output** (protocol ``proactive`` or ``forward``; upstream ``src/data/count.py``: the model
is polled each second from the question to the ground-truth time + 4 s and stops at its first "yes"): the **first**
answer counts; correct iff it lies in ``[start − tolerance, end + tolerance]`` with ``tolerance`` 2 s (the loader gives
``Window(t_gt, t_gt, ground_truth_output)``, so ``|t − t_gt| ≤ 2``); earlier → ``early``, later → ``wrong``, none →
``missed``. Upstream checks the timing only; when a judge is passed the content must also score ≥ 0.5.

**proactive**: PAUC as ProactiveVideoQA computes it (Wang et al., arXiv 2507.09313;
github.com/yellow-binary-tree/ProactiveVideoQA ``pauc/judge_llm_scores_openai.py``: ``create_openai_batch_input``,
``process_openai_batch_output``, ``stat_metric``, ``area_under_line_ratio``; read through two ports that copy them,
VLMEvalKit's ``ProactiveVideoQA`` dataset and a stand-alone copy, the repository itself not being retrievable here).
Per ground-truth turn (one per ``answer`` entry) with reply span ``[s, e]`` (``reply_timespan``, ends included):

1. the replies with ``s ≤ t ≤ e`` in time order, a text equal to an earlier one of the span skipped, are each judged
   on all the span's unique replies so far joined by spaces (``cumulative``, upstream's judge input): y in [0, 1]
   (the judge's ``proactive`` rubric, (N − 1) / 2 for N in {1, 2, 3}; upstream's y is N − 1 over a maximum of 2, the
   same ratio). A reply the judge gives no score (an unparsable verdict) makes no point; of two replies at the same
   time, the later one's score stands;
2. ``related_timespan`` (:attr:`~.items.Window.related`): when the turn has more than one point, a point after the
   related span's end scoring lower than the last point inside it (0 when none) is dropped (a worse late reply is
   probably about the next turn);
3. the points ``(x = (t − s)·(1 − ω), y)`` make a step curve: ``start`` (upstream ``start_score / max_score = 0.5 /
   2 = 0.25``) from 0 to the first point, then each point's y until the next, the last y until ``e − s``; PAUC =
   area / (e − s). No point: ``start``. ω = 0: timeliness counts fully; ω = 1: every x is 0, only the last y counts.
   A zero-length span (upstream divides by zero) scores its last point's y.

Replies outside every span are ignored (and no question time filters them, as upstream); a reply inside two spans
counts for both. Item score = mean over its turns; summaries pool turns (upstream ``stat_metric``: the mean over all
turns of all videos). ω in {0, 0.5, 1} (upstream's three) are kept in ``metrics`` (``pauc@ω``); ``score`` is the one
at ``omega`` (0.5). Without a judge the content score is :func:`token_f1`, a stand-in that is not the benchmark's
number (upstream always judges with an LLM: pass one for comparable scores).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from livecue.eval.online.answers import extract_count, extract_letter, extract_yes_no, token_f1
from livecue.eval.online.items import OnlineItem, Response, Window
from livecue.eval.textmetrics import normalize_text

JudgeLike = Callable[[str, str, str], float] | Any
"""A callable ``judge(question, reference, answer) -> float`` in [0, 1], or an object with that as its ``.judge``
method (:class:`livecue.eval.online.judge.Judge`)."""

OMEGAS = (0.0, 0.5, 1.0)
PASS = 0.5  # a judge / content score at least this counts as correct


@dataclass(frozen=True)
class WindowScore:
    """One ground-truth window of a forward / proactive item: the answer that counted (``t``, ``text``, None when
    none did), its status (``hit``, ``wrong``, ``early``, ``missed``, ``silent``, or ``pauc``) and score."""

    start: float
    end: float
    expected: str | None
    status: str
    score: float
    t: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class ItemScore:
    """The score of one item.

    Attributes:
        item_id / benchmark / task / protocol: the item's.
        score: in [0, 1] (mc: 0/1; forward: mean over windows; proactive: mean PAUC over turns).
        correct: mc: the answer is right; forward: every window scored 1; proactive: score ≥ 0.5.
        extracted: what was read from the counted answer (a letter, count, Yes/No, or text), None when nothing.
        answer_time: when the counted (first) answer came, seconds from the video start; None when no answer.
        latency: ``answer_time`` − the reference moment (mc: ``ask_time``; forward: the first window's start).
        reason: one line saying why.
        windows: per-window detail (forward / proactive).
        units: how many scored units the item holds (1, or its windows): summaries pool units as upstream does.
        unit_total: the sum of the unit scores (``score * units``).
        metrics: extra numbers (``pauc@0``, ``pauc@0.5``, ``pauc@1``; ``late`` answers).
    """

    item_id: str
    benchmark: str
    task: str
    protocol: str
    score: float
    correct: bool
    extracted: str | None
    answer_time: float | None
    latency: float | None
    reason: str
    windows: tuple[WindowScore, ...] = ()
    units: int = 1
    unit_total: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def _answers(item: OnlineItem, response: Response) -> list[tuple[float, str]]:
    if response.item_id != item.id:
        raise ValueError(f"response for {response.item_id!r} given to score item {item.id!r}")
    return sorted(((float(t), text) for t, text in response.answers if text and text.strip()),
                  key=lambda a: a[0])


def score_mc(item: OnlineItem, response: Response, judge: JudgeLike | None = None) -> ItemScore:
    """Score an ``mc`` item: the first answer; its letter (options) or the judge's score (open question)."""
    answers = _answers(item, response)
    base = dict(item_id=item.id, benchmark=item.benchmark, task=item.task, protocol=item.protocol)
    if not answers:
        return ItemScore(**base, score=0.0, correct=False, extracted=None, answer_time=None, latency=None,
                         reason="no answer", unit_total=0.0)
    t, text = answers[0]
    timing = dict(answer_time=t, latency=t - item.ask_time)
    if item.options:
        letter = extract_letter(text, item.letters, item.options)
        ok = letter is not None and letter == (item.answer or "").strip().upper()
        why = ("no option letter found" if letter is None else
               f"chose {letter}, answer {item.answer}" + ("" if ok else " (wrong)"))
        return ItemScore(**base, score=float(ok), correct=ok, extracted=letter, reason=why, unit_total=float(ok),
                         **timing)
    if judge is None:
        raise ValueError(f"item {item.id!r} is an open question: scoring it needs a judge (--judge)")
    s = _ask(judge, item.question, item.answer or "", text)
    return ItemScore(**base, score=s, correct=s >= PASS, extracted=text, reason=f"judge score {s:.2f}",
                     unit_total=s, **timing)


def _ask(judge: JudgeLike, question: str, reference: str, answer: str) -> float:
    """The judge's score in [0, 1] (a callable, or an object with a ``.judge`` method)."""
    fn = getattr(judge, "judge", judge)
    return _clip(fn(question, reference, answer))


def _clip(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"a judge / content score must be a finite number in [0, 1], got {x!r}")
    return min(1.0, max(0.0, float(x)))


def _content(item: OnlineItem, window: Window, text: str, judge: JudgeLike | None) -> tuple[bool, str | None]:
    """Whether ``text`` says the window's expected answer, by the item's sub-task rule; and what was read."""
    expected = window.expected
    if expected is None:
        return True, None
    name = item.task.rsplit("/", 1)[-1].upper()
    if name == "REC":
        got = extract_count(text)
        return got == expected.strip(), got
    want_yn = extract_yes_no(expected) if len(expected.split()) == 1 else None
    if name in ("SSR", "CRR") or want_yn is not None:
        got = extract_yes_no(text)
        return got is not None and got == want_yn, got
    if item.options:
        got = extract_letter(text, item.letters, item.options)
        return got is not None and got == expected.strip().upper(), got
    if judge is not None:
        return _ask(judge, item.question, expected, text) >= PASS, text
    return normalize_text(text) == normalize_text(expected), normalize_text(text)


def score_forward(item: OnlineItem, response: Response, judge: JudgeLike | None = None,
                  tolerance: float | None = None, silence_is_no: bool = True) -> ItemScore:
    """Score a ``forward`` item (or StreamingBench's Proactive Output) by its benchmark's rule (module docstring):
    StreamingBench's first-answer timing rule (``tolerance`` default 2 s), else the per-window rule of OVO-Bench
    (point windows: the standing answer; range windows: the first answer; ``tolerance`` default 0)."""
    if not item.windows:
        raise ValueError(f"forward item {item.id!r} has no ground-truth windows to score against")
    answers = [a for a in _answers(item, response) if a[0] >= item.ask_time]
    if item.benchmark == "streamingbench":
        return _score_first_answer(item, answers, judge, 2.0 if tolerance is None else tolerance)
    return _score_windows(item, answers, judge, 0.0 if tolerance is None else tolerance, silence_is_no)


def _score_windows(item: OnlineItem, answers: list[tuple[float, str]], judge: JudgeLike | None, tol: float,
                   silence_is_no: bool) -> ItemScore:
    eps = 1e-9
    windows = sorted(item.windows, key=lambda w: (w.start, w.end))
    out: list[WindowScore] = []
    closed = -math.inf
    first_counted: tuple[float, str | None] | None = None
    for w in windows:
        lo, hi = w.start - tol, w.end + tol
        if w.end > w.start:  # a range: the first answer since the previous window closed
            mine = [a for a in answers if closed < a[0] <= hi + eps]
        else:  # a point: the answer standing then (the latest so far)
            mine = [a for a in answers if a[0] <= hi + eps][-1:]
            lo = -math.inf
        closed = max(closed, hi + eps)
        if not mine:
            silent_ok = silence_is_no and w.expected is not None and extract_yes_no(w.expected) == "No" \
                and len(w.expected.split()) == 1
            out.append(WindowScore(w.start, w.end, w.expected, "silent" if silent_ok else "missed",
                                   float(silent_ok)))
            continue
        t, text = mine[0]
        if t < lo - eps:
            out.append(WindowScore(w.start, w.end, w.expected, "early", 0.0, t, text))
            ok, got = False, None
        else:
            ok, got = _content(item, w, text, judge)
            out.append(WindowScore(w.start, w.end, w.expected, "hit" if ok else "wrong", float(ok), t, text))
        if first_counted is None:
            first_counted = (t, got)
    late = sum(1 for t, _ in answers if t > closed)
    total = sum(ws.score for ws in out)
    counts = {s: sum(ws.status == s for ws in out) for s in ("hit", "silent", "wrong", "early", "missed")}
    reason = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + (f", {late} late" if late else "")
    t0 = first_counted[0] if first_counted else None
    return ItemScore(item_id=item.id, benchmark=item.benchmark, task=item.task, protocol=item.protocol,
                     score=total / len(out), correct=total == len(out),
                     extracted=first_counted[1] if first_counted else None, answer_time=t0,
                     latency=None if t0 is None else t0 - windows[0].start, reason=reason, windows=tuple(out),
                     units=len(out), unit_total=total, metrics={"late": float(late)})


def _score_first_answer(item: OnlineItem, answers: list[tuple[float, str]], judge: JudgeLike | None,
                        tol: float) -> ItemScore:
    w = min(item.windows, key=lambda x: x.start)
    base = dict(item_id=item.id, benchmark=item.benchmark, task=item.task, protocol=item.protocol)
    if not answers:
        return ItemScore(**base, score=0.0, correct=False, extracted=None, answer_time=None, latency=None,
                         reason="no answer", windows=(WindowScore(w.start, w.end, w.expected, "missed", 0.0),))
    t, text = answers[0]
    eps = 1e-9
    if t < w.start - tol - eps:
        status, why = "early", f"answered at {t:g}s, more than {tol:g}s before {w.start:g}s"
    elif t > w.end + tol + eps:
        status, why = "wrong", f"answered at {t:g}s, more than {tol:g}s after {w.end:g}s"
    elif judge is not None and w.expected is not None and _ask(judge, item.question, w.expected, text) < PASS:
        status, why = "wrong", f"answered in time ({t:g}s) but the content was judged wrong"
    else:
        status, why = "hit", f"answered at {t:g}s, within {tol:g}s of the ground truth"
    ok = status == "hit"
    return ItemScore(**base, score=float(ok), correct=ok, extracted=text, answer_time=t, latency=t - w.start,
                     reason=why, windows=(WindowScore(w.start, w.end, w.expected, status, float(ok), t, text),),
                     unit_total=float(ok))


def pauc_area(points: Iterable[tuple[float, float]], span: float, omega: float = 0.5, start: float = 0.25) -> float:
    """The area under the step curve of one turn over its span, as a fraction of ``span`` (module docstring; upstream
    ``area_under_line_ratio`` with y and ``start`` already divided by the maximum score).

    Args:
        points: ``(t − s, y)`` per scored reply, y in [0, 1] (sorted by ``t − s`` here, ties keeping their order).
        span: ``e − s`` seconds (> 0; 0: the last point's y, or ``start`` without one).
        omega: ω in [0, 1]: x is scaled by ``1 − ω``.
        start: the curve's level before the first point (and the score of a turn with no point).
    """
    pts = [(x * (1.0 - omega), y) for x, y in sorted(points, key=lambda p: p[0])]
    if not pts:
        return start
    if span <= 0:
        return pts[-1][1]
    area, prev_x, prev_y = 0.0, 0.0, start
    for x, y in [*pts, (span, pts[-1][1])]:
        area += (x - prev_x) * prev_y
        prev_x, prev_y = x, y
    return area / span


def _grade(scorer: JudgeLike, question: str, reference: str, answer: str) -> float | None:
    """A PAUC content score in [0, 1], or None (no score): a judge with rubrics is asked by its ``proactive`` one
    (:mod:`.judge`), any other judge or callable its own way."""
    grade = getattr(scorer, "grade", None)
    if callable(grade):
        s = grade(question, reference, answer, "proactive")
    else:
        s = getattr(scorer, "judge", scorer)(question, reference, answer)
    return None if s is None else _clip(s)


def _turn_points(item: OnlineItem, window: Window, answers: list[tuple[float, str]], scorer: JudgeLike,
                 cumulative: bool) -> tuple[dict[float, float], int, int]:
    """One turn's scored replies ``{t: y}`` (steps 1 and 2 of the module docstring), how many replies the judge gave
    no score and how many the ``related_timespan`` rule dropped. ``answers`` in time order."""
    seen: list[str] = []
    scores: dict[float, float] = {}
    unscored = 0
    for t, text in answers:
        if not window.start <= t <= window.end or text in seen:
            continue
        seen.append(text)
        y = _grade(scorer, item.question, window.expected or "", " ".join(seen) if cumulative else text)
        if y is None:
            unscored += 1
        else:
            scores[t] = y
    dropped = 0
    if len(scores) > 1 and window.related is not None:
        last = 0.0
        for t in sorted(scores):
            if t <= window.related[1]:
                last = scores[t]
            elif scores[t] < last:
                del scores[t]
                dropped += 1
    return scores, unscored, dropped


def score_proactive(item: OnlineItem, response: Response, judge: JudgeLike | None = None,
                    content: JudgeLike | None = None, omega: float = 0.5, start: float = 0.25,
                    cumulative: bool = True) -> ItemScore:
    """Score a ``proactive`` item by PAUC (module docstring). Content: ``judge`` if given (by its ``proactive``
    rubric when it has one), else ``content`` (default :func:`token_f1`), each ``(question, reference, answer)`` →
    a score in [0, 1] or None (no score)."""
    if not item.windows:
        raise ValueError(f"proactive item {item.id!r} has no ground-truth turns to score against")
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"omega must be in [0, 1], got {omega!r}")
    scorer = judge or content or token_f1
    answers = _answers(item, response)
    per_omega: dict[float, list[float]] = {o: [] for o in {*OMEGAS, omega}}
    out: list[WindowScore] = []
    dropped = unscored = 0
    for w in item.windows:
        scores, n_unscored, n_dropped = _turn_points(item, w, answers, scorer, cumulative)
        dropped, unscored = dropped + n_dropped, unscored + n_unscored
        in_span = [(t, x) for t, x in answers if w.start <= t <= w.end]
        points = [(t - w.start, y) for t, y in scores.items()]
        for o in per_omega:
            per_omega[o].append(pauc_area(points, w.end - w.start, o, start))
        first = in_span[0] if in_span else (None, None)
        out.append(WindowScore(w.start, w.end, w.expected, "pauc", per_omega[omega][-1], *first))
    scores_at = per_omega[omega]
    total = sum(scores_at)
    answered = [a for a in answers if any(w.start <= a[0] <= w.end for w in item.windows)]
    t0 = answered[0][0] if answered else None
    replied = sum(ws.t is not None for ws in out)
    notes = "".join([f", {dropped} dropped by the related_timespan rule" if dropped else "",
                     f", {unscored} without a judge score" if unscored else ""])
    return ItemScore(item_id=item.id, benchmark=item.benchmark, task=item.task, protocol=item.protocol,
                     score=total / len(out), correct=total / len(out) >= PASS,
                     extracted=answered[0][1] if answered else None, answer_time=t0,
                     latency=None if t0 is None else t0 - min(w.start for w in item.windows),
                     reason=f"PAUC@{omega:g} {total / len(out):.3f}; replied in {replied}/{len(out)} turn spans, "
                            f"{len(answers) - len(answered)} replies outside every span{notes}",
                     windows=tuple(out), units=len(out), unit_total=total,
                     metrics={f"pauc@{o:g}": sum(v) / len(v) for o, v in sorted(per_omega.items())})


def score_item(item: OnlineItem, response: Response, judge: JudgeLike | None = None, **kwargs: Any) -> ItemScore:
    """Score one item by its benchmark's rule: ``mc`` → :func:`score_mc`; ``forward`` and StreamingBench's proactive
    items → :func:`score_forward`; other ``proactive`` items → :func:`score_proactive` (PAUC). ``kwargs`` go to the
    scorer (``tolerance``, ``silence_is_no``; ``content``, ``omega``, ``start``, ``cumulative``)."""
    if item.protocol == "mc":
        return score_mc(item, response, judge)
    if item.protocol == "forward" or item.benchmark == "streamingbench":
        return score_forward(item, response, judge, **kwargs)
    return score_proactive(item, response, judge, **kwargs)


def summarize(results: Iterable[ItemScore]) -> dict[str, dict]:
    """Per benchmark: per sub-task and per group (the task's ``"<group>/"`` prefix) numbers, and the overall number
    as the benchmark reports it. Scores are fractions in [0, 1] (tables show ×100).

    * every task: ``items``, ``units``, ``correct`` (items), ``score`` = unit scores pooled (OVO-Bench forward: over
      test points / windows; PAUC: over turns; otherwise over items), ``pauc@ω`` likewise when present;
    * ``ovo``: a group's score is the mean of its tasks' scores and ``overall`` the mean of the group scores
      (OVO-Bench's Backward / Realtime / Forward Avg. and Total Avg., current ``OVOBenchScore.py``);
    * ``streamingbench`` and ``proactive``: groups and ``overall`` pool all their units (StreamingBench
      ``count.py``'s totals; ProactiveVideoQA's mean over all turns).
    """
    by_bench: dict[str, list[ItemScore]] = {}
    for r in results:
        by_bench.setdefault(r.benchmark, []).append(r)
    return {bench: _summarize_benchmark(bench, rs) for bench, rs in sorted(by_bench.items())}


def _pool(rs: list[ItemScore]) -> dict[str, float | int]:
    units = sum(r.units for r in rs)
    out: dict[str, float | int] = {"items": len(rs), "units": units, "correct": sum(r.correct for r in rs),
                                   "score": sum(r.unit_total for r in rs) / units if units else 0.0}
    for key in sorted({k for r in rs for k in r.metrics if k.startswith("pauc@")}):
        out[key] = sum(r.metrics.get(key, 0.0) * r.units for r in rs) / units if units else 0.0
    return out


def _summarize_benchmark(bench: str, rs: list[ItemScore]) -> dict:
    by_task: dict[str, list[ItemScore]] = {}
    for r in rs:
        by_task.setdefault(r.task, []).append(r)
    tasks = {task: _pool(trs) for task, trs in sorted(by_task.items())}
    group_names = sorted({task.split("/", 1)[0] for task in tasks})
    if bench == "ovo":
        groups = {}
        for g in group_names:
            members = [v for t, v in tasks.items() if t.split("/", 1)[0] == g]
            groups[g] = {"tasks": len(members), "items": sum(int(v["items"]) for v in members),
                         "score": sum(float(v["score"]) for v in members) / len(members)}
        overall = sum(float(v["score"]) for v in groups.values()) / len(groups)
        return {"items": len(rs), "tasks": tasks, "groups": groups, "overall": overall,
                "rule": "task: pooled units; group: mean of tasks; overall: mean of groups"}
    groups = {g: _pool([r for r in rs if r.task.split("/", 1)[0] == g]) for g in group_names}
    summary = {"items": len(rs), "tasks": tasks, "groups": groups, "overall": _pool(rs)["score"],
               "rule": "pooled units (items; PAUC: turns)"}
    summary.update({k: v for k, v in _pool(rs).items() if k.startswith("pauc@")})
    return summary


__all__ = ["OMEGAS", "ItemScore", "JudgeLike", "WindowScore", "pauc_area", "score_forward", "score_item", "score_mc",
           "score_proactive", "summarize"]
