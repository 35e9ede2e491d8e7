"""ProactiveVideoQA as upstream runs and scores it: PAUC hand-worked on upstream's own scale (judge scores 1-3, y =
N − 1 over a maximum of 2, start 0.5), the related_timespan rule and its edges, the judge's ``proactive`` rubric,
and the later user turns (subtitles) fed to the model at their times without asking for a reply."""

from __future__ import annotations

import dataclasses
import re

import pytest

from livecue.data.world import WorldConfig
from livecue.eval.online.formats import load_items
from livecue.eval.online.items import OnlineItem, Response, Window
from livecue.eval.online.judge import PROACTIVE, CachedJudge, ChatJudge, parse_proactive_score
from livecue.eval.online.run import run_item
from livecue.eval.online.scoring import pauc_area, score_item, score_proactive
from livecue.eval.online.world import world_to_benchmark
from livecue.inference.engine import StreamEngine
from livecue.inference.options import StreamOptions


class Canned(ChatJudge):
    """An LM judge whose reply is looked up by the predicted answer it is shown (upstream replies "1" / "2" / "3")."""

    name = "canned"

    def __init__(self, replies: dict[str, str]) -> None:
        super().__init__()
        self.replies, self.asked = replies, []

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.asked.append(messages)
        predicted = re.search(r"Predicted Answer: (.*)$", messages[-1]["content"]).group(1)
        return self.replies[predicted]


def item(*windows: Window, ask: float = 0.0) -> OnlineItem:
    return OnlineItem("proactive", "proactive/TV", "q", "v.mp4", "What is on the table?", ask, "proactive",
                      windows=windows)


# ---- PAUC, hand-worked on upstream's numbers -------------------------------------------------------------------------
def test_pauc_hand_worked_with_upstream_judge_scale_and_related_rule():
    # Turn 1: reply span [10, 20], related span [10, 16]. Replies (judge input: the span's unique replies so far):
    #   12 s "a car"                         → judge "2" → upstream y = 1 (of 2)
    #   14 s "a red car"  ("a car a red car") → judge "3" → y = 2
    #   15 s "a car"      (a repeat: skipped, not judged)
    #   18 s "a dog"      ("a car a red car a dog") → "2" → y = 1: after the related end (16) and below the last
    #                                                             score inside it (2) → dropped
    #   25 s "noise"      (outside every span)
    # Upstream area_under_line_ratio(points=[(2, 1), (4, 2)], max_x=10, max_y=2, start_score=0.5):
    #   ω = 0.5: x → (1, 1), (2, 2), then (10, 2): 1·0.5 + 1·1 + 8·2 = 17.5, / (10·2) = 0.875
    #   ω = 0:   (2, 1), (4, 2), (10, 2):          2·0.5 + 2·1 + 6·2 = 15,   / 20 = 0.75
    #   ω = 1:   (0, 1), (0, 2), (10, 2):          10·2 = 20,                / 20 = 1.0
    # Turn 2: span [30, 34], no reply: start_score / max_score = 0.5 / 2 = 0.25 at every ω.
    # Turn 3: span [40, 50], the one reply's verdict is unparsable: no point, as with no reply → 0.25.
    # Item (mean over turns, as stat_metric): ω = 0.5: (0.875 + 0.25 + 0.25) / 3; ω = 0: 1.25 / 3; ω = 1: 1.5 / 3
    judge = Canned({"a car": "2", "a car a red car": "3", "a car a red car a dog": "2", "hmm": "I cannot tell."})
    it = item(Window(10, 20, "A red car.", (10, 16)), Window(30, 34, "A dog."), Window(40, 50, "A cat.", (40, 45)))
    answers = ((12.0, "a car"), (14.0, "a red car"), (15.0, "a car"), (18.0, "a dog"), (25.0, "noise"),
               (41.0, "hmm"))
    r = score_proactive(it, Response("q", answers), judge=judge)
    assert [w.score for w in r.windows] == pytest.approx([0.875, 0.25, 0.25])
    assert r.metrics == pytest.approx({"pauc@0": 1.25 / 3, "pauc@0.5": 1.375 / 3, "pauc@1": 0.5})
    assert r.score == pytest.approx(1.375 / 3) and not r.correct and (r.units, r.answer_time) == (3, 12.0)
    assert "1 dropped by the related_timespan rule" in r.reason and "1 without a judge score" in r.reason
    assert "1 replies outside every span" in r.reason
    # the judge saw upstream's input: the question, the ground truth, the cumulative prediction; the 3-point rubric
    assert [m[-1]["content"] for m in judge.asked[:2]] == [
        "Question: What is on the table?\nGround Truth Answer: A red car.\nPredicted Answer: a car",
        "Question: What is on the table?\nGround Truth Answer: A red car.\nPredicted Answer: a car a red car"]
    assert all(m[0]["content"] == PROACTIVE.system for m in judge.asked) and len(judge.asked) == 4
    assert "- 3: Mostly covered" in PROACTIVE.system and "- 1: Incorrect" in PROACTIVE.system
    # without its related span the 18 s reply stays: (1, 1), (2, 2), (4, 1), (10, 1):
    #   0.5 + 1 + 2·2 + 6·1 = 11.5 / 20 = 0.575
    plain = score_proactive(item(Window(10, 20, "A red car.")), Response("q", answers), judge=judge)
    assert plain.score == pytest.approx(0.575) and "dropped" not in plain.reason


def test_related_rule_edges():
    table = {"in": 0.5, "edge": 0.5, "up": 1.0, "same": 0.5, "down": 0.0}

    def content(q, ref, ans):
        return table[ans]

    def points(answers, related=(0.0, 4.0)):
        r = score_proactive(item(Window(0, 10, "x", related)), Response("q", answers), content=content,
                            cumulative=False, omega=0.0)
        return r.windows[0].score, r.reason

    # a reply exactly at the related end is inside it; a later equal score is kept, only a strictly lower one goes;
    # a kept later point does not raise the bar (last-in-related stays 0.5): "up" (1.0) then "same" (0.5) both kept
    # ω = 0: (4, .5), (6, 1), (7, .5), [(9, 0) dropped] → 4·.25 + 2·.5 + 1·1 + 3·.5 = 1 + 1 + 1 + 1.5 = 4.5 / 10
    score, reason = points(((4.0, "edge"), (6.0, "up"), (7.0, "same"), (9.0, "down")))
    assert score == pytest.approx(0.45) and "1 dropped" in reason
    # no point inside the related span: the bar is 0, nothing can be lower, nothing is dropped
    # (5, 1), (8, 0): 5·.25 + 3·1 + 2·0 = 4.25 / 10
    score, reason = points(((5.0, "up"), (8.0, "down")))
    assert score == pytest.approx(0.425) and "dropped" not in reason
    # the bar is the LAST score inside the related span, not the best: (1, 1.0), (3, 0.5) inside; (6, 0.5) is kept
    # ω = 0: 1·.25 + 2·1 + 7·.5 = 5.75 / 10
    score, reason = points(((1.0, "up"), (3.0, "in"), (6.0, "same")))
    assert score == pytest.approx(0.575) and "dropped" not in reason
    # no related span (the annotation has none): upstream falls back to the reply span, so nothing is dropped
    score, reason = points(((2.0, "up"), (8.0, "down")), related=None)
    assert score == pytest.approx((2 * 0.25 + 6 * 1.0 + 2 * 0.0) / 10) and "dropped" not in reason


def test_pauc_curve_edges_as_upstream():
    # points are sorted by time before x is scaled: at ω = 1 the last reply in time is the one that counts
    assert pauc_area([(5.0, 1.0), (2.0, 0.0)], 10.0, omega=1.0) == 1.0
    assert pauc_area([(5.0, 0.0), (2.0, 1.0)], 10.0, omega=1.0) == 0.0
    # two replies at the same time in one span: the later one's score stands (upstream keys scores by time)
    r = score_proactive(item(Window(0, 10, "x")), Response("q", ((2.0, "a"), (2.0, "b"))),
                        content=lambda q, ref, ans: {"a": 1.0, "b": 0.0}[ans], cumulative=False, omega=0.0)
    assert r.score == pytest.approx(2 * 0.25 / 10)
    # no question-time filter (upstream has none): a reply in a span before the instruction still counts
    r = score_proactive(item(Window(0, 10, "x"), ask=5.0), Response("q", ((0.0, "a"),)), content=lambda *a: 1.0)
    assert r.score == 1.0
    # both ends of the span included; a reply in two overlapping spans counts for both
    r = score_proactive(item(Window(0, 4, "x"), Window(4, 8, "y")), Response("q", ((4.0, "a"),)),
                        content=lambda *a: 1.0, omega=0.0)
    assert [w.score for w in r.windows] == pytest.approx([0.25, 1.0])


# ---- the judge's proactive rubric ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, y", [
    ("3", 1.0), ("2", 0.5), ("1", 0.0), ("Score: 2", 0.5), ("2.", 0.5), ("The score is 3", 1.0),
    ("5", 1.0), ("0", 0.0), ("none fits", None), ("", None),
])
def test_parse_proactive_score(reply, y):
    assert parse_proactive_score(reply) == y


def test_cached_proactive_verdicts_apart_from_match_and_unparsable_kept(tmp_path):
    inner = Canned({"a car": "2", "hmm": "?"})
    path = tmp_path / "c.jsonl"
    cached = CachedJudge(inner, path)
    assert cached.grade("q", "A red car.", "a car", "proactive") == 0.5
    assert cached.grade("q", "A red car.", "hmm", "proactive") is None
    again = CachedJudge(inner, path)
    assert again.grade("q", "A red car.", "a car", "proactive") == 0.5
    assert again.grade("q", "A red car.", "hmm", "proactive") is None  # read back as no score, not asked again
    assert len(inner.asked) == 2 and again.hits == 2
    lines = path.read_text().splitlines()
    assert all('"prompt": "proactive-v1"' in line for line in lines) and '"score": null' in lines[1]
    with pytest.raises(ValueError, match="rubric must be one of"):
        cached.grade("q", "r", "a", "nope")


def test_score_item_asks_a_rubric_judge_by_the_proactive_rubric(tmp_path):
    judge = CachedJudge(Canned({"a red car": "3"}), tmp_path / "c.jsonl")
    r = score_item(item(Window(0, 10, "A red car.")), Response("q", ((0.0, "a red car"),)), judge)
    assert r.score == 1.0 and judge.misses == 1


# ---- later user turns fed during the stream -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world_item(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    anno = world_to_benchmark(root, "proactive", 1, 0, WorldConfig(resolution=32, duration=8.0))
    (it,) = load_items("proactive", anno)
    return it


def recorded_run(tiny, it: OnlineItem, monkeypatch):
    """Run ``it`` with the tiny model; the session's add_query calls, (frame time, ids fed so far) after each frame,
    and the session (recording every id it feeds)."""
    calls, frames, sessions = [], [], []
    original = StreamEngine.session

    def session(self, *args, **kwargs):
        s = original(self, *args, record=True, **kwargs)
        add, push = s.add_query, s.push_frame
        s.add_query = lambda text, at=None, *, answer=True: calls.append((text, at, answer)) or add(text, at,
                                                                                                     answer=answer)
        s.push_frame = lambda frame, t: push(frame, t) + [frames.append((t, len(s.history)))]
        sessions.append(s)
        return s

    monkeypatch.setattr(StreamEngine, "session", session)
    engine = StreamEngine(*tiny, StreamOptions(max_reply_tokens=3, memory="unbounded"))
    run_item(engine, it, fps=1.0)
    return calls, frames, sessions[0]


def test_later_turns_are_fed_at_their_times_without_forcing_a_reply(tiny, world_item, monkeypatch):
    it = dataclasses.replace(world_item, turns=((2.5, "Subtitle: hello there."), (5.5, "Subtitle: a second line."),
                                                (9.0, "Subtitle: after the end.")))
    assert it.end_time == 8.0
    calls, frames, session = recorded_run(tiny, it, monkeypatch)
    assert calls == [(it.question, 0.0, False), ("Subtitle: hello there.", 2.5, False),
                     ("Subtitle: a second line.", 5.5, False)]  # 9 s is past the stream's end: not given
    decode = tiny[1].decode
    ends = [n for _, n in frames]
    for text, at in (("Subtitle: hello there.", 2.5), ("Subtitle: a second line.", 5.5)):
        k = next(i for i, (t, _) in enumerate(frames) if t > at)  # fed with the first frame after its time
        assert text in decode(session.history[ends[k - 1]:ends[k]])
        assert text not in decode(session.history[:ends[k - 1]])


def test_an_mc_item_gets_only_the_turns_before_its_question(tiny, world_item, monkeypatch):
    it = OnlineItem("ovo", "realtime/STU", "m", world_item.video, "Where is it?", 3.0, "mc", options=("L.", "R."),
                    answer="A", turns=((1.5, "Subtitle: early."), (4.0, "Subtitle: late.")))
    calls, _, _ = recorded_run(tiny, it, monkeypatch)
    assert [(text, at, answer) for text, at, answer in calls] == [
        ("Where is it?\nA. L.\nB. R.\nAnswer with the option's letter.", 3.0, True), ("Subtitle: early.", 1.5, False)]


def test_item_rejects_a_malformed_turn():
    with pytest.raises(ValueError, match="later turn"):
        OnlineItem("proactive", "proactive/TV", "q", "v.mp4", "q", 0.0, "proactive", turns=((-1.0, "x"),))
    with pytest.raises(ValueError, match="later turn"):
        OnlineItem("proactive", "proactive/TV", "q", "v.mp4", "q", 0.0, "proactive", turns=((1.0, " "),))
