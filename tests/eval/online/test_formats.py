"""Loaders of the public online-benchmark formats (exact parsed fixture items) and the world converter round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livecue.data.world import WorldConfig, simulate_stream, stream_seed
from livecue.eval.online.formats import load_items, strip_option
from livecue.eval.online.items import Window
from livecue.eval.online.world import world_to_benchmark

FIX = Path(__file__).parent / "fixtures"


def test_ovo_fixture_exact():
    items = load_items("ovo", FIX / "ovo_bench.json")
    got = [(i.id, i.task, i.protocol, i.ask_time, i.options, i.answer, i.windows) for i in items]
    assert got == [
        ("34", "backward/EPM", "mc", 2.0, ("yellow", "blue", "red", "green"), "A", ()),
        ("774", "realtime/STU", "mc", 4.04, ("The barrel.", "The tree.", "The shed.", "The pit."), "A", ()),
        ("1492", "forward/CRR", "forward", 28.0, (), None, (Window(28, 28, "No"), Window(42, 42, "Yes"))),
        ("1550/0", "forward/SSR", "forward", 0.0, (), None, (Window(20, 20, "Yes"),)),
        ("1550/1", "forward/SSR", "forward", 0.0, (), None, (Window(45, 45, "No"), Window(49, 49, "Yes"))),
        ("1560", "forward/REC", "forward", 0.0, (), None, (Window(14, 14, "1"), Window(22, 22, "1"))),
    ]
    assert items[5].question == "How many times did they opening something?"
    assert items[4].question == "open the bottle carefully"
    assert items[0].video == str((FIX / "src_videos" / "Ego4D/clips/4a37144f.mp4").resolve())


def test_streamingbench_json_fixture_exact_and_audio_rule():
    items = load_items("streamingbench", FIX / "streamingbench")
    got = [(i.id, i.task, i.protocol, i.ask_time, i.options, i.answer, i.windows) for i in items]
    assert got == [
        ("questions_omni/0/1", "omni/Emotion Recognition", "mc", 43.0,
         ("He is happy", "He is serious.", "He is sad.", "He is angry."), "A", ()),
        ("questions_omni/1/0", "contextual/Misleading Context Understanding", "mc", 225.0,
         ("One.", "Five.", "Two.", "Thirteen."), "D", ()),
        ("questions_proactive/0/0", "proactive/Proactive Output", "proactive", 20.0, (), None,
         (Window(29, 29, "3"),)),
        ("questions_real/0/0", "realtime/Object Perception", "mc", 50.0,
         ("A cup.", "A plate.", "A knife.", "A fork."), "B", ()),
    ]  # "Who just said ...?" needs audio: skipped
    assert items[3].video == str((FIX / "streamingbench/videos/sample_1_real.mp4").resolve())
    assert len(load_items("streamingbench", FIX / "streamingbench", include_audio=True)) == 5


def test_streamingbench_csv_fixture_exact():
    (item,) = load_items("streamingbench", FIX / "streamingbench_csv")
    assert (item.id, item.task, item.ask_time, item.options, item.answer) == (
        "Real-Time Visual Understanding_sample_1_1", "realtime/Counting", 65.0,
        ("Two.", "Three.", "Four.", "Five."), "A")
    assert item.video.endswith("streamingbench_csv/Real-Time Visual Understanding/sample_1/video.mp4")


def test_proactive_fixture_exact():
    tv, web = load_items("proactive", FIX / "proactive")  # subsets in sorted order
    assert (web.id, web.task, web.protocol, web.ask_time, web.end_time) == (
        "LGgaMq1eZGw.52.mp4", "proactive/WEB", "proactive", 0.0, 12.866666666666667)
    assert web.question == "What creatures are shown in the video?"
    assert web.windows == (Window(0.0, 4.07, "A winged creature.", (0.0, 3.07)),
                           Window(3.1, 6.0, "A donkey.", (3.1, 5.0)))
    assert web.turns == ((2.5, "Subtitle: Hello."),)
    assert web.video == str((FIX / "proactive/WEB/videos/LGgaMq1eZGw.52.mp4").resolve())
    assert web.meta == {"subset": "WEB", "duration": 12.866666666666667}
    # TV: the later user turns (subtitles) in time order, the empty one skipped; frame/audio kept in meta
    assert (tv.id, tv.task, tv.ask_time, tv.end_time) == (
        "house_frames=house_s01e01_seg01_clip_00.mp4%Q0", "proactive/TV", 0.0, 9.5)
    assert tv.question == "What is Wilson holding when House asks about the patient?"
    assert tv.windows == (Window(3.2, 6.69, "A coffee mug.", (3.2, 5.69)),)
    assert tv.turns == ((1.218, "Subtitle: (Wilson:)She collapsed in class."),
                        (3.655, "Subtitle: (House:)Tell me about the patient."), (7.307, "Subtitle: No."))
    assert tv.meta["frame"] == "house_frames/house_s01e01_seg01_clip_00" and tv.meta["subset"] == "TV"
    assert tv.video == str((FIX / "proactive/TV/videos/house_frames=house_s01e01_seg01_clip_00.mp4").resolve())


def test_proactive_optional_fields_and_non_user_turns(tmp_path):
    """No related_timespan: ``related`` None (upstream then uses the reply span: nothing dropped); a turn without a
    role is a user turn (as upstream's ports read it); an assistant turn in the conversation is not fed."""
    path = tmp_path / "X" / "anno.json"
    path.parent.mkdir()
    path.write_text(json.dumps([{
        "video": "v.mp4", "question_id": "q", "duration": 4,
        "conversation": [{"role": "user", "content": "Say when the dog runs.", "time": 1},
                         {"content": "Subtitle: Go!", "time": 2}, {"role": "assistant", "content": "x", "time": 3}],
        "answer": [{"content": "It runs.", "reply_timespan": [2, 4]}]}]))
    (item,) = load_items("proactive", path)
    assert (item.ask_time, item.end_time, item.windows, item.turns) == (
        1.0, 4.0, (Window(2.0, 4.0, "It runs.", None),), ((2.0, "Subtitle: Go!"),))


def test_strip_option_only_strips_the_positions_letter():
    assert strip_option("A. yellow", 0) == "yellow"
    assert strip_option("(B) x", 1) == "x"
    assert strip_option("A light", 0) == "A light"
    assert strip_option("B. not mine", 0) == "B. not mine"


@pytest.mark.parametrize("bench, name, text, field", [
    ("ovo", "a.json", '[{"id": 1, "task": "EPM", "video": "v.mp4", "realtime": 2, "question": "q", '
                      '"options": ["x", "y"], "gt": 5}]', "gt"),
    ("ovo", "a.json", '[{"id": 1, "task": "XYZ"}]', "task"),
    ("ovo", "a.json", '[{"id": 1, "task": "REC", "video": "v", "activity": "a", "test_info": [{"count": 1}]}]',
     "realtime"),
    ("streamingbench", "questions_real.json", '[{"video_path": "v", "questions": [{"task_type": "Counting", '
     '"question": "q", "time_stamp": "00:00:xx", "answer": "A", "options": ["A. 1"]}]}]', "time_stamp"),
    ("streamingbench", "questions_real.json", '[{"video_path": "v", "questions": [{"task_type": "Counting", '
     '"question": "q", "time_stamp": "00:00:01", "answer": "E", "options": ["A. 1", "B. 2"]}]}]', "answer"),
    ("proactive", "anno.json", '[{"video": "v", "question_id": "q", "conversation": [{"role": "user", '
     '"content": "c", "time": 0}], "answer": [{"content": "x", "reply_timespan": [3, 1]}]}]', "reply_timespan"),
    ("proactive", "anno.json", '[{"video": "v", "question_id": "q", "conversation": [{"role": "user", '
     '"content": "c", "time": 0}], "answer": [{"content": "x", "reply_timespan": [1, 3], '
     '"related_timespan": [2]}]}]', "related_timespan"),
    ("proactive", "anno.json", '[{"video": "v", "question_id": "q", "conversation": [{"role": "user", '
     '"content": "c", "time": 0}, {"role": "user", "content": "Subtitle: hi", "time": "soon"}], "answer": []}]',
     "time"),
    ("proactive", "anno.json", '[{"video": "v", "question_id": "q", "conversation": [{"role": "user", '
     '"content": "c", "time": 0}, {"role": "user", "content": 5, "time": 1}], "answer": []}]', "content"),
])
def test_malformed_file_one_line_error(tmp_path, bench, name, text, field):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_items(bench, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"'{field}'" in msg


def test_missing_and_unknown():
    with pytest.raises(ValueError, match="no such annotation"):
        load_items("ovo", "/nonexistent/x.json")
    with pytest.raises(ValueError, match="benchmark must be one of"):
        load_items("nope", FIX)


CFG = WorldConfig(resolution=32, duration=12.0, event_rate=0.5, question_rate=4.0)


def _truth(i: int):
    return simulate_stream(CFG, stream_seed(0, "test", i))


def test_world_round_trip_ovo(tmp_path):
    anno = world_to_benchmark(tmp_path, "ovo", 2, 0, CFG)
    items = load_items("ovo", tmp_path)
    assert anno.name == "ovo_bench_new.json" and items
    assert {i.task for i in items} >= {"realtime/ATR", "realtime/STU", "forward/REC"}
    for item in items:
        assert Path(item.video).is_file()
        story = _truth(int(item.id.split("-")[2].split("-")[0]))
        if item.task in ("backward/EPM", "realtime/ATR", "realtime/STU"):  # the world's own questions
            q = next(q for q in story.questions if q["time"] == item.ask_time)
            assert item.options[ord(item.answer) - 65] == q["answer"] and len(item.options) == 4
        elif item.task == "forward/REC":
            kind = {"move": "move", "appear": "appear", "disappear": "disappear", "grow": "grow", "shrink": "shrink",
                    "collide": "collide", "change colour": "change_colour"}[item.meta["activity"]]
            own = [e for e in story.events if e["type"] == kind]
            assert [w.expected for w in item.windows] == [str(k + 1) for k in range(len(own))]


def test_world_round_trip_streamingbench(tmp_path):
    world_to_benchmark(tmp_path, "streamingbench", 2, 0, CFG)
    items = load_items("streamingbench", tmp_path)
    assert items and all(Path(i.video).is_file() for i in items)
    for item in items:
        story = _truth(int(Path(item.video).stem.split("-")[2]))
        if item.task in ("realtime/Attribute Perception", "realtime/Spatial Understanding", "realtime/Counting"):
            q = next(q for q in story.questions if int(q["time"]) == item.ask_time and q["question"] == item.question)
            assert item.options[ord(item.answer) - 65] == q["answer"]
        elif item.task == "proactive/Proactive Output":
            (w,) = item.windows
            assert any(e["type"] == "appear" and e["time"] == w.start for e in story.events)


def test_world_round_trip_proactive(tmp_path):
    world_to_benchmark(tmp_path, "proactive", 2, 0, CFG, video_format="npy")
    items = load_items("proactive", tmp_path)
    assert len(items) == 2
    for i, item in enumerate(items):
        story = _truth(i)
        assert [w.expected for w in item.windows] == [e["text"] for e in sorted(
            story.events, key=lambda e: e["start_frame"])]
        assert all(w.start <= e["time"] <= w.end for w, e in zip(item.windows, story.events, strict=True))
        assert Path(item.video).suffix == ".npy" and Path(item.video).is_file()
    assert json.loads((tmp_path / "WORLD/anno.json").read_text())[0]["question_id"] == "world-0-00000"


def test_streamingbench_sqa_nested_entries_carry_the_earlier_answers(tmp_path):
    """questions_sqa.json as upstream's: an entry is the list of one video's parts; each later question is asked with
    the earlier ones and their answers in front, in upstream's words (src/benchmark/StreamingBenchSQA.py)."""
    q = [{"task_type": "Sequential Question Answering", "question": "Who enters?", "time_stamp": "00:00:05",
          "options": ["A. A cat.", "B. A dog.", "C. A bird.", "D. Nobody."], "answer": "B"},
         {"task_type": "Sequential Question Answering", "question": "What does it hold?", "time_stamp": "00:01:00",
          "options": ["Keys.", "A ball.", "A cup.", "Nothing."], "answer": "b"},
         {"task_type": "Sequential Question Answering", "question": "Where does it go?", "time_stamp": "00:02:00",
          "options": ["A. Out.", "B. Up.", "C. Down.", "D. In."], "answer": "A"}]
    data = [[{"video_path": "./videos/sqa_1-25.mp4", "questions": q[:2]},
             {"video_path": "./videos/sqa_26-50.mp4", "questions": q[2:]}],
            [{"video_path": "./videos/other.mp4", "questions": [dict(q[0], answer="C")]}]]
    path = tmp_path / "questions_sqa.json"
    path.write_text(json.dumps(data))
    items = load_items("streamingbench", path)
    assert [i.id for i in items] == ["questions_sqa/0/0/0", "questions_sqa/0/0/1", "questions_sqa/0/1/0",
                                     "questions_sqa/1/0/0"]
    assert [Path(i.video).name for i in items] == ["sqa_1-25.mp4", "sqa_1-25.mp4", "sqa_26-50.mp4", "other.mp4"]
    assert items[0].question == "Who enters?" and items[3].question == "Who enters?"  # a new video: no context
    first = ("At timestamp 00:00:05, the following question and answer occurred: Question: Who enters?; Options: "
             "A. A cat., B. A dog., C. A bird., D. Nobody.; Answer: B; ")
    second = ("At timestamp 00:01:00, the following question and answer occurred: Question: What does it hold?; "
              "Options: A. Keys., B. A ball., C. A cup., D. Nothing.; Answer: B; ")
    intro = ("Here are the contextual information related to the video. Please answer the questions based on the "
             "contextual information: ")
    outro = "\n\nHere is the question. Answer it and don't confuse it with the previous conversation.\nQuestion: "
    assert items[1].question == intro + first + outro + "What does it hold?"
    assert items[2].question == intro + first + second + outro + "Where does it go?"
    assert [i.task for i in items] == ["contextual/Sequential Question Answering"] * 4
    assert [(i.answer, i.ask_time) for i in items] == [("B", 5.0), ("B", 60.0), ("A", 120.0), ("C", 5.0)]
    assert items[1].options == ("Keys.", "A ball.", "A cup.", "Nothing.")
