"""livecue bench: the forced speak schedule gives replies of exactly R tokens at the scheduled times; a short stream
returns well-formed results; the pure-forward replay runs the same forwards. No timing asserts."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from livecue.bench import (
    BenchConfig,
    forced_session,
    measure_overhead,
    parse_memory,
    replay,
    run_stream,
    speak_schedule,
)
from livecue.commands.bench import markdown_table
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Reply, Silence
from livecue.inference.memory import SinkWindow, Unbounded

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine():
    from livecue.config import preset
    from livecue.model.build import build_model

    return StreamEngine(*build_model(preset("tiny")))


def test_parse_memory():
    assert parse_memory("unbounded") == Unbounded()
    assert parse_memory("sink:4096") == SinkWindow(4096)
    assert parse_memory("SINK:512:64") == SinkWindow(512, 64)
    for bad in ("sink", "sink:x", "window:10", ""):
        with pytest.raises(ValueError, match="memory must be"):
            parse_memory(bad)


def test_speak_schedule():
    assert np.flatnonzero(speak_schedule(20, 2.0, 3.0)).tolist() == [6, 12, 18]
    assert not speak_schedule(20, 2.0, 0.0).any()
    assert np.flatnonzero(speak_schedule(5, 2.0, 0.5)).tolist() == [1, 2, 3, 4]
    assert np.flatnonzero(speak_schedule(10, 1.0, 2.5)).tolist() == [3, 5, 8]  # first frame at/after 2.5, 5, 7.5


def test_forced_replies_have_exactly_r_tokens_at_the_scheduled_times():
    from livecue.config import preset
    from livecue.model.build import build_model

    model, tok = build_model(preset("tiny"))
    engine = StreamEngine(model, tok)
    head = model.lm.get_output_embeddings()
    bias = torch.zeros(head.out_features)
    bias[engine.markers.eos] = 1e4  # eos is every step's argmax
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    feats = torch.randn(16, model.frame_num_tokens, model.vision.hidden_size)
    plain = engine.session(threshold=1.0, max_reply_tokens=4)
    assert all(isinstance(e, Reply) and e.token_ids == [] for e in plain.push_frame(feats[0], 0.0))

    speak = speak_schedule(16, 2.0, 3.0)
    session = forced_session(engine, reply_tokens=4, memory=Unbounded())
    events = []
    for i in range(16):
        session.force(bool(speak[i]), reply_tokens=4)
        events += session.push_frame(feats[i], i / 2.0)
    replies = [e for e in events if isinstance(e, Reply)]
    assert [e.t for e in replies] == [3.0, 6.0]
    assert all(len(e.token_ids) == 4 and e.truncated for e in replies)
    assert all(engine.markers.eos not in e.token_ids for e in replies)
    assert sum(isinstance(e, Silence) for e in events) == 14


def test_run_stream_results(engine):
    cfg = BenchConfig(marks=[30, 12], speak_every=3.0, reply_tokens=5, window=12)
    result, session = run_stream(engine, cfg)
    assert result.complete and result.frames == 30 and result.missing_marks == []
    assert result.replies == 4 and session.replies == 4  # t = 3, 6, 9, 12 s
    assert [m.frame for m in result.marks] == [12, 30]
    m12, m30 = result.marks
    assert m12.window == 6 and m30.window == 12
    assert m12.cache_tokens < m30.cache_tokens == session.context_length
    assert m30.replies == 2 and m30.reply_p50_ms > 0 and m30.silent_p99_ms >= m30.silent_p50_ms > 0
    assert result.fps > 0 and result.peak_mem_mb > 0 and result.memory_kind == "rss"
    json.dumps(result.to_dict())
    table = markdown_table(result)
    assert table.count("\n") == 3 and "| 30 | 0:00:15 |" in table


def test_run_stream_bounded_and_budget(engine):
    cfg = BenchConfig(marks=[40], memory="sink:120:20", reply_tokens=3, window=20)
    result, _ = run_stream(engine, cfg)
    assert result.marks[0].cache_tokens <= 120 and result.marks[0].evicted_tokens > 0
    cut, _ = run_stream(engine, BenchConfig(marks=[10, 400], time_budget=0.0))
    assert cut.frames == 1 and not cut.complete and cut.missing_marks == [10, 400]


def test_replay_runs_the_same_forwards(engine):
    cfg = BenchConfig(marks=[24], memory="sink:100:10", reply_tokens=3)
    trace = []
    result, session = run_stream(engine, cfg, trace=trace)
    kinds = [k for k, _, _ in trace]
    assert kinds.count("forward") == 24 + result.replies * 3 and "evict" in kinds
    wall, cpu = replay(engine.model, trace)
    assert wall > 0 and cpu >= 0
    over = measure_overhead(engine, BenchConfig(reply_tokens=3), frames=12, repeats=2)
    assert over.frames == 12 and over.forwards == 12 + 1 * 3
    assert len(over.engine_s) == len(over.pure_s) == 2 and over.ratio > 0 and over.ratio_cpu > 0


def test_pixels(engine):
    result, _ = run_stream(engine, BenchConfig(marks=[8], pixels=True, reply_tokens=2))
    assert result.frames == 8 and result.replies == 1


def test_cli(tmp_path, capsys):
    from livecue.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "tiny", "--frames", "8,16", "--reply-tokens", "2", "--memory", "unbounded,sink:64",
                 "--overhead-frames", "8", "--overhead-repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [s["memory"] for s in data["streams"]] == ["unbounded", "sink:64"]
    assert data["overhead"]["frames"] == 8 and data["environment"]["threads"] == 1
    assert "end-to-end / pure model time" in capsys.readouterr().out


def test_gpu_config_has_real_sizes():
    """The 8B benchmark config builds on the meta device (no memory, a few seconds) with Llama-3-8B/SigLIP-L shapes."""
    from livecue.bench import load_bench_model

    model, _ = load_bench_model(str(ROOT / "configs/bench/llama3_8b_siglip_random.yaml"), device="meta")
    assert model.dtype == torch.bfloat16 and model.frame_num_tokens == 10
    assert sum(p.numel() for p in model.lm.parameters()) == 8_030_261_248  # Llama-3-8B
    assert model.lm.config.num_key_value_heads == 8 and model.vocab_size == 128256
    assert model.vision.hidden_size == 1024 and model.cfg.vision.resolution == 384


def test_qwen2_5_vl_7b_config_has_real_sizes():
    """The Qwen2.5-VL-7B-shaped benchmark config (a VLM base) builds on the meta device with the real model's
    parameter counts (7.62 B language model with its untied head, 0.68 B vision model) and 64 tokens a frame."""
    from livecue.bench import load_bench_model

    model, _ = load_bench_model(str(ROOT / "configs/bench/qwen2_5_vl_7b_random.yaml"), device="meta")
    assert model.cfg.is_vlm and model.dtype == torch.bfloat16 and model.frame_num_tokens == 64
    assert sum(p.numel() for p in model.lm.parameters()) == 7_615_616_512
    assert sum(p.numel() for p in model.vision.parameters()) == 676_550_144
    assert model.lm.config.num_key_value_heads == 4 and model.vocab_size == 152064 and model.explicit_positions


@pytest.mark.parametrize("mode", ["continuous", "batched", "sequential"])
def test_multi_stream_bench_runs_every_frame(mode):
    from livecue.bench import run_streams
    from livecue.config import preset
    from livecue.model.build import build_model

    engine = StreamEngine(*build_model(preset("tiny")))
    cfg = BenchConfig(marks=[6], speak_every=1.0, reply_tokens=3)
    r = run_streams(engine, cfg, streams=3, frames=6, mode=mode, warmup=2)
    # 2 fps, a reply every 1 s = every other frame, staggered per stream: 3 streams x 3 timed replies (±1)
    assert r.streams == 3 and r.mode == mode and r.fps > 0 and 8 <= r.replies <= 10
    assert 0 < r.frame_p50_ms <= r.frame_p99_ms
    with pytest.raises(ValueError, match="mode must be"):
        run_streams(engine, cfg, 1, 1, mode="nope")
