"""Scorers of the online-video benchmarks: hand-worked examples per protocol and each rule's edge cases."""

from __future__ import annotations

import pytest

from livecue.eval.online.answers import extract_count, extract_letter, extract_yes_no, token_f1
from livecue.eval.online.items import OnlineItem, Response, Window
from livecue.eval.online.scoring import (
    ItemScore,
    pauc_area,
    score_forward,
    score_item,
    score_mc,
    score_proactive,
    summarize,
)

LETTERS = ("A", "B", "C", "D")
OPTIONS = ("red car", "blue car", "green bus", "dark red car")


# ---- answer extraction ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "want"), [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("b", "B"), (" ( c ) ", "C"),
    ("The answer is B", "B"), ("the answer is b.", "B"), ("Answer: (c)", "C"), ("Option D", "D"),
    ("b) blue car", "B"), ("(B) blue car", "B"), ("C: green bus", "C"), ("B blue car", "B"),
    ("I think it's C, the green bus", "C"),          # "I" is not an option letter here
    ("A green bus went by", "C"),                     # "A" + lower-case word is the article; the text names C
    ("blue car", "B"),                                # the option's text without its letter
    ("It is the dark red car.", "D"),                 # "red car" lies inside "dark red car": the longer one
    ("A or B", None), ("A and C are both possible", None),  # ambiguous: wrong
    ("the answer is a bus", None),                    # a lower-case article is not a letter; no option text
    ("E", None), ("I don't know", None), ("", None), ("   ", None), (None, None),
])
def test_extract_letter(text, want):
    assert extract_letter(text, LETTERS, OPTIONS) == want


def test_extract_letter_without_options_reads_letters_only():
    assert extract_letter("blue car", LETTERS) is None
    assert extract_letter("The answer is (A).", LETTERS) == "A"


@pytest.mark.parametrize(("text", "want"), [("3", "3"), ("They did it 2 times.", "2"), ("3 or 4", "34"),
                                            ("none yet", None), ("", None)])
def test_extract_count_joins_digits_as_ovo_bench(text, want):
    assert extract_count(text) == want


@pytest.mark.parametrize(("text", "want"), [("Yes", "Yes"), ("yes, it is done", "Yes"), ("Y", "Yes"), ("N", "No"),
                                            ("No.", "No"), ("I would say no", "No"), ("Nothing yet", None),
                                            ("yes or no", "Yes"), ("maybe yes maybe no", None), ("", None)])
def test_extract_yes_no(text, want):
    assert extract_yes_no(text) == want


def test_token_f1_hand_worked():
    # ref [red, car, parked], answer [the, red, car]: overlap 2, P = R = 2/3 → F1 = 2/3
    assert token_f1("q", "red car parked", "the red car") == pytest.approx(2 / 3)
    assert token_f1("q", "", "") == 1.0
    assert token_f1("q", "red", "") == 0.0
    assert token_f1("q", "red", "blue") == 0.0


# ---- mc ------------------------------------------------------------------------------------------------------------
def mc_item(**kw) -> OnlineItem:
    base = dict(benchmark="ovo", task="backward/EPM", id="m1", video="v.mp4", question="Which vehicle?",
                ask_time=10.0, protocol="mc", options=OPTIONS, answer="B")
    return OnlineItem(**{**base, **kw})


def test_mc_correct_letter_with_timing():
    r = score_mc(mc_item(), Response("m1", ((12.0, "The answer is B"),)))
    assert (r.score, r.correct, r.extracted, r.answer_time, r.latency) == (1.0, True, "B", 12.0, 2.0)
    assert r.units == 1 and r.unit_total == 1.0


def test_mc_first_answer_counts_and_wrong_or_missing_is_zero():
    r = score_mc(mc_item(), Response("m1", ((11.0, "A"), (12.0, "B"))))
    assert (r.score, r.correct, r.extracted) == (0.0, False, "A")
    r = score_mc(mc_item(), Response("m1", ((11.0, "A or B"),)))
    assert (r.score, r.extracted, r.reason) == (0.0, None, "no option letter found")
    r = score_mc(mc_item(), Response("m1", ()))
    assert (r.score, r.correct, r.answer_time, r.reason) == (0.0, False, None, "no answer")


def test_mc_open_question_uses_judge_callable_or_object():
    item = mc_item(options=(), answer="a blue car")
    seen = []

    def judge(q, ref, ans):
        seen.append((q, ref, ans))
        return 0.8

    r = score_mc(item, Response("m1", ((13.0, "blue one"),)), judge)
    assert (r.score, r.correct, r.extracted) == (0.8, True, "blue one")
    assert seen == [("Which vehicle?", "a blue car", "blue one")]

    class Obj:
        name = "stub"

        def judge(self, q, ref, ans):
            return 0.2

    r = score_mc(item, Response("m1", ((13.0, "red"),)), Obj())
    assert (r.score, r.correct) == (0.2, False)
    with pytest.raises(ValueError, match="needs a judge"):
        score_mc(item, Response("m1", ((13.0, "red"),)))


def test_response_for_another_item_is_refused():
    with pytest.raises(ValueError, match="given to score item"):
        score_mc(mc_item(), Response("other", ((12.0, "B"),)))


# ---- forward: OVO-Bench point windows (test points, as the loader gives them) ----------------------------------------
def rec(*answers, windows=((10, "1"), (20, "2"), (30, "3"))) -> ItemScore:
    item = OnlineItem("ovo", "forward/REC", "r1", "v.mp4", "How many times did they jump?", 0.0, "forward",
                      windows=tuple(Window(t, t, c) for t, c in windows))
    return score_forward(item, Response("r1", tuple(answers)))


def test_forward_points_standing_answer_at_each_test_point():
    r = rec((8.0, "1"), (12.0, "They did it 2 times"), (25.0, "3"))
    assert [w.status for w in r.windows] == ["hit", "hit", "hit"]
    assert (r.score, r.correct, r.units, r.unit_total) == (1.0, True, 3, 3.0)
    # a count given too early is wrong at the test point before the evidence, right at the next
    r = rec((8.0, "1"), (15.0, "3"))
    assert [(w.status, w.t) for w in r.windows] == [("hit", 8.0), ("wrong", 15.0), ("hit", 15.0)]
    assert r.score == pytest.approx(2 / 3) and not r.correct


def test_forward_point_answer_exactly_at_the_test_point_counts_and_just_after_does_not():
    r = rec((20.0, "2"), windows=((20, "2"),))
    assert r.windows[0].status == "hit"
    r = rec((20.5, "2"), windows=((20, "2"),))
    assert (r.windows[0].status, r.score, r.metrics["late"]) == ("missed", 0.0, 1.0)


def ssr(*answers, **kw) -> ItemScore:
    item = OnlineItem("ovo", "forward/SSR", "s1/0", "v.mp4", "Crack the egg", 0.0, "forward",
                      windows=(Window(10, 10, "No"), Window(20, 20, "Yes")))
    return score_forward(item, Response("s1/0", tuple(answers)), **kw)


def test_forward_yes_no_silence_is_no():
    r = ssr()
    assert [w.status for w in r.windows] == ["silent", "missed"] and r.score == 0.5
    assert r.answer_time is None
    assert ssr(silence_is_no=False).score == 0.0
    r = ssr((15.0, "Yes"))
    assert [w.status for w in r.windows] == ["silent", "hit"] and r.correct
    r = ssr((5.0, "yes, done"))  # said too early: wrong at 10 s, right at 20 s
    assert [w.status for w in r.windows] == ["wrong", "hit"] and r.score == 0.5


# ---- forward: range windows -----------------------------------------------------------------------------------------
def ranged(*answers, tolerance=None) -> ItemScore:
    item = OnlineItem("ovo", "forward/REC", "g1", "v.mp4", "How many?", 0.0, "forward",
                      windows=(Window(10, 20, "1"), Window(30, 40, "2")))
    return score_forward(item, Response("g1", tuple(answers)), tolerance=tolerance)


def test_forward_range_answers_exactly_at_start_and_end_count():
    r = ranged((10.0, "1"), (40.0, "2"))
    assert [w.status for w in r.windows] == ["hit", "hit"]
    assert (r.score, r.correct, r.answer_time, r.latency) == (1.0, True, 10.0, 0.0)


def test_forward_range_first_answer_in_window_counts():
    r = ranged((12.0, "5"), (14.0, "1"))
    assert [(w.status, w.t) for w in r.windows] == [("wrong", 12.0), ("missed", None)]
    assert r.extracted == "5" and r.score == 0.0


def test_forward_range_answer_before_window_is_early_even_if_a_later_one_is_right():
    r = ranged((5.0, "1"), (12.0, "1"), (25.0, "2"), (35.0, "2"))
    # W1: first answer is at 5 s < 10 s → early; W2: first answer after 20 s is at 25 s < 30 s → early
    assert [(w.status, w.t) for w in r.windows] == [("early", 5.0), ("early", 25.0)]
    assert r.score == 0.0


def test_forward_range_no_answer_late_answer_and_tolerance():
    r = ranged()
    assert [w.status for w in r.windows] == ["missed", "missed"]
    assert (r.score, r.answer_time, r.latency, r.extracted) == (0.0, None, None, None)
    r = ranged((15.0, "1"), (41.0, "2"))
    assert [w.status for w in r.windows] == ["hit", "missed"] and r.metrics["late"] == 1.0
    assert "1 late" in r.reason
    r = ranged((9.0, "1"), (41.0, "2"), tolerance=1.0)
    assert [w.status for w in r.windows] == ["hit", "hit"]


def test_forward_without_windows_is_refused():
    item = OnlineItem("ovo", "forward/REC", "x", "v.mp4", "q", 0.0, "forward")
    with pytest.raises(ValueError, match="no ground-truth windows"):
        score_forward(item, Response("x", ()))


# ---- StreamingBench proactive output ------------------------------------------------------------------------------
def sb(*answers, judge=None) -> ItemScore:
    item = OnlineItem("streamingbench", "proactive/Proactive Output", "p1", "v.mp4",
                      "Tell me when the man waves.", 40.0, "proactive", windows=(Window(50, 50, "The man waves"),))
    return score_item(item, Response("p1", tuple(answers)), judge)


@pytest.mark.parametrize(("t", "status"), [(48.0, "hit"), (50.0, "hit"), (52.0, "hit"), (47.9, "early"),
                                           (52.1, "wrong")])
def test_streamingbench_first_answer_within_two_seconds(t, status):
    r = sb((t, "He waves now"))
    assert r.windows[0].status == status and r.correct == (status == "hit")
    assert r.latency == pytest.approx(t - 50.0)


def test_streamingbench_first_answer_counts_none_misses_and_judge_checks_content():
    r = sb((47.0, "waves"), (50.0, "waves"))
    assert (r.windows[0].status, r.answer_time, r.score) == ("early", 47.0, 0.0)
    r = sb()
    assert (r.windows[0].status, r.score, r.reason) == ("missed", 0.0, "no answer")
    assert sb((50.0, "a dog"), judge=lambda q, ref, ans: 0.2).windows[0].status == "wrong"
    assert sb((50.0, "he waves"), judge=lambda q, ref, ans: 0.9).correct


# ---- proactive: PAUC -----------------------------------------------------------------------------------------------
def pauc_item() -> OnlineItem:
    return OnlineItem("proactive", "proactive/ego", "q1", "v.mp4", "Tell me what happens.", 0.0, "proactive",
                      windows=(Window(10, 20, "red car parked"), Window(30, 34, "dog runs")))


def test_pauc_hand_worked_two_turns():
    # Turn 1, span [10, 20] (10 s): replies at 12 s "a red car" and 16 s "red car parked"; cumulative texts are
    # scored: "a red car" → 0.5, "a red car red car parked" → 1.0. The repeat at 18 s is skipped; 25 s is outside.
    #   ω = 0.5: points (2·0.5, 0.5) = (1, 0.5), (6·0.5, 1.0) = (3, 1.0); step curve from start 0.25:
    #            [0,1]·0.25 + [1,3]·0.5 + [3,10]·1.0 = 0.25 + 1.0 + 7.0 = 8.25 → 8.25 / 10 = 0.825
    #   ω = 0:   points (2, 0.5), (6, 1.0): 2·0.25 + 4·0.5 + 4·1.0 = 6.5 → 0.65
    #   ω = 1:   all points at x = 0: the last y holds the whole span → 1.0
    # Turn 2, span [30, 34]: no reply → start = 0.25 at every ω.
    # Item: PAUC@0.5 = (0.825 + 0.25) / 2 = 0.5375; @0 = (0.65 + 0.25) / 2 = 0.45; @1 = (1 + 0.25) / 2 = 0.625
    table = {"a red car": 0.5, "a red car red car parked": 1.0}
    asked = []

    def content(q, ref, ans):
        asked.append((ref, ans))
        return table[ans]

    answers = ((12.0, "a red car"), (16.0, "red car parked"), (18.0, "red car parked"), (25.0, "noise"))
    r = score_proactive(pauc_item(), Response("q1", answers), content=content)
    assert asked == [("red car parked", "a red car"), ("red car parked", "a red car red car parked")]
    assert [w.score for w in r.windows] == pytest.approx([0.825, 0.25])
    assert r.score == pytest.approx(0.5375) and r.correct
    assert r.metrics == pytest.approx({"pauc@0": 0.45, "pauc@0.5": 0.5375, "pauc@1": 0.625})
    assert (r.units, r.unit_total, r.answer_time, r.latency) == (2, pytest.approx(1.075), 12.0, 2.0)
    assert "replied in 1/2 turn spans, 1 replies outside every span" in r.reason


def test_pauc_non_cumulative_default_token_f1_and_judge_object():
    item = OnlineItem("proactive", "proactive/ego", "q2", "v.mp4", "q", 0.0, "proactive",
                      windows=(Window(0, 10, "red car parked"),))
    # token F1("the red car" vs "red car parked") = 2/3 at x = 5·0.5 = 2.5: (2.5·0.25 + 7.5·2/3) / 10 = 0.5625
    r = score_proactive(item, Response("q2", ((5.0, "the red car"),)), cumulative=False)
    assert r.score == pytest.approx(0.5625)

    class Judge:
        def judge(self, q, ref, ans):
            return 1.0

    # a judge object wins over the content scorer; answer exactly at the span end: x = 10·0.5 = 5 → (5·0.25+5·1)/10
    r = score_proactive(item, Response("q2", ((10.0, "anything"),)), judge=Judge(), content=lambda *a: 0.0)
    assert r.score == pytest.approx(0.625)


def test_pauc_area_edges():
    assert pauc_area([], 10.0) == 0.25
    assert pauc_area([(0.0, 1.0)], 10.0, omega=0.0) == 1.0          # a perfect reply at the span's start
    assert pauc_area([(10.0, 1.0)], 10.0, omega=0.0) == 0.25        # at the very end, ω = 0: only the start level
    assert pauc_area([(3.0, 0.4)], 0.0) == 0.4                      # a zero-length span: the last reply's score
    with pytest.raises(ValueError, match="omega"):
        score_proactive(pauc_item(), Response("q1", ()), omega=2.0)


# ---- summaries -----------------------------------------------------------------------------------------------------
def res(bench, task, score, units=1, correct=None, **metrics) -> ItemScore:
    return ItemScore(f"{task}{score}{units}", bench, task, "mc", score / units if units else 0.0,
                     bool(score == units) if correct is None else correct, None, None, None, "",
                     units=units, unit_total=score, metrics=metrics)


def test_summarize_mixed_set_as_each_benchmark_reports():
    results = [
        res("ovo", "backward/EPM", 1.0), res("ovo", "backward/EPM", 0.0), res("ovo", "realtime/OCR", 1.0),
        res("ovo", "forward/REC", 2.0, units=3), res("ovo", "forward/REC", 0.0, units=1),
        res("streamingbench", "realtime/Object Perception", 1.0),
        res("streamingbench", "realtime/Object Perception", 0.0),
        res("streamingbench", "realtime/OCR", 1.0), res("streamingbench", "proactive/Proactive Output", 0.0),
        res("proactive", "proactive/ego", 1.075, units=2, correct=True, **{"pauc@0": 0.45, "pauc@1": 0.625}),
        res("proactive", "proactive/tv", 0.25, units=1, correct=False, **{"pauc@0": 0.25, "pauc@1": 0.25}),
    ]
    s = summarize(results)
    assert sorted(s) == ["ovo", "proactive", "streamingbench"]
    ovo = s["ovo"]
    # REC pools its 4 test points: (2 + 0) / 4 = 0.5 (not the item mean 0.333)
    assert ovo["tasks"]["forward/REC"] == {"items": 2, "units": 4, "correct": 0, "score": 0.5}
    assert ovo["tasks"]["backward/EPM"]["score"] == 0.5
    assert {g: v["score"] for g, v in ovo["groups"].items()} == {"backward": 0.5, "forward": 0.5, "realtime": 1.0}
    assert ovo["overall"] == pytest.approx(2 / 3) and ovo["items"] == 5
    sbs = s["streamingbench"]
    assert sbs["tasks"]["realtime/Object Perception"]["score"] == 0.5
    assert sbs["groups"]["realtime"]["score"] == pytest.approx(2 / 3)
    assert sbs["groups"]["proactive"]["score"] == 0.0
    assert sbs["overall"] == 0.5
    pro = s["proactive"]
    # mean over all 3 turns: (1.075 + 0.25) / 3; per ω likewise: (0.45·2 + 0.25) / 3, (0.625·2 + 0.25) / 3
    assert pro["overall"] == pytest.approx(1.325 / 3)
    assert pro["pauc@0"] == pytest.approx(1.15 / 3) and pro["pauc@1"] == pytest.approx(1.5 / 3)
    assert pro["tasks"]["proactive/ego"]["score"] == pytest.approx(0.5375)
    assert summarize([]) == {}


def test_scored_items_summarize_end_to_end():
    items = [mc_item(id="a"), mc_item(id="b", task="realtime/OCR")]
    scores = [score_item(items[0], Response("a", ((11.0, "B"),))), score_item(items[1], Response("b", ()))]
    s = summarize(scores)["ovo"]
    assert s["groups"]["backward"]["score"] == 1.0 and s["groups"]["realtime"]["score"] == 0.0
    assert s["overall"] == 0.5
