"""COIN, GoalStep live-chat and Ego4D LTA converters: official-format fixtures -> exact records (SPEC §4)."""

import json
import random

import pytest

from livecue import cli
from livecue.data.converters import coin, goalstep, lta
from livecue.data.records import read_records, validate_record

ACT = coin.STEP_PROMPT
NEXT = coin.NEXT_PROMPT
TASK = coin.TASK_PROMPT
PROC2 = ("What is the next 2 actions for the video? Format your answer concisely, listing each action on a new line "
         "with a number prefix. No extra text output.")


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def qa(rid, video, start, n, prompt, answer, meta, fps=2.0):
    """A one-question record: prompt, n frames from video time ``start``, answer at the last frame."""
    return {"id": rid, "video": video, "fps": fps, "start": start, "duration": n / fps,
            "messages": [{"role": "user", "time": 0.0, "content": prompt},
                         {"role": "stream", "time": 0.0, "num_frames": n, "learn": True},
                         {"role": "assistant", "time": (n - 1) / fps, "content": answer, "learn": True}],
            "meta": meta}


# ---- COIN ----------------------------------------------------------------------------------------------------------
COIN_JSON = {"database": {
    "vidA": {"recipe_type": 7, "class": "MakeTea", "subset": "training", "start": 1.2, "end": 12.3, "duration": 12.0,
             "video_url": "https://www.youtube.com/embed/vidA",
             "annotation": [{"id": "1", "segment": [1.2, 3.0], "label": "boil water"},
                            {"id": "2", "segment": [3.3, 5.1], "label": "put tea bag in cup"},
                            {"id": "3", "segment": [6.0, 12.3], "label": "pour water"}]},
    "vidB": {"recipe_type": 9, "class": "ReplaceTVRemote", "subset": "testing", "start": 0.0, "end": 4.0,
             "annotation": [{"id": "4", "segment": [0.0, 2.0], "label": "process (crop, fold) paper"},
                            {"id": "5", "segment": [2.2, 4.0], "label": "put in new batteries"}]},
}}


def meta_a(*answers):
    return {"dataset": "coin", "video_uid": "vidA", "split": "train", "task": "make tea", "answers": list(answers)}


def meta_b(*answers):
    return {"dataset": "coin", "video_uid": "vidB", "split": "test", "task": "replace tv remote",
            "answers": list(answers)}


A, B = "vidA.mp4", "vidB.mp4"
COIN_EXPECTED = {
    ("coin-step", "train"): [
        qa("coin-step/vidA/0", A, 1.5, 4, ACT, "Boil water.", meta_a("boil water")),           # frames 3..6
        qa("coin-step/vidA/1", A, 3.5, 5, ACT, "Put tea bag in cup.", meta_a("put tea bag in cup")),  # 7..11
        qa("coin-step/vidA/2", A, 6.0, 13, ACT, "Pour water.", meta_a("pour water"))],      # 12..24 (end clamped)
    ("coin-next", "train"): [
        qa("coin-next/vidA/0", A, 1.5, 4, NEXT, "Put tea bag in cup.", meta_a("put tea bag in cup")),
        qa("coin-next/vidA/1", A, 3.5, 5, NEXT, "Pour water.", meta_a("pour water"))],
    ("coin-task", "train"): [
        qa("coin-task/vidA", A, 1.5, 22, TASK, "Make tea.", meta_a("make tea"))],             # frames 3..24
    ("coin-procedure", "train"): [
        qa("coin-procedure/vidA/0", A, 1.5, 4, PROC2, "1. Put tea bag in cup.\n2. Pour water.",
           meta_a("put tea bag in cup", "pour water")),
        qa("coin-procedure/vidA/1", A, 3.5, 5, NEXT, "Pour water.", meta_a("pour water"))],
    ("coin-taskprocedure", "train"): [
        qa("coin-taskprocedure/vidA/0", A, 1.5, 4, "To make tea, w" + PROC2[1:],
           "1. Put tea bag in cup.\n2. Pour water.", meta_a("put tea bag in cup", "pour water")),
        qa("coin-taskprocedure/vidA/1", A, 3.5, 5, "To make tea, w" + NEXT[1:], "Pour water.",
           meta_a("pour water"))],
    ("coin-step", "test"): [
        qa("coin-step/vidB/0", B, 0.0, 5, ACT, "Crop and fold paper.", meta_b("crop and fold paper")),
        qa("coin-step/vidB/1", B, 2.5, 4, ACT, "Put in new batteries.", meta_b("put in new batteries"))],
    ("coin-task", "test"): [
        qa("coin-task/vidB", B, 0.0, 9, TASK, "Replace tv remote.", meta_b("replace tv remote"))],
    ("coin-taskprocedure", "test"): [
        qa("coin-taskprocedure/vidB/0", B, 0.0, 5, "To replace TV remote, w" + NEXT[1:], "Put in new batteries.",
           meta_b("put in new batteries"))],
}


@pytest.mark.parametrize("kind,split", list(COIN_EXPECTED))
def test_coin_exact_records(kind, split):
    records = list(coin.coin_records(COIN_JSON["database"], kind, split=split))
    assert records == COIN_EXPECTED[kind, split]
    for i, r in enumerate(records):
        validate_record(r, i)


def test_coin_history_context_and_options():
    records = list(coin.coin_records(COIN_JSON["database"], "coin-next", context="history", learn_frames=False,
                                     video_dir="coin/videos", fps=1.0))
    # step 1 ends at 5.1 s -> frame 6; from the first step (1.2 s -> frame 2): frames 2..6
    expected = qa("coin-next/vidA/1", "coin/videos/vidA.mp4", 2.0, 5, NEXT, "Pour water.", meta_a("pour water"),
                  fps=1.0)
    expected["messages"][1]["learn"] = False
    assert records[1] == expected


def test_coin_categories_and_cleaning():
    cats = coin.coin_categories(COIN_JSON)
    assert cats == {"steps": ["boil water", "crop and fold paper", "pour water", "put in new batteries",
                              "put tea bag in cup"], "tasks": ["make tea", "replace tv remote"]}
    assert coin.coin_categories(COIN_JSON, split="test")["tasks"] == ["replace tv remote"]
    assert coin.clean_task("InstallSIMCard") == "install SIM card"
    assert coin.clean_task("ReplaceRJ45Cable") == "replace RJ45 cable"


def test_coin_cli_in_process(tmp_path):
    src = write(tmp_path / "COIN.json", COIN_JSON)
    out = tmp_path / "out" / "coin_step_train.jsonl"
    assert cli.main(["convert-data", "coin-step", "--annotations", str(src), "--out", str(out)]) == 0
    assert read_records(out) == COIN_EXPECTED["coin-step", "train"]
    out = tmp_path / "proc.jsonl"
    assert cli.main(["convert-data", "coin-taskprocedure", "--annotations", str(src), "--split", "test",
                     "--out", str(out)]) == 0
    assert read_records(out) == COIN_EXPECTED["coin-taskprocedure", "test"]


@pytest.mark.parametrize("content,error,match", [
    (None, FileNotFoundError, "COIN annotation file not found"),
    ("{not json", ValueError, "not a valid JSON file"),
    ({"videos": []}, ValueError, "'database' object"),
    ({"database": {"v": {"class": "X", "subset": "training"}}}, ValueError, r"database\['v'\]: .*'annotation'"),
    ({"database": {"v": {"class": "X", "subset": "training", "annotation": [{"segment": [1], "label": "a"}]}}},
     ValueError, r"annotation\[0\]: 'segment'"),
])
def test_coin_malformed(tmp_path, content, error, match):
    path = tmp_path / "COIN.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(error, match=match) as e:
        coin.load_coin(path)
    assert "COIN.json" in str(e.value)


def test_cli_reports_malformed_file(tmp_path, capsys):
    bad = tmp_path / "broken_coin.json"
    bad.write_text("[]")
    assert cli.main(["convert-data", "coin-step", "--annotations", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "broken_coin.json" in err and "'database'" in err


def test_coin_json_errors_name_file_and_position(tmp_path):
    path = tmp_path / "COIN.json"
    path.write_text('{"database": {\n  "v": {"class": "X",\n    "subset": training}}}')
    with pytest.raises(ValueError) as e:
        coin.load_coin(path)
    assert str(e.value) == f"{path}:3:15: not a valid JSON file (COIN annotation file): Expecting value"
    for constant in ("NaN", "Infinity", "-Infinity"):
        path.write_text('{"database": {"v": {"class": "X", "subset": "training", "annotation": '
                        f'[{{"segment": [1.0, {constant}], "label": "a"}}]}}}}}}')
        with pytest.raises(ValueError, match=f"COIN.json: not a valid JSON file .*{constant} is not a JSON number"):
            coin.load_coin(path)


def test_coin_negative_times_are_counted_and_nothing_written_says_why(tmp_path, caplog, capsys):
    data = {"database": {"v": {"class": "MakeTea", "subset": "training", "annotation": [
        {"segment": [-2.0, 3.0], "label": "boil water"}, {"segment": [-1.0, -0.5], "label": "pour"}]}}}
    src = write(tmp_path / "COIN.json", data)
    with caplog.at_level("WARNING", logger="livecue.data"):
        coin.load_coin(src)
    assert [r.getMessage() for r in caplog.records] == [f"{src}: 2 step segments with a negative time "
                                                        "(clamped to frame 0)"]
    out = tmp_path / "o.jsonl"
    assert cli.main(["convert-data", "coin-step", "--annotations", str(src), "--out", str(out)]) == 0
    assert "warning: " in capsys.readouterr().err
    assert cli.main(["convert-data", "coin-step", "--annotations", str(src), "--split", "test",
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"livecue convert-data: error: no records: 1 videos in {src}: 1 videos not in the test subset"


# ---- GoalStep ------------------------------------------------------------------------------------------------------
GOALSTEP = {"videos": [{
    "video_uid": "v1", "start_time": 0.0, "end_time": 300.0, "goal_category": "COOKING:PASTA",
    "goal_description": "make pasta ",
    "segments": [
        {"start_time": 10.2, "end_time": 50.0, "step_category": "x", "step_description": "boil water",
         "segments": [{"start_time": 10.2, "end_time": 20.0, "step_description": "fill pot", "segments": []},
                      {"start_time": 20.0, "end_time": 50.0, "step_description": "heat pot", "segments": []}]},
        {"start_time": 60.0, "end_time": 200.3, "step_description": "cook pasta", "segments": []}]}]}

GOOD = """Sure, here is the conversation:
12.3s User: How do I start?
12.3s Assistant: Fill the pot with water.
15s Assistant: ...
20.2s Assistant: Put the pot on the stove.
20.4s Assistant: Turn on the heat.
  45.7s User: What next?
45.7s Assistant: Add the pasta.
80s Assistant: Stir the pasta.
Hope this helps!"""
SECONDS = GOOD.replace("Stir the pasta.", "Stir it for 600 seconds.")
SHORT = "11s User: Hi?\n11s Assistant: Hello.\n41s Assistant: Done."
ASSISTANT_FIRST = "11s Assistant: Hello.\n20s User: Hi?\n90s Assistant: Bye."


class FakeGenerator:
    """Scripted replies in call order; remembers the prompts."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return self.replies[len(self.prompts) - 1]


def expected_good(waiting, origin):
    """GOOD on the 2 fps grid: user 12.3 -> frame 24, replies ceiled (20.2 -> 41, 20.4 overwrites it), user 45.7 ->
    frame 91, 80 -> 160; ``origin`` = video frame of record frame 0 = 24 - waiting + 1."""
    def t(frame):
        return (frame - origin) / 2

    msgs = [{"role": "stream", "time": 0.0, "num_frames": waiting, "learn": waiting - 1 or False}] if waiting else []
    msgs += [{"role": "user", "time": t(24), "content": "How do I start?"},
             {"role": "assistant", "time": t(24), "content": "Fill the pot with water.", "learn": True},
             {"role": "stream", "time": t(25), "num_frames": 17, "learn": True},
             {"role": "assistant", "time": t(41), "content": "Turn on the heat.", "learn": True},
             {"role": "stream", "time": t(42), "num_frames": 50, "learn": True},
             {"role": "user", "time": t(91), "content": "What next?"},
             {"role": "assistant", "time": t(91), "content": "Add the pasta.", "learn": True},
             {"role": "stream", "time": t(92), "num_frames": 69, "learn": True},
             {"role": "assistant", "time": t(160), "content": "Stir the pasta.", "learn": True}]
    return {"id": "goalstep/v1/goal/0", "video": "v1.mp4", "fps": 2.0, "start": origin / 2,
            "duration": (waiting + 136) / 2, "messages": msgs,
            "meta": {"dataset": "ego4d-goalstep", "video_uid": "v1", "activity": "make pasta", "generation": 0}}


def test_goalstep_parse_and_filters():
    turns = goalstep.parse_conversation(GOOD)
    assert turns[:2] == [{"role": "user", "content": "How do I start?", "time": 12.3},
                         {"role": "assistant", "content": "Fill the pot with water.", "time": 12.3}]
    assert len(turns) == 7 and turns[4] == {"role": "user", "content": "What next?", "time": 45.7}
    assert goalstep.rejection(turns) is None
    assert goalstep.rejection(goalstep.parse_conversation(SECONDS)) == "mentions seconds"
    assert goalstep.rejection(goalstep.parse_conversation(GOOD.replace("the pasta.", "it at 75s."))) \
        == "mentions seconds"
    assert goalstep.rejection(goalstep.parse_conversation(SHORT)) == "spans 30 s"
    assert goalstep.rejection(goalstep.parse_conversation("0s User: a\n3700s Assistant: b")) == "spans 3700 s"
    assert goalstep.rejection([]) == "empty"


def test_goalstep_activities_and_prompt():
    acts = goalstep.activities(GOALSTEP["videos"])
    assert [(a["id"], a["summary"], a["duration"]) for a in acts] == [("v1/goal", "make pasta", 300.0),
                                                                        ("v1/step0", "boil water", 300.0)]
    assert acts[0]["steps"] == [(10.2, 50.0, "boil water"), (60.0, 200.3, "cook pasta")]
    times = goalstep.step_times(acts[0]["steps"], 2.0, 300.0)
    assert times == [10.5, 50.0, 60.0, 200.5]
    prompt = goalstep.build_prompt(acts[0]["steps"], times, random.Random(0))
    head = (goalstep.OPENING + "\n\n10.20s-50.00s: boil water\n60.00s-200.30s: cook pasta\n\n"
            + goalstep.INSTRUCTION + "\n\n")
    assert prompt.startswith(head)
    lines = prompt[len(head):].split("\n")
    users = [line for line in lines if " User: " in line]
    assert len(users) == 3 and all(goalstep.LINE.match(line) for line in lines)
    assert [line.split("User: ")[1] in goalstep.QUERIES for line in users] == [True] * 3
    user_times = [float(line.split("s ")[0]) for line in users]
    assert user_times == sorted(user_times) and 10.5 <= user_times[0] and user_times[-1] <= 200.5
    replies = [float(line.split("s ")[0]) for line in lines if line.endswith("Assistant: ...")]
    assert set(replies) == set(user_times) | {t for t in times if t >= user_times[0]}
    assert prompt == goalstep.build_prompt(acts[0]["steps"], times, random.Random(0))  # seeded


def test_goalstep_exact_records_and_cache(tmp_path):
    acts = goalstep.activities(GOALSTEP["videos"])
    fake = FakeGenerator([GOOD, SECONDS, SHORT, ASSISTANT_FIRST])
    cache = goalstep.GenerationCache(tmp_path / "gen.json")
    records = list(goalstep.goalstep_records(acts, fake, max_waiting_frames=0, cache=cache))
    assert records == [expected_good(0, 25)]  # the user turn and its reply precede frame 0 (time -0.5)
    assert len(fake.prompts) == 4 and "fill pot" in fake.prompts[2] and "fill pot" not in fake.prompts[0]
    validate_record(records[0])
    # a rerun reads every generation from the cache (no generator needed)
    again = list(goalstep.goalstep_records(acts, None, max_waiting_frames=0,
                                           cache=goalstep.GenerationCache(tmp_path / "gen.json")))
    assert again == records
    with pytest.raises(ValueError, match="no generation cached"):
        list(goalstep.goalstep_records(acts, None, seed=1))


def test_goalstep_waiting_frames_seeded(tmp_path):
    acts = goalstep.activities(GOALSTEP["videos"])[:1]
    records = list(goalstep.goalstep_records(acts, FakeGenerator([GOOD, SHORT]), seed=0))
    assert records == [expected_good(13, 12)]  # seed 0 draws 13 waiting frames: video frames 12..24
    validate_record(records[0])
    waits = {next(iter(goalstep.goalstep_records(acts, FakeGenerator([GOOD, SHORT]), seed=s)))["messages"][0]
             .get("num_frames", 0) for s in range(12)}
    assert len(waits) > 1 and all(0 <= w <= 20 for w in waits)


def test_goalstep_turn_order_rules():
    rec = goalstep.conversation_record(
        [{"role": "user", "content": "a", "time": 3.2}, {"role": "assistant", "content": "b", "time": 4.0},
         {"role": "user", "content": "c", "time": 4.0}, {"role": "assistant", "content": "d", "time": 9.0}],
        rid="x", video="v.mp4", duration=100.0, fps=2.0, rng=random.Random(0), max_waiting_frames=0)
    assert [m["role"] for m in rec["messages"]] == ["user", "stream", "assistant"]  # user at the same time: stop
    assert goalstep.conversation_record([{"role": "user", "content": "a", "time": 0.0}], rid="x", video="v",
                                        duration=9.0, fps=2.0, rng=random.Random(0)) is None
    clamped = goalstep.conversation_record(
        [{"role": "user", "content": "a", "time": 1.0}, {"role": "assistant", "content": "b", "time": 4.9},
         {"role": "assistant", "content": "c", "time": 7.0}],
        rid="x", video="v", duration=4.9, fps=2.0, rng=random.Random(0), max_waiting_frames=0)
    assert clamped["messages"][-1] == {"role": "assistant", "time": 3.0, "content": "b", "learn": True}
    validate_record(clamped)


def test_goalstep_cli_from_cache(tmp_path):
    src = write(tmp_path / "goalstep_val.json", GOALSTEP)
    acts = goalstep.activities(GOALSTEP["videos"])
    cache = goalstep.GenerationCache(tmp_path / "gen.json")
    list(goalstep.goalstep_records(acts, FakeGenerator([GOOD, SECONDS, SHORT, ASSISTANT_FIRST]), cache=cache))
    out = tmp_path / "chat.jsonl"
    assert cli.main(["convert-data", "goalstep", "--annotations", str(src), "--cache", str(tmp_path / "gen.json"),
                     "--generator", "/nonexistent/model", "--out", str(out)]) == 0
    assert read_records(out) == [expected_good(13, 12)]


def test_goalstep_cli_prints_filter_counts(tmp_path, capsys):
    src = write(tmp_path / "goalstep_val.json", GOALSTEP)
    acts = goalstep.activities(GOALSTEP["videos"])
    cache = goalstep.GenerationCache(tmp_path / "gen.json")
    list(goalstep.goalstep_records(acts, FakeGenerator([GOOD, SECONDS, SHORT, ASSISTANT_FIRST]), cache=cache))
    argv = ["convert-data", "goalstep", "--annotations", str(src), "--cache", str(tmp_path / "gen.json"),
            "--generator", "/nonexistent/model", "--out", str(tmp_path / "chat.jsonl")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert ("GoalStep live chat: 4 conversations: 1 kept; filtered: 1 mentions seconds, 1 spans < 60 s, "
            "1 unusable turn order") in err.splitlines()


def test_goalstep_zero_records_says_why(tmp_path, capsys):
    acts = goalstep.activities(GOALSTEP["videos"])
    cache = goalstep.GenerationCache(tmp_path / "gen.json")
    list(goalstep.goalstep_records(acts, FakeGenerator([SHORT, SECONDS, SHORT, ASSISTANT_FIRST]), cache=cache))
    src = write(tmp_path / "goalstep_val.json", GOALSTEP)
    out = tmp_path / "chat.jsonl"
    assert cli.main(["convert-data", "goalstep", "--annotations", str(src), "--cache", str(tmp_path / "gen.json"),
                     "--generator", "/nonexistent/model", "--out", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert errors == ["livecue convert-data: error: no records: every generated conversation was filtered out "
                      "(4 conversations: 0 kept; filtered: 2 spans < 60 s, 1 mentions seconds, 1 unusable turn order)"]
    assert not out.exists()
    no_steps = write(tmp_path / "no_steps.json", {"videos": [dict(GOALSTEP["videos"][0], segments=[])]})
    assert cli.main(["convert-data", "goalstep", "--annotations", str(no_steps), "--out", str(out)]) == 1
    assert f"no records: the 1 videos of {no_steps} have no steps" in capsys.readouterr().err


def test_goalstep_times_must_be_finite_and_negative_ones_are_counted(tmp_path, caplog):
    video = dict(GOALSTEP["videos"][0], segments=[dict(GOALSTEP["videos"][0]["segments"][1], start_time=-3.0)])
    with caplog.at_level("WARNING", logger="livecue.data"):
        goalstep.load_goalstep(write(tmp_path / "g.json", {"videos": [video]}))
    assert caplog.records[-1].getMessage().endswith("g.json: 1 segments with a negative time (clamped to frame 0)")
    bad = write(tmp_path / "g.json", {"videos": [dict(video, end_time="late")]})
    with pytest.raises(ValueError, match=r"g.json: videos\[0\]: missing or malformed 'end_time' \(seconds, a finite "
                                         r"number\), got 'late'"):
        goalstep.load_goalstep(bad)
    (tmp_path / "g.json").write_text('{"videos": [{"start_time": 1e999}]}')  # JSON reads 1e999 as inf
    with pytest.raises(ValueError, match="missing or malformed 'start_time'"):
        goalstep.load_goalstep(tmp_path / "g.json")


@pytest.mark.parametrize("data,match", [
    ({"clips": []}, r"'videos' list"),
    ({"videos": [{"video_uid": "v", "start_time": 0, "end_time": 9}]}, r"videos\[0\]: .*'goal_description'"),
    ({"videos": [{"video_uid": "v", "start_time": 0, "end_time": 9, "goal_description": "g",
                  "segments": [{"start_time": 0, "end_time": 1}]}]}, r"videos\[0\]\.segments\[0\]: .*step_desc"),
])
def test_goalstep_malformed(tmp_path, data, match):
    path = write(tmp_path / "goalstep_train.json", data)
    with pytest.raises(ValueError, match=match) as e:
        goalstep.load_goalstep(path)
    assert "goalstep_train.json" in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        goalstep.load_goalstep(tmp_path / "missing.json")


# ---- LTA -----------------------------------------------------------------------------------------------------------
TAXONOMY = {"verbs": ["take_(pick,_grab,_get)", "cut_(slice,_chop)", "turn_on_(device)", "put_(place,_leave,_drop)"],
            "nouns": ["knife", "tomato", "bat_(sports)", "pot_(planter)"]}


def action(clip, k, video="vid1", parent=100.0):
    return {"clip_uid": clip, "video_uid": video, "clip_id": 3, "action_idx": k, "clip_parent_start_sec": parent,
            "clip_parent_end_sec": parent + 60.0, "clip_parent_start_frame": int(parent * 30),
            "action_clip_start_sec": 2.0 * k + 0.3, "action_clip_end_sec": 2.0 * k + 1.6,
            "action_clip_start_frame": 0, "action_clip_end_frame": 0, "verb": "v", "noun": "n",
            "verb_label": k % 4, "noun_label": (k // 2) % 4}


LTA_JSON = {"version": "v1", "split": "train",
            "clips": [action("c1", k) for k in reversed(range(29))] + [action("c2", k, "vid2") for k in range(5)]}
EIGHT = ["Take knife.", "Cut knife.", "Turn on tomato.", "Put tomato.", "Take sport bat.", "Cut sport bat.",
         "Turn on flowerpot.", "Put flowerpot."]
LTA_PROMPT = ("After 31 video frames, anticipate the next 20 actions. Format your answer concisely, listing each "
              "action on a new line with a number prefix. No extra text output.")


def lta_expected(last, start, video="vid1.mp4"):
    """Window ending at observed action ``last``: the 20 actions after it, as lines and labels."""
    future = range(last + 1, last + 21)
    answer = "\n".join(f"{i + 1}. {EIGHT[k % 8]}" for i, k in enumerate(future))
    return qa(f"lta/c1/{last}", video, start, 31, LTA_PROMPT, answer,
              {"dataset": "ego4d-lta", "clip_uid": "c1", "video_uid": "vid1", "last_visible_action_idx": last,
               "verb_labels": [k % 4 for k in future], "noun_labels": [(k // 2) % 4 for k in future]})


def test_lta_exact_records(tmp_path):
    tax = lta.lta_taxonomy(write(tmp_path / "fho_lta_taxonomy.json", TAXONOMY))
    assert tax["verbs"] == ["take", "cut", "turn on", "put"]
    assert tax["nouns"] == ["knife", "tomato", "sport bat", "flowerpot"]
    clips = lta.load_lta(write(tmp_path / "fho_lta_train.json", LTA_JSON), tax)
    records = list(lta.lta_records(clips, tax))
    # window 0: 100.3 s -> frame 201 (100.5 s) .. 115.6 s -> frame 231; window 1: 102.3 -> 205 .. 117.6 -> 235
    assert records == [lta_expected(7, 100.5), lta_expected(8, 102.5)]
    assert records[0]["messages"][2]["content"].split("\n")[:3] == ["1. Take knife.", "2. Cut knife.",
                                                                   "3. Turn on tomato."]
    for r in records:
        validate_record(r)
    # clip-relative: 0.3 s -> frame 1 (0.5 s)
    by_clip = list(lta.lta_records(clips, tax, video_key="clip", video_dir="clips"))
    assert by_clip[0] == lta_expected(7, 0.5, video="clips/c1.mp4")


def test_lta_cli_in_process(tmp_path):
    tax = write(tmp_path / "fho_lta_taxonomy.json", TAXONOMY)
    src = write(tmp_path / "fho_lta_val.json", LTA_JSON)
    out = tmp_path / "lta.jsonl"
    assert cli.main(["convert-data", "lta", "--annotations", str(src), "--taxonomy", str(tax),
                     "--out", str(out)]) == 0
    assert read_records(out) == [lta_expected(7, 100.5), lta_expected(8, 102.5)]


def test_lta_malformed(tmp_path):
    tax = lta.lta_taxonomy(write(tmp_path / "fho_lta_taxonomy.json", TAXONOMY))
    bad = dict(LTA_JSON, clips=[dict(a) for a in LTA_JSON["clips"]])
    del bad["clips"][3]["verb_label"]
    with pytest.raises(ValueError, match=r"fho_lta_train.json: clips\[3\]: .*'verb_label'"):
        lta.load_lta(write(tmp_path / "fho_lta_train.json", bad), tax)
    bad["clips"][3]["verb_label"] = 99
    with pytest.raises(ValueError, match=r"clips\[3\]: verb_label 99 .* outside the taxonomy"):
        lta.load_lta(write(tmp_path / "fho_lta_train.json", bad), tax)
    with pytest.raises(ValueError, match="fho_lta_taxonomy.json: expected an object with 'verbs'"):
        lta.lta_taxonomy(write(tmp_path / "fho_lta_taxonomy.json", {"verbs": "take"}))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        lta.load_lta(tmp_path / "nope.json")


def test_lta_zero_records_says_why(tmp_path, capsys):
    tax = write(tmp_path / "fho_lta_taxonomy.json", TAXONOMY)
    src = write(tmp_path / "fho_lta_val.json", {"clips": [action("c2", k) for k in range(5)]})
    assert cli.main(["convert-data", "lta", "--annotations", str(src), "--taxonomy", str(tax),
                     "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"livecue convert-data: error: no records: 5 actions in {src}; skipped: 1 clips with fewer "
                   "than 28 actions")
    broken = tmp_path / "fho_lta_train.json"
    broken.write_text('{"clips": [\n  {"clip_uid": "c",, }]}')
    with pytest.raises(ValueError, match=r"fho_lta_train.json:2:20: not a valid JSON file \(LTA annotation file\)"):
        lta.load_lta(broken)
