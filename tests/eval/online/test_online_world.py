"""The world written as each online benchmark: every sub-task the world can answer is written in the benchmark's own
format and read back by ``load_items``; every answer is checked against the world's ground truth re-simulated here
(states and events, by this file's own reading of them, not the generator's), with exactly one option true; the same
seed writes the same files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from livecue.data.world import WorldConfig, simulate_stream, stream_seed
from livecue.eval.online.formats import OVO_GROUPS, SB_GROUPS, SQA_CONTEXT, SQA_QUESTION, load_items
from livecue.eval.online.world import world_to_benchmark

CFG = WorldConfig(question_rate=4.0, resolution=32, duration=16.0, max_objects=4, max_initial_objects=3)
SEED, N = 2, 3
FPS = CFG.fps
OVO_TASKS = {f"{OVO_GROUPS[t]}/{t}" for t in ("EPM", "ASI", "HLD", "STU", "OJR", "ATR", "ACR", "FPD", "REC", "SSR",
                                             "CRR")}
SB_TASKS = {f"{SB_GROUPS[t]}/{t}" for t in (
    "Object Perception", "Attribute Perception", "Event Understanding", "Prospective Reasoning",
    "Spatial Understanding", "Action Perception", "Counting", "Clips Summarize", "Scene Understanding",
    "Misleading Context Understanding", "Sequential Question Answering", "Proactive Output")}
SB_FILE = {"realtime": "questions_real", "omni": "questions_omni", "proactive": "questions_proactive"}
NUMBERS = ["None.", "One.", "Two.", "Three.", "Four.", "Five."]
PLACES = [["in the top left", "at the top", "in the top right"], ["on the left", "in the centre", "on the right"],
          ["in the bottom left", "at the bottom", "in the bottom right"]]
NEVER, NO_CHANGE = "It never appeared in the video.", "It did not change colour."
NOW_TASKS = ("OJR", "ACR", "Object Perception", "Event Understanding", "Action Perception", "Clips Summarize",
             "Scene Understanding", "Sequential Question Answering")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {b: (root / b, world_to_benchmark(root / b, b, N, SEED, CFG, video_format="npy"))
            for b in ("ovo", "streamingbench", "proactive")}


@pytest.fixture(scope="module")
def stories():
    return [simulate_stream(CFG, stream_seed(SEED, "test", i)) for i in range(N)]


# ---- the ground truth, read here from states and events ------------------------------------------------------------
def place(o):
    return PLACES[min(2, int(o.y * 3 / CFG.grid))][min(2, int(o.x * 3 / CFG.grid))]


def named(state, name):
    return next((o for o in state if o.name == name), None)


def change(a, b):
    """The option saying how object state ``a`` became ``b`` (None: unchanged)."""
    if b.x != a.x or b.y != a.y:
        dx, dy = b.x - a.x, b.y - a.y
        return f"It moved {'left' if dx < 0 else 'right' if dx > 0 else 'up' if dy < 0 else 'down'}."
    return None if a.size == b.size else "It grew." if b.size == "large" else "It shrank."


def latest_change(states, k):
    """The frames ``(s, e)`` of the last run of consecutive scene changes up to frame ``k``."""
    e = max(j for j in range(1, k + 1) if states[j] != states[j - 1])
    s = e
    while s > 1 and states[s - 1] != states[s - 2]:
        s -= 1
    return s, e


def turned(states, name):
    """The colours the object ``name`` turned into (same shape, size and place, the next frame)."""
    out = set()
    for j in range(1, len(states)):
        a = named(states[j - 1], name)
        if a is not None and named(states[j], name) is None:
            out |= {o.colour for o in states[j] if (o.shape, o.size, o.x, o.y) == (a.shape, a.size, a.x, a.y)
                    and named(states[j - 1], o.name) is None}
    return out


def made_by_colour(states, name):
    return any(name in turned(states, o.name) or any(f"{c} {o.shape}" == name for c in turned(states, o.name))
               for s in states for o in s)


def true_options(task, item, story):
    """The options true of the world at the item's question (each judged on its own)."""
    states, events = story.states, story.events
    k = int(item.ask_time * FPS + 1e-6)
    now, q = states[k], item.question
    if task in ("ATR", "Attribute Perception") or (task == "Sequential Question Answering" and q.startswith("What")):
        (o,) = [o for o in now if o.shape == re.fullmatch(r"What colour is the (\w+)\?", q)[1]]
        return {f"{o.colour.capitalize()}."}
    if task in ("STU", "Spatial Understanding"):
        return {place(named(now, re.fullmatch(r"Where is the (\w+ \w+)\?", q)[1])).capitalize() + "."}
    if task == "Counting":
        return {NUMBERS[len(now)]}
    if task in ("EPM", "Event Understanding"):
        last = [e["text"] for e in events if e["start_frame"] <= k and (task != "EPM" or e["frame"] < k)]
        return {last[-1] if last else "Nothing yet."}
    if task == "OJR":
        where = re.fullmatch(r"Which object is (.+) now\?", q)[1]
        return {f"The {o.name}." for o in now if place(o) == where}
    if task == "Object Perception":
        return {f"The {o.name}." for o in now}
    if task == "Scene Understanding":
        want = sorted(o.name for o in now)
        return {o for o in item.options if sorted(re.findall(r"\b(?:a|an) (\w+ \w+)", o, re.I)) == want}
    if task == "Clips Summarize":
        return {" ".join(e["text"] for e in events if e["start_frame"] <= k)}
    if task in ("ACR", "Action Perception"):
        name = re.fullmatch(r"What did the (\w+ \w+) just do\?", q)[1]
        s, e = latest_change(states, k)
        return {change(named(states[s - 1], name), named(states[e], name))}
    if task in ("FPD", "Prospective Reasoning"):
        name = re.fullmatch(r"Where will the (\w+ \w+) be a moment from now\?", q)[1]
        moved = change(named(states[k], name), named(states[k + 1], name))
        return {moved.replace("It moved ", "Further ")} if moved and "moved" in moved else set()
    if task == "ASI":
        first = re.fullmatch(r'What happened right after "(.+)"\?', q)[1] + "."
        (i,) = [i for i, e in enumerate(events) if e["text"] == first]
        assert events[i + 1]["end_frame"] < k  # seen by then
        return {events[i + 1]["text"]}
    if task == "HLD":
        name = re.fullmatch(r"What did the (\w+ \w+) do in the video\?", q)[1]
        there = [named(s, name) for s in states]
        if not any(there):
            return {NEVER}
        assert all(there)  # on screen all along: "never appeared" is false; what it did is every change it made
        return {change(a, b) for a, b in zip(there, there[1:])} - {None}
    if task == "Misleading Context Understanding":
        name = re.fullmatch(r"What colour did the (\w+ \w+) turn into\?", q)[1]
        into = turned(states, name)
        return {f"{c.capitalize()}." for c in into} or ({NO_CHANGE} if not made_by_colour(states, name) else set())
    if task == "Sequential Question Answering":  # the second: the first and its answer in front, as upstream asks
        m = re.fullmatch(re.escape(SQA_CONTEXT) + r"At timestamp (\d\d):(\d\d):(\d\d), the following question and "
                         r"answer occurred: Question: What colour is the (\w+)\?; Options: (A\. .+), (B\. .+), "
                         r"(C\. .+), (D\. .+); Answer: ([ABCD]); " + re.escape(SQA_QUESTION)
                         + r"Question: Where is that (\w+) now\?", q, re.S)
        assert m and m[4] == m[10], q
        k1 = int(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])) * int(FPS)
        colour = m[5 + "ABCD".index(m[9])].split(". ", 1)[1].rstrip(".")
        name = f"{colour.lower()} {m[4]}"
        assert [o.shape for o in states[k1]].count(m[4]) == 1 and named(states[k1], name)
        assert all(named(states[j], name) for j in range(k1, k + 1))  # the same object all along
        return {place(named(now, name)).capitalize() + "."}
    raise AssertionError(f"no check for {task}")


def test_every_subtask_is_written_and_read_back(written):
    ovo = load_items("ovo", written["ovo"][1])
    sb = load_items("streamingbench", written["streamingbench"][1])
    assert {i.task for i in ovo} == OVO_TASKS
    assert {i.task for i in sb} == SB_TASKS
    assert written["streamingbench"][1] == written["streamingbench"][0]  # StreamingBench: the directory of its files
    assert sorted(p.name for p in written["streamingbench"][0].glob("questions_*.json")) == [
        "questions_omni.json", "questions_proactive.json", "questions_real.json", "questions_sqa.json"]
    for item in sb:  # upstream's file layout: real-time / omni-source and misleading context / SQA / proactive
        group = item.task.split("/")[0]
        want = "questions_sqa" if "Sequential" in item.task else SB_FILE.get(group, "questions_omni")
        assert item.id.split("/")[0] == want
    for item in ovo + sb:
        assert Path(item.video).is_file() and Path(item.video).suffix == ".npy"


@pytest.mark.parametrize("bench", ["ovo", "streamingbench"])
def test_each_answer_is_the_one_true_option(written, stories, bench):
    items = [i for i in load_items(bench, written[bench][1]) if i.protocol == "mc"]
    assert len(items) >= 20
    for item in items:
        story = stories[int(Path(item.video).stem.split("-")[2])]
        task = item.task.split("/")[1]
        assert len(item.options) == 4 and len(set(item.options)) == 4, item
        true = true_options(task, item, story)
        got = [o for o in item.options if o in true]
        assert got == [item.options[ord(item.answer) - 65]], (item, true)
        k = int(item.ask_time * FPS + 1e-6)
        if task in NOW_TASKS:  # the scene has been the same for a second: a model at 1 fps has seen it
            assert story.states[k - int(FPS)] == story.states[k], item
        if bench == "streamingbench":
            assert item.ask_time == int(item.ask_time)


def test_both_kinds_of_hallucination_and_premise_questions_occur(written):
    ovo = load_items("ovo", written["ovo"][1])
    sb = load_items("streamingbench", written["streamingbench"][1])
    hld = {i.options[ord(i.answer) - 65] == NEVER for i in ovo if i.task == "backward/HLD"}
    mcu = {i.options[ord(i.answer) - 65] == NO_CHANGE for i in sb if "Misleading" in i.task}
    assert hld == mcu == {True, False}


def test_forward_and_proactive_windows_match_the_events(written, stories):
    for item in load_items("ovo", written["ovo"][1]) + load_items("streamingbench", written["streamingbench"][1]):
        events = stories[int(Path(item.video).stem.split("-")[2])].events
        name = item.task.split("/")[1]
        if name == "SSR":
            (e,) = [e for e in events if e["text"] == item.question]
            for w in item.windows:
                inside = e["start_frame"] / FPS <= w.start <= e["end_frame"] / FPS
                assert w.expected == ("Yes" if inside else "No") and (inside or w.start < e["start_frame"] / FPS)
            assert {w.expected for w in item.windows} == {"Yes", "No"}
        elif name == "REC":
            kind = item.meta["activity"].replace(" ", "_")
            for w in item.windows:
                assert w.expected == str(sum(e["type"] == kind and e["time"] <= w.start for e in events))
        elif name == "CRR":  # the object named appears at the clue time, and nothing else appears before it
            (e,) = [e for e in events if e["type"] == "appear" and e["time"] == item.meta["clue_time"]]
            assert f"The {e['objects'][0]}." == item.meta["answer"]
            assert not any(x["type"] == "appear" and item.ask_time <= x["time"] < e["time"] for x in events)
            assert all(w.expected == ("Yes" if w.start >= e["time"] else "No") for w in item.windows)
        elif name == "Proactive Output":  # the first frame the object is on screen
            (w,) = item.windows
            obj = re.fullmatch(r'When the (\w+ \w+) appears, output "(.+)"\.', item.question)
            states = stories[int(Path(item.video).stem.split("-")[2])].states
            first = next(j for j, s in enumerate(states) if named(s, obj[1]))
            assert (w.start, w.expected) == (first / FPS, obj[2]) and first > 0


def test_the_raw_files_are_in_the_benchmarks_formats(written):
    ovo = json.loads(written["ovo"][1].read_text())
    (ssr, *_) = [e for e in ovo if e["task"] == "SSR"]
    assert set(ssr) >= {"id", "task", "video", "all_steps", "start_time", "end_time", "test_info"}
    assert len(ssr["all_steps"]) == len(ssr["start_time"]) == len(ssr["end_time"])
    assert all(set(p) == {"realtime", "step", "type"} and p["type"] in (0, 1) and p["step"] in ssr["all_steps"]
               for p in ssr["test_info"])
    for e in ovo:
        if OVO_GROUPS[e["task"]] != "forward":
            assert isinstance(e["gt"], int) and 0 <= e["gt"] < len(e["options"]) == 4
    for path in written["streamingbench"][0].glob("questions_*.json"):
        for entry in json.loads(path.read_text()):
            # questions_sqa.json nests (one video's parts per entry), the others are flat
            assert isinstance(entry, list) == (path.name == "questions_sqa.json")
            part = entry[0] if isinstance(entry, list) else entry
            assert part["video_path"].startswith("./videos/") and part["time"] == "[00:00:00 - 00:00:16]"
            for q in part["questions"]:
                assert re.fullmatch(r"\d\d:\d\d:\d\d", q["time_stamp"]) and q["task_type"] in SB_GROUPS
                if "options" in q:
                    assert [o[:3] for o in q["options"]] == ["A. ", "B. ", "C. ", "D. "] and q["answer"] in "ABCD"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bench", ["ovo", "streamingbench", "proactive"])
def test_same_seed_same_files(written, tmp_path, bench):
    world_to_benchmark(tmp_path / "a", bench, N, SEED, CFG, video_format="npy")
    assert _digest(tmp_path / "a") == _digest(written[bench][0])
    world_to_benchmark(tmp_path / "b", bench, N, SEED + 1, CFG, video_format="npy")
    assert _digest(tmp_path / "b") != _digest(tmp_path / "a")
