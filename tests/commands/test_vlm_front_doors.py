"""Every front door takes a VLM base: demo, serve (a real server and client), encode + train from the feature
cache, and `--model DIR` for a VLM directory as transformers saves it (tiny random Qwen2.5-VL; serve: every family)."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest

from livecue import cli
from livecue.config import preset
from livecue.model.build import build_model

PRESET = "tiny_qwen2_5_vl"


def test_demo_takes_a_vlm(capsys):
    assert cli.main(["demo", "--model", "tiny-qwen2_5_vl", "--fast", "--duration", "2", "--threshold", "1.0",
                     "--max-reply-tokens", "2"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    said = re.search(r"(\d+) narrations, (\d+) answers", summary)
    assert summary.startswith("4 frames (") and int(said[1]) + int(said[2]) == 4  # θ = 1: every frame speaks


@pytest.mark.parametrize("name", [PRESET, "tiny_qwen3_vl", "tiny_llava_onevision", "tiny_smolvlm", "tiny_gemma3"])
def test_serve_streams_a_vlm(name):
    import uvicorn

    from livecue.client import SyncLiveClient
    from livecue.commands.serve import bind
    from livecue.serve.app import create_app

    model, tok = build_model(preset(name))
    app = create_app(model, tok, max_sessions=2)
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        rng = np.random.default_rng(0)
        with SyncLiveClient(f"http://127.0.0.1:{sock.getsockname()[1]}") as client:
            ready = client.open(threshold=1.0, max_reply_tokens=3)
            assert ready["type"] == "ready" and client.get("/model")["architecture"] == "vlm"
            for i in range(3):
                client.send_frame(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), i * 0.5)
                while (ev := client.recv(timeout=30))["type"] != "reply":
                    assert ev["type"] in ("reply_delta", "dropped"), ev
                assert ev["t"] == i * 0.5
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlmworld")
    assert cli.main(["world", "--out", str(root), "--n", "2", "--seed", "0", "--resolution", "48",
                     "--duration", "4"]) == 0
    return root


def test_encode_then_train_from_the_feature_cache(world, tmp_path):
    cache = tmp_path / "cache"
    assert cli.main(["encode", str(world), "--out", str(cache), "--model", "tiny-qwen2_5_vl",
                     "--dtype", "float32"]) == 0
    index = json.loads((cache / "index.json").read_text())
    assert index["frame_num_tokens"] == 9 and index["vision"]["family"] == "qwen2_5_vl"
    out = tmp_path / "run"
    assert cli.main(["train", "tiny_qwen2_5_vl", f"--train.train_data={world / 'train.jsonl'}",
                     f"--train.feature_cache={cache}", f"--train.output_dir={out}", "--train.max_steps=2",
                     "--train.save_steps=1"]) == 0
    model = json.loads((out / "final" / "livecue_config.json").read_text())
    assert model["architecture"] == "vlm" and model["stream"]["frame_suffix"] == "<|vision_end|>"
    assert cli.main(["info", "--model", str(out / "final")]) == 0


def test_model_dir_of_a_saved_vlm(tmp_path, capsys):
    """A VLM directory as transformers saves it (config.json, weights, tokenizer), no livecue config: --model takes
    it and streams it with the LIVE template in its own chat format."""
    from livecue.model.vlm import adapter_for

    adapter = adapter_for("qwen2_5_vl")
    tok = adapter.tiny_tokenizer()
    vlm = adapter.model_class().from_config(adapter.random_config(dict(preset(PRESET).vlm.random_init), tok))
    vlm.save_pretrained(tmp_path / "vlm")
    tok.save_pretrained(tmp_path / "vlm")
    assert cli.main(["watch", "sample:bikes", "--model", str(tmp_path / "vlm"), "--max-frames", "3",
                     "--vlm.frame_resolution=48", "--vlm.dtype=float32"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("3 frames")
