"""Dataset + collator (labels per SPEC §3, frames in <v> order) and the resumable feature cache."""

import json

import numpy as np
import pytest
import torch

from livecue import cli
from livecue.data.dataset import Collator, SeededSampler, StreamDataset, VideoFrames, collate
from livecue.data.features import FeatureCache
from livecue.data.labels import IGNORE
from livecue.data.records import write_records
from livecue.data.template import Template


def make_record(rid, video, n1=3, n2=2, start=0.0):
    return {"id": rid, "video": video, "fps": 2.0, "start": start, "duration": 10.0, "messages": [
        {"role": "stream", "time": 0.0, "num_frames": 1, "learn": False},
        {"role": "user", "time": 0.0, "content": "Narrate."},
        {"role": "stream", "time": 0.5, "num_frames": n1, "learn": True},
        {"role": "assistant", "time": n1 * 0.5, "content": "A red square appears.", "learn": True},
        {"role": "stream", "time": (n1 + 1) * 0.5, "num_frames": n2, "learn": True}]}


@pytest.fixture
def world(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "videos").mkdir()
    for name in ("a", "b"):
        np.save(tmp_path / "videos" / f"{name}.npy", rng.integers(0, 256, (12, 24, 40, 3), dtype=np.uint8))
    records = [make_record("r0", "videos/a.npy"), make_record("r1", "videos/b.npy", n1=1, n2=4, start=1.0)]
    write_records(tmp_path / "train.jsonl", records)
    return tmp_path


@pytest.fixture
def parts(tiny):
    model, tok = tiny
    return model, tok, Template.from_config(model.cfg, tok)


def test_sample_has_labels_and_frames(world, parts):
    model, tok, tpl = parts
    ds = StreamDataset(world / "train.jsonl", tok, tpl)
    s = ds[0]
    assert s.frames.shape == (6, 3, 24, 40) and s.frames.dtype == torch.uint8
    np.testing.assert_array_equal(s.frames[2].permute(1, 2, 0).numpy(), np.load(world / "videos/a.npy")[2])
    at_v = [tok.convert_ids_to_tokens(int(y)) for i, y in enumerate(s.labels)
            if y != IGNORE and s.input_ids[i] == model.v_token_id]
    assert at_v == [","] * 2 + ["]Ċ"] + [","]  # 3 learned frames then speak; the trailing 2-frame stream: 1 silence
    # record r1 starts at video time 1.0 s: its frame 0 is array frame 2
    s1 = ds[1]
    np.testing.assert_array_equal(s1.frames[0].permute(1, 2, 0).numpy(), np.load(world / "videos/b.npy")[2])


def test_sample_knows_where_replies_end(world, parts):
    """Each reply's end token position (the metrics' turn boundaries): in the LIVE format, every eos."""
    _, tok, tpl = parts
    s = StreamDataset(world / "train.jsonl", tok, tpl)[0]
    assert s.turn_ends == [i for i, x in enumerate(s.input_ids.tolist()) if x == tok.eos_token_id] and s.turn_ends


def test_batch_equals_single_forwards(world, parts):
    model, tok, tpl = parts
    ds = StreamDataset(world / "train.jsonl", tok, tpl, frames=VideoFrames(world, resolution=32))
    batch = collate([ds[0], ds[1]], tok.pad_token_id)
    assert batch["frames"].shape == (12, 3, 32, 32)
    assert batch["labels"].shape == batch["input_ids"].shape == batch["attention_mask"].shape
    with torch.no_grad():
        out = model(batch["input_ids"], frames=batch["frames"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])
        for i in range(2):
            s = ds[i]
            single = model(s.input_ids[None], frames=s.frames).logits[0]
            torch.testing.assert_close(out.logits[i, :len(s.input_ids)], single, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(out.loss)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_max_frames_truncation(world, parts):
    _, tok, tpl = parts
    ds = StreamDataset(world / "train.jsonl", tok, tpl, max_num_frames=4)
    assert ds[0].frames.shape[0] == 4  # the third stream (2 frames) would exceed 4
    assert [m["role"] for m in ds.records[0]["messages"]] == ["stream", "user", "stream", "assistant"]


def test_dataloader_workers_and_seeded_order(world, parts):
    _, tok, tpl = parts
    ds = StreamDataset(world / "train.jsonl", tok, tpl)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=Collator(tok.pad_token_id),
                                         sampler=SeededSampler(len(ds), seed=3))
    (batch,) = list(loader)
    assert sorted(batch["ids"]) == ["r0", "r1"] and batch["frames"].shape[0] == 12
    a, b = SeededSampler(100, seed=7), SeededSampler(100, seed=7)
    assert list(a) == list(b) and list(a) != list(range(100))
    a.set_epoch(1)
    assert list(a) != list(b)
    ranks = [list(SeededSampler(10, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks) and set(sum(ranks, [])) == set(range(10))


def test_feature_cache_is_resumable(world, parts, monkeypatch, capsys):
    model, tok, tpl = parts
    out = world.parent / "cache"  # keys are paths relative to the encoded directory, as in the records
    import livecue.data.features as features

    real = features.encode_video
    calls = []

    def dies_on_second(path, *a, **k):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed midway
        return real(path, *a, **k)

    monkeypatch.setattr(features, "encode_video", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        from livecue.commands import encode
        encode.main([str(world), "--out", str(out), "--model", "tiny", "--dtype", "float32"])
    files = sorted(p.name for p in (out / "features" / "videos").iterdir())
    assert files == ["a.npy.safetensors"]  # one finished file, nothing half-written
    mtime = (out / "features/videos/a.npy.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(features, "encode_video", real)
    assert cli.main(["encode", str(world), "--out", str(out), "--model", "tiny", "--dtype", "float32"]) == 0
    assert (out / "features/videos/a.npy.safetensors").stat().st_mtime_ns == mtime  # skipped, not redone
    index = json.loads((out / "index.json").read_text())
    assert set(index["videos"]) == {"videos/a.npy", "videos/b.npy"} and index["fps"] == 2.0
    assert index["videos"]["videos/b.npy"]["num_frames"] == 12

    # cached features are what the tower gives on the same frames, and train the same way
    cache = FeatureCache(out)
    ds_pix = StreamDataset(world / "train.jsonl", tok, tpl)
    ds_feat = StreamDataset(world / "train.jsonl", tok, tpl, frames=cache)
    s_pix, s_feat = ds_pix[1], ds_feat[1]
    assert s_feat.frames.shape == (6, model.frame_num_tokens, model.vision.hidden_size)
    torch.testing.assert_close(s_feat.frames, model.encode_frames(s_pix.frames), atol=1e-5, rtol=1e-5)
    batch = collate([s_feat], tok.pad_token_id)
    assert "frame_features" in batch and "frames" not in batch

    # another fps into the same cache is refused
    assert cli.main(["encode", str(world), "--out", str(out), "--model", "tiny", "--fps", "4",
                     "--dtype", "float32"]) == 1
    assert "different fps" in capsys.readouterr().err
    # config overrides reach the tower: each token gets its region's colour histogram (2³ values), into a new cache
    out2 = world.parent / "cache_colour"
    assert cli.main(["encode", str(world), "--out", str(out2), "--model", "tiny", "--dtype", "float32",
                     "--vision.frame_colour_bins=2"]) == 0
    index2 = json.loads((out2 / "index.json").read_text())
    assert index2["frame_num_tokens"] == model.frame_num_tokens and index2["vision"]["frame_colour_bins"] == 2
    assert FeatureCache(out2).load(ds_feat.records[1]["video"]).shape[-1] == model.vision.hidden_size + 8
    # ... and colour segments: 2 more tokens per frame, each token 4² + 2 values wider
    out3 = world.parent / "cache_segments"
    assert cli.main(["encode", str(world), "--out", str(out3), "--model", "tiny", "--dtype", "float32",
                     "--vision.frame_colour_bins=2", "--vision.frame_colour_segments=2",
                     "--vision.frame_segment_size=4"]) == 0
    index3 = json.loads((out3 / "index.json").read_text())
    assert index3["frame_num_tokens"] == model.frame_num_tokens + 2
    assert FeatureCache(out3).load(ds_feat.records[1]["video"]).shape[1:] == (model.frame_num_tokens + 2,
                                                                              model.vision.hidden_size + 8 + 18)


def test_encode_errors(tmp_path, capsys):
    assert cli.main(["encode", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 1
    assert "video directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["encode", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 1
    assert "no video files" in capsys.readouterr().err


def test_default_system_prompt_is_prepended(world, parts):
    _, tok, tpl = parts
    plain = StreamDataset(world / "train.jsonl", tok, tpl)
    with_sys = StreamDataset(world / "train.jsonl", tok, tpl, system_prompt="You narrate.")
    assert with_sys.messages(0)[0] == {"role": "system", "content": "You narrate."}
    text = tok.decode(with_sys[0].input_ids)
    assert text.startswith("<|bos|>You narrate.\n\n[") and not tok.decode(plain[0].input_ids).startswith("<|bos|>")
