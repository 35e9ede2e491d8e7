"""Every evaluation metric against hand-worked values (SPEC §7 and livecue's free-running / calibration rules)."""

import math
import random

import pytest
import torch

from livecue.eval import metrics as M
from livecue.eval import textmetrics as X
from livecue.eval.calibrate import recommend

# ---- a hand-built teacher-forced forward --------------------------------------------------------------------------
BOS, EOS, SIL, SPK, V, A, X_ = 0, 1, 3, 4, 5, 6, 7
VOCAB = 8
IDS = [BOS, V, V, SIL, V, V, SPK, A, X_, EOS,  # turn 0: 2 frames, reply "A x <eos>"
       V, V, SIL, V, V, SPK, A, X_, EOS,       # turn 1: 2 frames, reply
       V, V]                                   # a trailing frame: no turn
LABELS = {2: SIL, 5: SPK, 6: A, 7: X_, 8: EOS, 11: SIL, 14: SPK, 15: A, 16: X_, 17: EOS, 20: SIL}
PROBS = {2: {SIL: 0.9}, 5: {SPK: 0.7, SIL: 0.2}, 6: {A: 0.5}, 7: {X_: 0.25}, 8: {EOS: 0.125, A: 0.5},
         11: {SPK: 0.55, SIL: 0.4}, 14: {SPK: 0.9, SIL: 0.05}, 15: {A: 0.5}, 16: {X_: 0.5}, 17: {EOS: 0.5},
         20: {SIL: 0.99}}


def _row(dist, vocab=VOCAB):
    rest = (1 - sum(dist.values())) / (vocab - len(dist))
    return torch.tensor([math.log(dist.get(i, rest)) for i in range(vocab)])


@pytest.fixture
def turns():
    ids = torch.tensor(IDS)
    labels = torch.full_like(ids, -100)
    for t, y in LABELS.items():
        labels[t] = y
    logits = torch.stack([_row(PROBS.get(t, {})) for t in range(len(IDS))])
    return M.extract_turns(ids, labels, logits, v_id=V, eos_id=EOS, silence_id=SIL, frame_num_tokens=2)


def test_extract_turns(turns):
    assert len(turns) == 2  # the trailing frame after the last eos belongs to no turn
    t0, t1 = turns
    assert (t0.num_frames, t0.first_frame, t1.num_frames, t1.first_frame) == (2, 0, 2, 2)
    assert [round(s.p_silence, 6) for s in t0.stream] == [0.9, 0.2]
    assert [s.argmax_silence for s in t0.stream] == [True, False]
    assert t0.gold_speak and t1.gold_speak and t0.last_stream_pos == 5 and t1.last_stream_pos == 14
    assert t0.lm_correct == [True, True, False] and t1.lm_correct == [True, True, True]
    assert t0.lm_ce == pytest.approx([math.log(2), 2 * math.log(2), 3 * math.log(2)])


def test_extract_turns_of_a_chat_format(turns):
    """A chat format: frames end with a suffix token (the decision is read there), and the end token also closes
    user turns, so the turns end at the replies' end tokens only (given by the dataset). Same forward as above."""
    END, U = 8, 9
    frame = [V, V, END]
    ids = ([BOS, U, EOS] + frame + [SIL] + frame + [SPK, A, X_, EOS]  # a user turn, then turn 0
           + frame + [SIL] + frame + [SPK, A, X_, EOS] + frame)       # turn 1, a trailing frame
    moved = {2: 5, 5: 9, 6: 10, 7: 11, 8: 12, 11: 16, 14: 20, 15: 21, 16: 22, 17: 23, 20: 27}  # LIVE -> chat position
    labels = torch.full((len(ids),), -100)
    for t, y in LABELS.items():
        labels[moved[t]] = y
    logits = torch.stack([_row(PROBS.get(next((a for a, b in moved.items() if b == t), -1), {}), 10)
                          for t in range(len(ids))])
    chat = M.extract_turns(torch.tensor(ids), labels, logits, v_id=V, eos_id=EOS, silence_id=SIL,
                           frame_num_tokens=2, frame_end_id=END, turn_ends=[13, 24])
    assert len(chat) == 2 and [t.last_stream_pos for t in chat] == [9, 20]
    for got, want in zip(chat, turns):
        assert (got.num_frames, got.first_frame, got.gold_speak) == (want.num_frames, want.first_frame, want.gold_speak)
        assert [s.p_silence for s in got.stream] == pytest.approx([s.p_silence for s in want.stream])
        assert [s.argmax_silence for s in got.stream] == [s.argmax_silence for s in want.stream]
        assert got.lm_ce == pytest.approx(want.lm_ce)
        assert got.lm_correct == want.lm_correct
    # cut at every end token, the user turn would count as a turn of its own
    assert len(M.extract_turns(torch.tensor(ids), labels, logits, v_id=V, eos_id=EOS, silence_id=SIL,
                               frame_num_tokens=2, frame_end_id=END)) == 3


def test_turn_and_sample_metrics_hand_worked(turns):
    t0 = M.turn_metrics(turns[0], 0.5, last_turn=False, next_turn_frames=2)
    assert t0.ppl == pytest.approx(4.0) and t0.correctness == pytest.approx(2 / 3)
    assert t0.diff == 0 and t0.fluency == pytest.approx((2 + 2) / 5)  # on time: (V + c) / T
    t1 = M.turn_metrics(turns[1], 0.5, last_turn=True, next_turn_frames=0)
    assert t1.ppl == pytest.approx(2.0) and t1.correctness == 1.0
    assert t1.diff == 1 and t1.fluency == pytest.approx((2 - 1) / 5)  # spoke 1 frame early: (V − diff) / T
    s = M.sample_metrics(turns, 0.5, fps=2.0)
    assert s.lm_ppl == pytest.approx(3.0) and s.lm_correctness == pytest.approx(5 / 6)
    assert s.frame_diff == pytest.approx(0.5) and s.time_diff == pytest.approx(0.25)
    assert s.fluency == pytest.approx(0.5) and s.diffs == [0, 1] and s.turns == 2
    assert M.decision_counts(turns, 0.5) == (2, 1, 0)


def test_threshold_changes_decisions(turns):
    # p(silence) = 0.9 at turn 0's first frame: silent at θ = 0.5, speaks at θ = 0.95 (one frame early)
    s = M.sample_metrics(turns, 0.95, fps=2.0)
    assert s.diffs == [1, 1] and s.fluency == pytest.approx(0.2)
    # θ = 0 is the plain argmax rule; the argmax clause speaks even when p(silence) ≥ θ
    assert M.speaks(M.StreamScore(0.6, True), 0.5) is False
    assert M.speaks(M.StreamScore(0.6, True), 0.7) is True
    assert M.speaks(M.StreamScore(0.3, False), 0.1) is True  # argmax ≠ silence: speak (engine rule: silent)
    assert M.speaks(M.StreamScore(0.3, False), 0.0) is True


def _turn(p_sil, gold_speak=True, frames=None, lm=2, correct=None):
    stream = [M.StreamScore(p, p >= 0.5) for p in p_sil]
    return M.TurnScores(index=0, lm_ce=[0.0] * lm, lm_correct=correct or [True] * lm, stream=stream,
                        gold_speak=gold_speak, num_frames=frames or len(p_sil), last_stream_pos=0)


def test_frame_diff_early_on_time_late_never():
    th = 0.5
    assert M.frame_diff(_turn([0.9, 0.9, 0.1]), th, last_turn=False, m=2) == 0           # on time
    assert M.frame_diff(_turn([0.9, 0.1, 0.9, 0.9]), th, last_turn=False, m=2) == 2      # early: S − j* − 1
    late = _turn([0.9, 0.9, 0.9])
    m = M.look_ahead_frames(3, 4)
    assert m == 2  # min(next turn frames, N_f − 1)
    assert M.frame_diff(late, th, last_turn=False, m=m, future=[M.StreamScore(0.9, True),
                                                                M.StreamScore(0.2, False)]) == -2
    assert M.frame_diff(late, th, last_turn=False, m=m, future=[M.StreamScore(0.1, False)] * 2) == -1
    assert M.frame_diff(late, th, last_turn=False, m=m, future=[M.StreamScore(0.9, True)] * 2) == -2  # never: −m
    assert M.frame_diff(late, th, last_turn=True, m=m) == 0                              # last turn
    assert M.frame_diff(late, th, last_turn=False, m=0) == 0                             # m = 0
    assert M.look_ahead_frames(1, 5) == 0
    with pytest.raises(ValueError, match="look-ahead"):
        M.frame_diff(late, th, last_turn=False, m=2)
    # the callback runs the model only when the late rule needs it
    calls = []

    def cb(k):
        calls.append(k)
        return [M.StreamScore(0.9, True), M.StreamScore(0.1, False)]

    assert M.frame_diff(_turn([0.1, 0.9]), th, last_turn=False, m=2, future=cb) == 1 and calls == []
    assert M.frame_diff(late, th, last_turn=False, m=2, future=cb) == -2 and calls == [2]
    # late fluency: (V − 1) / T; V = 3, T = 2 + 3
    tm = M.turn_metrics(late, th, last_turn=False, next_turn_frames=4, future=[M.StreamScore(0.1, False)] * 2)
    assert tm.diff == -1 and tm.fluency == pytest.approx((3 - 1) / 5)


def test_query_turn_and_defaults():
    q = _turn([0.9, 0.9, 0.9], gold_speak=False)
    assert M.frame_diff(q, 0.5, last_turn=False, m=2) == 0                       # silent until the query: on time
    assert M.frame_diff(_turn([0.9, 0.2, 0.9], gold_speak=False), 0.5, last_turn=False, m=2) == 2  # S − j*
    s = M.sample_metrics([], 0.5, fps=2.0)
    assert (s.lm_ppl, s.time_diff, s.fluency, s.lm_correctness) == (1.0, 0.0, 1.0, 1.0)
    assert M.lm_correctness([True, False, True]) == pytest.approx(1 / 3)
    assert M.fluency(0, 4, 6, 3) == pytest.approx(0.7) and M.fluency(-3, 4, 6, 3) == pytest.approx(0.3)


def test_sample_metrics_look_ahead_mapping_and_callback():
    t0 = _turn([0.9, 0.9, 0.9], frames=3)
    t1 = M.TurnScores(index=1, lm_ce=[0.0], lm_correct=[True], stream=[M.StreamScore(0.1, False)],
                      gold_speak=True, num_frames=4)
    turns = [t0, t1]
    assert M.look_ahead_requests(turns, [0.5]) == {0: 2}
    assert M.look_ahead_requests(turns, [0.95]) == {}
    fut = {0: [M.StreamScore(0.9, True), M.StreamScore(0.2, False)]}
    s = M.sample_metrics(turns, 0.5, fps=2.0, future=fut)
    assert s.diffs == [-2, 0] and s.late_turns == 1 and s.time_diff == pytest.approx(0.5)
    s2 = M.sample_metrics(turns, 0.5, fps=2.0, future=lambda r, m: fut[r][:m])
    assert s2.diffs == [-2, 0]
    means = M.mean_metrics([s, M.sample_metrics([], 0.5, 2.0)])
    assert means["time_diff"] == pytest.approx(0.25) and means["samples"] == 2


# ---- Levenshtein, COIN, Procedure ------------------------------------------------------------------------------
def test_levenshtein_and_vectorised_matcher():
    assert X.levenshtein("kitten", "sitting") == 3 and X.levenshtein("", "abc") == 3
    assert X.levenshtein([1, 2, 3], [1, 3]) == 1
    rng = random.Random(0)
    words = ["".join(rng.choice("abcd ") for _ in range(rng.randint(0, 9))) for _ in range(40)]
    m = X.NearestMatcher(words)
    for q in ["", "abc", "dd a", "cabbage"]:
        assert m.distances(q).tolist() == [X.levenshtein(q, w) for w in words]


def test_coin_fuzzy_match():
    cats = X.Categories(["Cut the onion.", "Boil water.", "Open the lid."])
    assert cats.names == ["cut the onion", "boil water", "open the lid"]
    assert X.coin_correct("Cut the onion.", "Cut the onion.", cats)        # exact after normalisation
    assert X.coin_correct("cut the onin", "Cut the onion.", cats)          # nearest category is the label
    assert not X.coin_correct("boil the water.", "Cut the onion.", cats)   # nearest is "boil water"
    assert X.coin_correct("Something new", "something new", cats)          # equal to the label, not a category
    assert X.Categories(["ab", "ac"]).nearest("a") == "ab"                 # ties: list order


def test_procedure_missing_lines_are_wrong():
    cats = X.Categories(["Cut the onion.", "Boil water.", "Open the lid."])
    gold = X.procedure_steps("1. Cut the onion.\n2. Boil water.\n3. Open the lid.")
    assert gold == ["cut the onion", "boil water", "open the lid"]
    flags = X.procedure_correct("1. Cut the onion.\n\n2. Open the lid.", gold, cats)
    assert flags == [True, False, False]  # line 2 wrong, line 3 missing (upstream's zip would score 1/2)
    assert X.procedure_correct("1. Cut the onon.\n2. Boil water.\n3. Open the lid.\n4. Extra.", gold, cats) == \
        [True, True, True]


# ---- LTA ------------------------------------------------------------------------------------------------------
def test_lta_parse_and_taxonomy():
    tax = X.Taxonomy(["take", "put", "cut"], ["knife", "cup", "onion"])
    assert X.parse_actions("1. Take knife.\nnoise\n2. Put cup.\nStep 3. cutt onion") == \
        ["take knife", "put cup", "cutt onion"]
    assert tax.parse("1. Take knife.\n2. Put cup.\n3. Cutt onion.", 5) == [(0, 0), (1, 1), (2, 2), (2, 2), (2, 2)]
    assert tax.parse("no numbered line", 2) == [(0, 0), (0, 0)]  # most common action (the first pair)
    assert tax.to_ids("tak cup") == (0, 1)


def test_lta_ed_at_z_with_beams_and_aued():
    gold = [[0, 1, 2, 0]]
    one_beam = [[[0, 1, 2, 2]]]
    assert X.ed_at_z(one_beam, gold, 4) == pytest.approx(0.25)
    assert [X.ed_at_z(one_beam, gold, z) for z in (1, 2, 3)] == [0, 0, 0]
    # AUED = trapezoid(0, 0, 0, 0.25) / (4 − 1)
    assert X.aued(one_beam, gold, 4) == pytest.approx(0.125 / 3)
    # K beams: the best beam counts per sample
    two = [[[3, 3, 3, 3], [0, 1, 2, 0]], [[0, 0, 1, 1], [1, 1, 1, 1]]]
    golds = [[0, 1, 2, 0], [1, 1, 0, 0]]
    # sample 1: beam 2 is exact -> 0; sample 2: beam 1 needs 4 edits, beam 2 two substitutions -> 2 / 4
    assert X.levenshtein([0, 0, 1, 1], [1, 1, 0, 0]) == 4 and X.levenshtein([1, 1, 1, 1], [1, 1, 0, 0]) == 2
    assert X.ed_at_z(two, golds, 4) == pytest.approx((0 + 0.5) / 2)
    scores = X.lta_scores([[[(0, 1), (1, 1)], [(0, 0), (1, 2)]]], [[(0, 1), (1, 2)]], z_max=2)
    # verbs: beam 1 exact -> 0; nouns: [1,1] vs [1,2] -> 0.5, [0,2] -> 0.5; actions: each beam 1 wrong -> 0.5
    assert scores["verb_ed@2"] == 0 and scores["noun_ed@2"] == pytest.approx(0.5)
    assert scores["action_ed@2"] == pytest.approx(0.5)
    assert scores["action_aued"] == pytest.approx((0.0 + 0.5) / 2)  # ED@1 = 0 (beam 1), ED@2 = 0.5


# ---- free-running timing and calibration ----------------------------------------------------------------------
def test_match_times_and_prf():
    pairs = X.match_times([2, 5, 9], [3, 5, 12], tolerance=1)
    assert pairs == [(0, 0), (1, 1)]
    p = X.prf(3, 3, len(pairs))
    assert (p.precision, p.recall) == pytest.approx((2 / 3, 2 / 3)) and p.f1 == pytest.approx(2 / 3)
    assert X.match_times([4], [3, 5], tolerance=1) == [(0, 0)]  # tie: the earlier reference
    assert X.match_times([4, 5], [3, 5], tolerance=1) == [(0, 0), (1, 1)]  # closest pair first, one-to-one
    assert X.prf(0, 0, 0).f1 == 1.0 and X.prf(0, 2, 0).f1 == 0.0 and X.prf(2, 0, 0).f1 == 0.0


def test_nearest_time_diffs():
    # refs 3, 5, 12 in 20 frames; caps: max(1, min(gap_next, gap_prev − 1)) = 2, 1, 6
    assert X.nearest_time_diffs([2, 5, 9], [3, 5, 12], 20) == [1, 0, 3]
    assert X.nearest_time_diffs([], [3, 5, 12], 20) == [2, 1, 6]
    assert X.nearest_time_diffs([19], [3], 20) == [3]  # a reply 16 frames late counts as the cap (3)
    assert X.nearest_time_diffs([4], [], 20) == []
    assert X.normalize_text("  The Red square  appears. ") == "the red square appears"


def test_recommend_rule():
    rows = [{"threshold": 0.3, "speak_f1": 0.5, "fluency": 0.2, "time_diff": 1.0},
            {"threshold": 0.5, "speak_f1": 0.6, "fluency": 0.1, "time_diff": 2.0},
            {"threshold": 0.7, "speak_f1": 0.6, "fluency": 0.3, "time_diff": 2.0}]
    assert recommend(rows, current=0.725) == 0.7           # max F1, ties → higher Fluency
    rows[1]["fluency"] = 0.3
    assert recommend(rows, current=0.725) == 0.7           # then TimeDiff (equal), then nearest current θ
    assert recommend(rows, current=0.4) == 0.5
    for r, f in zip(rows, (0.9, 0.1, 0.1)):
        r["free_f1"] = f
    assert recommend(rows, current=0.725) == 0.3           # the free-running F1 wins when swept
