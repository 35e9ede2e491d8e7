"""The stream metrics of SPEC §7 as pure functions (teacher-forced over a whole sample), each honouring θ.

One teacher-forced forward of a record gives, at every learned position, the log-probabilities of the next token.
:func:`extract_turns` cuts them into *turns*: a turn ends at each reply's end token (``<eos>`` in the LIVE format;
in a chat format the assistant turn's end token, which also closes user turns, so the dataset gives the replies'
positions) (tokens after the last one belong to no turn). In a turn:

* **lm positions** = learned positions whose input is not a frame's last token (``Assistant``, ``:``, the reply,
  eos);
* **stream positions** = learned positions whose input is a frame's last token (``frame_end``: the last ``<v>``, or
  the frame suffix), one per learned frame; the last one of a reply turn is the gold "speak" frame (its label is the
  speak token), the others are labelled silence.

Decision at a stream position (SPEC §7): it **speaks iff argmax ≠ silence or p(silence) < θ**. For θ ≥ 0.5 this is
exactly the engine's rule (speak iff p(silence) < θ), since argmax ≠ silence implies p(silence) < 0.5; for θ < 0.5
the argmax clause makes it stricter about silence. θ = 0 is the plain argmax decision.

Per turn (S = V = #stream positions, j* = first speaking stream position, N_f = the turn's frames):

* ``LM-PPL = exp(mean CE over lm positions)``;
* ``LM-Correctness = c / #lm`` with c the length of the exactly predicted (argmax) prefix of the lm positions;
* ``frame_diff``: if j* exists, ``S − j* − 1`` (early, ≥ 0). Else the late rule: drop the gold answer, append
  ``m = min(frames of next turn, N_f − 1)`` future frames after the turn's last stream position and read their
  decisions: ``−(index of first speak + 1)``, or ``−m`` if none; ``0`` on the last turn or when ``m = 0``;
* ``Fluency`` (T = #lm + V): diff = 0 → ``(V + c)/T``; diff > 0 → ``(V − diff)/T``; diff < 0 → ``(V − 1)/T``
  (only for turns with both lm and stream positions);
* per sample: means over turns, with defaults when absent (ppl 1, diff 0, fluency 1, correctness 1);
  ``TimeDiff = mean |frame_diff| / fps`` seconds. Dataset numbers are means over samples.

Extension (SPEC is silent; the Ego4D narration stream has no such turns): a **query turn** is a turn whose last
stream position is labelled silence — a user query, not the model, ends the silence (the built-in world and live
chat records). Its gold is "silent at all S positions; the query arrives at position S". If j* exists,
``diff = S − j*`` (frames early, measured to the query frame, ≥ 1); otherwise ``diff = 0`` (no look-ahead: the user
triggers the answer). Fluency uses the same three cases.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..data.labels import IGNORE


@dataclass(frozen=True)
class StreamScore:
    """The model's view of one stream decision: p(silence token) and whether silence is the argmax token."""

    p_silence: float
    argmax_silence: bool


FutureScores = Sequence[StreamScore] | Callable[[int], Sequence[StreamScore]] | None


def speaks(score: StreamScore, threshold: float) -> bool:
    """SPEC §7: speak iff argmax ≠ silence or p(silence) < θ."""
    return (not score.argmax_silence) or score.p_silence < threshold


def decisions(scores: Sequence[StreamScore], threshold: float) -> list[bool]:
    """Speak (True) / silent (False) at each stream position."""
    return [speaks(s, threshold) for s in scores]


@dataclass
class TurnScores:
    """Everything the metrics need from one turn of one teacher-forced forward.

    Attributes:
        index: the turn's number in the record (turns end at each eos, unlearned turns included).
        lm_ce: cross-entropy at each lm position, in order.
        lm_correct: argmax == label at each lm position.
        stream: the decision scores at each stream position, in order.
        gold_speak: the last stream position is labelled speak (a reply turn); False for a query turn.
        num_frames: N_f, all frames of the turn (learned or not).
        first_frame: the record frame index of the turn's first frame.
        last_stream_pos: token position of the last stream position (a frame's last token, where the look-ahead
            continues), or None.
    """

    index: int
    lm_ce: list[float] = field(default_factory=list)
    lm_correct: list[bool] = field(default_factory=list)
    stream: list[StreamScore] = field(default_factory=list)
    gold_speak: bool = False
    num_frames: int = 0
    first_frame: int = 0
    last_stream_pos: int | None = None

    @property
    def learned(self) -> bool:
        return bool(self.lm_ce or self.stream)


@dataclass
class TurnMetrics:
    """One turn's metrics; ``None`` where the turn has no positions of the needed kind."""

    ppl: float | None = None
    correctness: float | None = None
    diff: int | None = None
    fluency: float | None = None


@dataclass
class SampleMetrics:
    """One sample's metrics (means over its turns with the SPEC §7 defaults)."""

    lm_ppl: float = 1.0
    frame_diff: float = 0.0      # mean |frame_diff| over turns, frames
    time_diff: float = 0.0       # frame_diff / fps, seconds
    fluency: float = 1.0
    lm_correctness: float = 1.0
    turns: int = 0               # turns with learned positions
    late_turns: int = 0          # turns whose late rule ran the model
    diffs: list[int] = field(default_factory=list)  # signed frame_diff of each turn that has one

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# ---- extraction from one forward -------------------------------------------------------------------------------------
def extract_turns(input_ids: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, *, v_id: int, eos_id: int,
                  silence_id: int, frame_num_tokens: int, frame_end_id: int | None = None,
                  turn_ends: Sequence[int] | None = None) -> list[TurnScores]:
    """Cut one sample's teacher-forced forward into turns.

    Args:
        v_id: the frame placeholder (counts the turn's frames, K per frame).
        eos_id: the reply's end token; silence_id: the silence token.
        frame_end_id: a frame's last token, where the stream positions are (default ``v_id``).
        turn_ends: the position of each reply's end token (:attr:`~livecue.data.dataset.Sample.turn_ends`;
            default: every ``eos_id`` of the input, as in the LIVE format).

    Shape:
        input_ids, labels: (T,) without padding (labels position-aligned: ``labels[t]`` is position t's target);
        logits: (T, V).
    """
    if not input_ids.shape == labels.shape == logits.shape[:1]:
        raise ValueError(f"input_ids {tuple(input_ids.shape)}, labels {tuple(labels.shape)} and logits "
                         f"{tuple(logits.shape)} must agree on T")
    ids = input_ids.tolist()
    if turn_ends is None:
        stops = [t + 1 for t, i in enumerate(ids) if i == eos_id]
    else:
        stops = [t + 1 for t in sorted(turn_ends)]
    is_v = input_ids == v_id
    at_frame_end = input_ids == (v_id if frame_end_id is None else frame_end_id)
    turns, first, start = [], 0, 0
    for r, stop in enumerate(stops):
        n_frames = int(is_v[start:stop].sum()) // frame_num_tokens
        turns.append(TurnScores(index=r, num_frames=n_frames, first_frame=first))
        first += n_frames
        start = stop
    pos = (labels != IGNORE).nonzero().squeeze(1)
    pos = pos[pos < (stops[-1] if stops else 0)]
    if not len(pos):
        return turns
    logp = logits[pos].float().log_softmax(-1)  # (N, V)
    target = labels[pos].to(logp.device)
    ce = (-logp.gather(1, target[:, None])[:, 0]).tolist()
    argmax = logp.argmax(-1)
    correct = (argmax == target).tolist()
    p_sil = logp[:, silence_id].exp().tolist()
    arg_sil = (argmax == silence_id).tolist()
    at_end = at_frame_end[pos].tolist()
    gold = target.tolist()
    for k, t in enumerate(pos.tolist()):
        turn = turns[bisect.bisect_right(stops, t)]
        if at_end[k]:
            turn.stream.append(StreamScore(p_sil[k], arg_sil[k]))
            turn.gold_speak = gold[k] != silence_id
            turn.last_stream_pos = t
        else:
            turn.lm_ce.append(ce[k])
            turn.lm_correct.append(correct[k])
    return turns


# ---- LM metrics ------------------------------------------------------------------------------------------------------
def lm_ppl(ce: Sequence[float]) -> float:
    """exp(mean CE over the lm positions)."""
    if not ce:
        raise ValueError("LM-PPL needs at least one lm position")
    return math.exp(sum(ce) / len(ce))


def correct_prefix(correct: Sequence[bool]) -> int:
    """c: the length of the exactly predicted (argmax) prefix."""
    for k, ok in enumerate(correct):
        if not ok:
            return k
    return len(correct)


def lm_correctness(correct: Sequence[bool]) -> float:
    """c / #lm positions."""
    if not correct:
        raise ValueError("LM-Correctness needs at least one lm position")
    return correct_prefix(correct) / len(correct)


# ---- timing ----------------------------------------------------------------------------------------------------------
def early_diff(speak: Sequence[bool]) -> int | None:
    """``S − j* − 1`` with j* the first speaking position, or None when the model never speaks in the turn."""
    for j, s in enumerate(speak):
        if s:
            return len(speak) - j - 1
    return None


def late_diff(future_speak: Sequence[bool], m: int) -> int:
    """The late rule over the ``m`` appended future frames: ``−(first speak + 1)``, or ``−m`` if none (0 if m = 0)."""
    for j, s in enumerate(list(future_speak)[:m]):
        if s:
            return -(j + 1)
    return -m


def look_ahead_frames(turn_frames: int, next_turn_frames: int) -> int:
    """``m = min(frames of next turn, N_f − 1)`` (never negative)."""
    return max(0, min(next_turn_frames, turn_frames - 1))


def needs_look_ahead(turn: TurnScores, threshold: float, *, last_turn: bool, m: int) -> bool:
    """Whether the late rule must run the model: a reply turn, never spoken, not the last turn, m > 0."""
    return (turn.gold_speak and bool(turn.stream) and not last_turn and m > 0
            and early_diff(decisions(turn.stream, threshold)) is None)


def frame_diff(turn: TurnScores, threshold: float, *, last_turn: bool, m: int, future: FutureScores = None
               ) -> int | None:
    """The turn's frame_diff (None without stream positions).

    Args:
        turn: the turn's scores.
        threshold: θ.
        last_turn: the turn is the record's last (the late rule gives 0).
        m: :func:`look_ahead_frames` of the turn.
        future: the decision scores of the ``m`` appended future frames (a sequence, or a callback ``f(m)`` that
            runs the model; called only when the late rule needs it).
    """
    if not turn.stream:
        return None
    speak = decisions(turn.stream, threshold)
    if not turn.gold_speak:  # query turn (module docstring)
        j = next((j for j, s in enumerate(speak) if s), None)
        return 0 if j is None else len(speak) - j
    early = early_diff(speak)
    if early is not None:
        return early
    if last_turn or m == 0:
        return 0
    if future is None:
        raise ValueError(f"turn {turn.index} is late at θ={threshold}: the look-ahead scores of {m} future frames "
                         f"are needed")
    scores = future(m) if callable(future) else future
    if len(scores) < m:
        raise ValueError(f"turn {turn.index}: {m} future frames needed, {len(scores)} scores given")
    return late_diff(decisions(scores, threshold), m)


def fluency(diff: int, num_stream: int, num_lm: int, correct: int) -> float:
    """SPEC §7 Fluency with V = num_stream, T = num_lm + V and c = correct (the correct lm prefix)."""
    total = num_lm + num_stream
    if total == 0:
        raise ValueError("Fluency needs at least one learned position")
    if diff == 0:
        return (num_stream + correct) / total
    if diff > 0:
        return (num_stream - diff) / total
    return (num_stream - 1) / total


def turn_metrics(turn: TurnScores, threshold: float, *, last_turn: bool, next_turn_frames: int,
                 future: FutureScores = None) -> TurnMetrics:
    """All four metrics of one turn (see the module docstring)."""
    out = TurnMetrics()
    c = 0
    if turn.lm_ce:
        out.ppl = lm_ppl(turn.lm_ce)
        c = correct_prefix(turn.lm_correct)
        out.correctness = c / len(turn.lm_correct)
    m = look_ahead_frames(turn.num_frames, next_turn_frames)
    out.diff = frame_diff(turn, threshold, last_turn=last_turn, m=m, future=future)
    if turn.lm_ce and turn.stream:
        out.fluency = fluency(out.diff, len(turn.stream), len(turn.lm_ce), c)
    return out


def sample_metrics(turns: Sequence[TurnScores], threshold: float, fps: float,
                   future: Mapping[int, Sequence[StreamScore]] | Callable[[int, int], Sequence[StreamScore]]
                   | None = None) -> SampleMetrics:
    """One sample's metrics from its turns.

    Args:
        turns: :func:`extract_turns` of the sample (all turns, in order).
        threshold: θ.
        fps: the record's frame rate (TimeDiff = frames / fps).
        future: look-ahead scores per turn index (a mapping), or a callback ``f(turn_index, m)``.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    ppls, diffs, flus, cors = [], [], [], []
    late = 0
    for r, turn in enumerate(turns):
        if not turn.learned:
            continue
        last = r == len(turns) - 1
        nxt = turns[r + 1].num_frames if not last else 0
        m = look_ahead_frames(turn.num_frames, nxt)
        if needs_look_ahead(turn, threshold, last_turn=last, m=m):
            late += 1
        fut: FutureScores
        if callable(future):
            fut = functools.partial(future, turn.index)
        else:
            fut = None if future is None else future.get(turn.index)
        tm = turn_metrics(turn, threshold, last_turn=last, next_turn_frames=nxt, future=fut)
        for value, bucket in ((tm.ppl, ppls), (tm.fluency, flus), (tm.correctness, cors)):
            if value is not None:
                bucket.append(value)
        if tm.diff is not None:
            diffs.append(tm.diff)
    def mean(xs: list[float], default: float) -> float:
        return sum(xs) / len(xs) if xs else default

    fd = mean([abs(d) for d in diffs], 0.0)
    return SampleMetrics(lm_ppl=mean(ppls, 1.0), frame_diff=fd, time_diff=fd / fps, fluency=mean(flus, 1.0),
                         lm_correctness=mean(cors, 1.0), turns=sum(t.learned for t in turns), late_turns=late,
                         diffs=diffs)


def decision_counts(turns: Sequence[TurnScores], threshold: float) -> tuple[int, int, int]:
    """Speak decisions against the gold labels at every stream position: (true pos., false pos., false neg.).

    livecue's own teacher-forced timing score (not in SPEC §7): the gold is "speak" only at the last stream position
    of a reply turn; :func:`~livecue.eval.textmetrics.prf` turns the counts into precision / recall / F1.
    """
    tp = fp = fn = 0
    for turn in turns:
        for k, said in enumerate(decisions(turn.stream, threshold)):
            gold = turn.gold_speak and k == len(turn.stream) - 1
            tp += said and gold
            fp += said and not gold
            fn += gold and not said
    return tp, fp, fn


def look_ahead_requests(turns: Sequence[TurnScores], thresholds: Sequence[float]) -> dict[int, int]:
    """Turn index -> m for every turn whose late rule runs the model at any of ``thresholds``."""
    out = {}
    for r, turn in enumerate(turns):
        last = r == len(turns) - 1
        m = look_ahead_frames(turn.num_frames, turns[r + 1].num_frames if not last else 0)
        if any(needs_look_ahead(turn, th, last_turn=last, m=m) for th in thresholds):
            out[turn.index] = m
    return out


def mean_metrics(samples: Sequence[SampleMetrics]) -> dict[str, float]:
    """Means over samples (SPEC §7: report means over samples)."""
    if not samples:
        return {}
    keys = ("lm_ppl", "time_diff", "fluency", "lm_correctness", "frame_diff")
    out = {k: sum(getattr(s, k) for s in samples) / len(samples) for k in keys}
    out["samples"] = len(samples)
    out["turns"] = sum(s.turns for s in samples)
    return out
