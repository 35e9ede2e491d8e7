"""The online benchmarks run end to end through the stream engine on world-converted data with the tiny model:
every benchmark writes one line per item and its summary; resume skips what is done (and survives a truncated last
line); a missing video is an error line while the other items still score; ``livecue eval --task ...`` runs."""

import dataclasses
import json

import pytest

from livecue import cli
from livecue.data.world import WorldConfig
from livecue.eval.online.formats import load_items
from livecue.eval.online.items import OnlineItem
from livecue.eval.online.run import mc_prompt, read_done, run_items
from livecue.eval.online.world import world_to_benchmark
from livecue.inference.engine import StreamEngine
from livecue.inference.options import StreamOptions

FAST = StreamOptions(max_reply_tokens=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(question_rate=4.0, resolution=32, duration=8.0)
    return {b: world_to_benchmark(root / b, b, 2, 0, cfg) for b in ("ovo", "streamingbench", "proactive")}


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("bench", ["ovo", "streamingbench", "proactive"])
def test_each_benchmark_end_to_end(tiny, data, tmp_path, bench):
    items = load_items(bench, data[bench])
    res = run_items(*tiny, items, out_dir=tmp_path, options=FAST, fps=1.0)
    recs = lines(tmp_path / "items.jsonl")
    assert [r["id"] for r in recs] == [it.id for it in items]
    assert res["scored"] == res["items"] == res["ran"] == len(items) and res["errors"] == []
    by_id = {it.id: it for it in items}
    for r in recs:
        it = by_id[r["id"]]
        assert r["task"] == it.task and 0.0 <= r["score"]["score"] <= 1.0
        if it.protocol == "mc":  # the first answer only, given at the question's time
            assert len(r["answers"]) == 1 and r["answers"][0][0] == pytest.approx(it.ask_time)
        else:
            assert all(t >= it.ask_time for t, _ in r["answers"])
            assert all(t <= it.end_time + 1e-6 for t, _ in r["answers"]) if it.end_time is not None else True
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["summary"]) == {bench} and saved["summary"][bench]["items"] == len(items)
    assert saved["summary"] == json.loads(json.dumps(res["summary"]))
    md = (tmp_path / "results.md").read_text()
    assert all(f"| {task} |" in md for task in {it.task for it in items})


def test_mc_prompt_lists_options():
    it = OnlineItem("ovo", "realtime/STU", "x", "v.mp4", "Where is it?", 1.0, "mc", options=("Left.", "Right."),
                    answer="B")
    assert mc_prompt(it) == "Where is it?\nA. Left.\nB. Right.\nAnswer with the option's letter."


def test_resume_skips_done_items_and_a_truncated_line(tiny, data, tmp_path, monkeypatch):
    items = load_items("streamingbench", data["streamingbench"])[:3]
    sessions = []
    original = StreamEngine.session
    monkeypatch.setattr(StreamEngine, "session", lambda self, *a, **k: sessions.append(1) or original(self, *a, **k))
    first = run_items(*tiny, items, out_dir=tmp_path, options=FAST, max_items=1)
    assert (first["ran"], first["scored"], len(sessions)) == (1, 1, 1)
    with (tmp_path / "items.jsonl").open("a") as f:
        f.write('{"id": "questions_real/0/1", "benchmark": "stre')  # a run killed mid-line
    full = run_items(*tiny, items, out_dir=tmp_path, options=FAST)
    assert (full["resumed"], full["ran"], full["scored"], len(sessions)) == (1, 2, 3, 3)
    assert [r["id"] for r in lines(tmp_path / "items.jsonl")] == [it.id for it in items]
    again = run_items(*tiny, items, out_dir=tmp_path, options=FAST)
    assert (again["resumed"], again["ran"], len(sessions)) == (3, 0, 3)
    assert again["summary"] == full["summary"]
    fresh = run_items(*tiny, items[:1], out_dir=tmp_path, options=FAST, resume=False)
    assert fresh["ran"] == 1 and len(lines(tmp_path / "items.jsonl")) == 1


def test_read_done_rejects_a_bad_middle_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_done(path)
    path.write_text('{"id": "a"}\n{"id": "b"}')  # complete, no newline: kept, newline added
    assert set(read_done(path)) == {"a", "b"} and path.read_text().endswith("}\n")


def test_missing_video_is_an_error_and_the_rest_score(tiny, data, tmp_path):
    items = load_items("ovo", data["ovo"])[:3]
    gone = str(tmp_path / "nowhere" / "lost.mp4")
    items[1] = dataclasses.replace(items[1], video=gone)
    res = run_items(*tiny, items, out_dir=tmp_path / "out", options=FAST)
    assert res["scored"] == 2 and res["errors"] == [{"id": items[1].id, "task": items[1].task,
                                                      "error": f"video not found: {gone}"}]
    recs = lines(tmp_path / "out" / "items.jsonl")
    assert [("score" in r, "error" in r) for r in recs] == [(True, False), (False, True), (True, False)]
    assert "lost.mp4" in (tmp_path / "out" / "results.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scored"] == 2


def test_an_unscorable_item_is_an_error(tiny, data, tmp_path):
    item = dataclasses.replace(load_items("proactive", data["proactive"])[0], windows=())
    res = run_items(*tiny, [item], out_dir=tmp_path, options=FAST)
    assert res["scored"] == 0 and res["errors"][0]["error"].startswith("cannot score: proactive item")
    assert lines(tmp_path / "items.jsonl")[0]["answers"]  # what the model said is kept


def test_open_questions_need_a_judge(tiny, tmp_path):
    it = OnlineItem("ovo", "backward/ASI", "open", "v.mp4", "What happened?", 1.0, "mc", answer="A square moved.")
    with pytest.raises(ValueError, match="need a judge"):
        run_items(*tiny, [it], out_dir=tmp_path)


def test_cli_eval_online(data, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["eval", "--task", "proactive", "--model", "tiny", "--data", str(data["proactive"].parent.parent),
                   "--out", str(out), "--max-samples", "1", "--stream.max_reply_tokens=3"])
    assert rc == 0
    assert len(lines(out / "items.jsonl")) == 1
    assert json.loads((out / "results.json").read_text())["summary"]["proactive"]["items"] == 1
    printed = capsys.readouterr().out
    assert "| proactive/WORLD |" in printed and "1/1 items scored" in printed
    assert cli.main(["eval", "--task", "free", "--model", "tiny", "--data", str(data["proactive"]), "--judge",
                     "openai:x"]) != 0
    assert "--judge scores open answers of ovo, streamingbench, proactive, not of free" in capsys.readouterr().err
