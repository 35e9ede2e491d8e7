"""Sharded online-benchmark runs: processes r of n take items r, r + n, ...; the main process merges their files into
the ``items.jsonl`` one process would have written (same records, same order) and the same ``results.json``; a run
resumes under another process count; two real processes (torchrun, gloo on CPU) == one."""

import json
import os
import subprocess
import sys

import pytest

from livecue.data.world import WorldConfig
from livecue.eval.online.formats import load_items
from livecue.eval.online.run import Shard, merge_records, run_items
from livecue.eval.online.world import world_to_benchmark
from livecue.inference.options import StreamOptions

FAST = StreamOptions(max_reply_tokens=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = WorldConfig(question_rate=4.0, resolution=32, duration=8.0)
    return world_to_benchmark(tmp_path_factory.mktemp("world") / "ovo", "ovo", 2, 0, cfg)


@pytest.fixture(scope="module")
def one_process(tiny, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    res = run_items(*tiny, load_items("ovo", data), out_dir=out, options=FAST)
    return out, res


def records(out):
    return [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]


def test_two_shards_merge_to_what_one_process_writes(tiny, data, one_process, tmp_path):
    items = load_items("ovo", data)
    assert len(items) >= 4
    other = run_items(*tiny, items, out_dir=tmp_path, options=FAST, shard=Shard(1, 2))
    assert other["main"] is False and other["summary"] is None and other["ran"] == len(items[1::2])
    assert [r["id"] for r in records_of(tmp_path / "items.rank1.jsonl")] == [it.id for it in items[1::2]]
    main = run_items(*tiny, items, out_dir=tmp_path, options=FAST, shard=Shard(0, 2))
    assert main["main"] is True and main["ran"] == len(items[0::2])
    out1, res1 = one_process
    assert records(tmp_path) == records(out1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl", "results.json", "results.md", "timing"]
    assert (tmp_path / "results.json").read_text() == (out1 / "results.json").read_text()
    plots = sorted(p.name for p in (tmp_path / "timing").iterdir())
    assert plots == sorted(p.split("/")[-1] for p in main["plots"])
    forward = {f"ovo_{it.task.lower().replace('/', '-')}.png" for it in items if it.protocol == "forward"}
    assert forward and set(plots) == forward  # one per forward task (mc ones get none)
    assert all((tmp_path / "timing" / n).read_bytes() == (out1 / "timing" / n).read_bytes() for n in plots)
    assert main["summary"] == res1["summary"] and main["scored"] == res1["scored"] == len(items)


def records_of(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_killed_sharded_run_resumes_on_one_process(tiny, data, one_process, tmp_path):
    items = load_items("ovo", data)
    run_items(*tiny, items, out_dir=tmp_path, options=FAST, shard=Shard(1, 2))  # rank 0 never ran
    with (tmp_path / "items.rank1.jsonl").open("a") as f:
        f.write('{"id": "cut sh')  # and rank 1 was killed mid-line
    res = run_items(*tiny, items, out_dir=tmp_path, options=FAST)
    assert (res["resumed"], res["ran"]) == (len(items[1::2]), len(items[0::2]))
    assert records(tmp_path) == records(one_process[0])
    assert not list(tmp_path.glob("items.rank*"))


def test_fresh_sharded_run_drops_earlier_records(tiny, data, tmp_path):
    items = load_items("ovo", data)[:2]
    (tmp_path / "items.rank5.jsonl").write_text(json.dumps({"id": "stale", "score": {}}) + "\n")
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": "older", "error": "x"}) + "\n")
    res = run_items(*tiny, items, out_dir=tmp_path, options=FAST, shard=Shard(0, 1), resume=False)
    assert res["ran"] == 2 and [r["id"] for r in records(tmp_path)] == [it.id for it in items]


def test_merge_prefers_a_score_to_an_error_and_keeps_item_order(tmp_path):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "b", "score": {"s": 1}}, {"id": "a", "error": "video not found"}, {"id": "z", "error": "old"}]))
    (tmp_path / "items.rank0.jsonl").write_text(json.dumps({"id": "a", "score": {"s": 2}}) + "\n")
    (tmp_path / "items.rank1.jsonl").write_text(json.dumps({"id": "b", "error": "later error"}) + "\n"
                                                + '{"id": "c", "sco')  # a line being written: not a record
    merged = merge_records(tmp_path, ["a", "b", "c"])
    assert list(merged) == ["a", "b", "z"]
    assert merged["a"] == {"id": "a", "score": {"s": 2}} and merged["b"] == {"id": "b", "score": {"s": 1}}
    assert [r["id"] for r in records(tmp_path)] == ["a", "b", "z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl"]


@pytest.mark.parametrize("rank, world, match", [(0, 0, "world size"), (2, 2, r"rank must be in \[0, 2\)"),
                                                (-1, 2, "rank"), (0, 1.5, "world size")])
def test_bad_shard_is_one_line(rank, world, match):
    with pytest.raises(ValueError, match=match):
        Shard(rank, world)


def test_two_real_processes_equal_one(data, one_process, tmp_path):
    """``torchrun --nproc_per_node 2 -m livecue.cli eval ...``: accelerate's state over gloo on the CPU."""
    out = tmp_path / "two"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
            "livecue.cli", "eval", "--task", "ovo", "--model", "tiny", "--data", str(data), "--out", str(out),
            "--stream.max_reply_tokens=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIVECUE_PROGRESS": "0"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("items scored") == 1 and "on this process of 2" in proc.stdout  # the main one prints
    assert records(out) == records(one_process[0])
    assert json.loads((out / "results.json").read_text()) == json.loads((one_process[0] / "results.json").read_text())
