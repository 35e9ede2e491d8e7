"""Qwen2.5-VL as the base (architecture: vlm), on a tiny random Qwen2_5_VLConfig (no download): the frame encoder is
Qwen's own pipeline, the positions are transformers' get_rope_index, the whole model equals transformers' forward,
streaming through the KV cache equals one forward, checkpoints round-trip (random init, and LoRA plus a trained
projector over a saved "pretrained" directory), and a few LoRA steps learn a world stream."""

import json

import numpy as np
import pytest
import torch

from livecue.config import preset
from livecue.data.labels import Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model import vlm
from livecue.model.build import build_model, resolve_config
from livecue.model.load import check_checkpoint_files, load_frame_encoder, load_model, save_checkpoint

PRESET = "tiny_qwen2_5_vl"
SYS = "You narrate."


@pytest.fixture(scope="module")
def tiny():
    return build_model(preset(PRESET))


def hf_vlm(tokenizer, **over):
    """The tiny preset's Hugging Face model itself (what a Qwen2.5-VL directory holds), seeded."""
    cfg = preset(PRESET, over)
    adapter = vlm.adapter_for("qwen2_5_vl")
    hf_config = adapter.random_config(cfg.vlm.random_init, tokenizer)
    torch.manual_seed(0)
    return adapter.model_class().from_config(hf_config, dtype=torch.float32).eval()


def conversation(tpl, tok, markers, frames=(3, 2)):
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": frames[0], "learn": True},
            {"role": "assistant", "content": "A red square appears.", "learn": True},
            {"role": "stream", "num_frames": frames[1], "learn": True}]
    return tokenize_conversation(tpl.render(msgs), tok, markers, tpl)


def parts(model, tok):
    tpl = Template.from_config(model.cfg, tok)
    return tpl, Markers.from_template(tok, tpl)


# ---- the config the model fixes --------------------------------------------------------------------------------------
def test_config_is_derived_from_the_tokenizer_and_the_model(tiny):
    model, tok = tiny
    cfg = model.cfg
    hf = vlm.adapter_for("qwen2_5_vl").random_config(cfg.vlm.random_init, tok)
    assert cfg.stream.v_placeholder == tok.convert_ids_to_tokens(hf.image_token_id) == "<|image_pad|>"
    assert (cfg.stream.frame_prefix, cfg.stream.frame_suffix) == ("<|vision_start|>", "<|vision_end|>")
    assert cfg.stream.chat_format == "template" and cfg.vlm.family == "qwen2_5_vl"
    assert cfg.frame_num_tokens == cfg.vlm.frame_tokens == 9 == model.vision.num_tokens  # 48 px / 8 / 2 = 3x3
    assert model.v_token_id == hf.image_token_id and model.frame_end_id == hf.vision_end_token_id
    assert resolve_config(preset(PRESET)) == cfg
    with pytest.raises(ValueError, match="vlm.frame_tokens is derived when the model is built"):
        _ = preset(PRESET).frame_num_tokens
    with pytest.raises(ValueError, match=r"stream.v_placeholder is '<v2>' but the qwen2_5_vl model's is"):
        resolve_config(preset(PRESET, {"stream.v_placeholder": "<v2>"}))
    with pytest.raises(ValueError, match="vlm.frame_resolution 50 must be a multiple of 16"):
        resolve_config(preset(PRESET, {"vlm.frame_resolution": 50}))
    assert resolve_config(preset(PRESET, {"vlm.frame_pooled": 2})).frame_num_tokens == 4
    with pytest.raises(ValueError, match="vlm.frame_pooled 4 is larger than the frame's token grid 3x3"):
        resolve_config(preset(PRESET, {"vlm.frame_pooled": 4}))


def test_old_configs_are_composed_and_vlm_fields_are_checked():
    old = preset("tiny").to_dict()
    del old["architecture"], old["vlm"]
    assert type(preset("tiny")).from_dict(old).architecture == "composed"
    with pytest.raises(ValueError, match="vlm needs name_or_path"):
        preset(PRESET, {"vlm.random_init": None})
    with pytest.raises(ValueError, match=r"vlm.random_init.vision_config.depth must be a positive integer, got 0"):
        preset(PRESET, {"vlm.random_init.vision_config.depth": 0})
    with pytest.raises(ValueError, match="feature_cache holds the VLM projector's outputs"):
        preset(PRESET, {"vlm.train_projector": True, "train.feature_cache": "cache"})
    with pytest.raises(ValueError, match="architecture must be one of"):
        preset(PRESET, {"architecture": "vla"})


# ---- frames: Qwen's own pipeline -------------------------------------------------------------------------------------
def test_frame_encoder_is_qwens_processor_and_vision_model(tiny):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model, tok = tiny
    encoder = model.vision
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=g)  # already at the resolution
    processor = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2)
    inputs = processor(images=[f.permute(1, 2, 0).numpy() for f in frames], do_resize=False, return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 6], [1, 6, 6]]
    with torch.inference_mode():
        ours = encoder(frames)  # (2, 9, 64)
        theirs = encoder.tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        alone = torch.cat([encoder(frames[i:i + 1]) for i in range(2)])  # attention never crosses frames
    torch.testing.assert_close(ours.reshape(-1, 64), theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-4)
    # any frame size is letterboxed to the resolution; k x k pooling averages the merged grid
    assert encoder(torch.zeros(1, 3, 30, 70, dtype=torch.uint8)).shape == (1, 9, 64)
    pooled, _ = build_model(preset(PRESET, {"vlm.frame_pooled": 1}))
    with torch.inference_mode():
        torch.testing.assert_close(pooled.vision(frames)[:, 0], ours.mean(1), atol=1e-5, rtol=1e-4)


# ---- positions and the whole forward: transformers' own -------------------------------------------------------------
def test_positions_and_logits_equal_transformers_qwen2_5_vl(tiny):
    """Text, three frames (each an image between text), a reply: livecue's positions are get_rope_index's and its
    logits are Qwen2_5_VLForConditionalGeneration's with the frames as images."""
    _, tok = tiny
    hf = hf_vlm(tok)
    model, _ = build_model(preset(PRESET), tokenizer=tok)
    model.load_state_dict({**{f"lm.model.{k}": v for k, v in hf.model.language_model.state_dict().items()},
                           "lm.lm_head.weight": hf.lm_head.weight,
                           **{f"vision.tower.{k}": v for k, v in hf.model.visual.state_dict().items()}})
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers, (2, 1)).input_ids])
    frames = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    image = ids == hf.config.image_token_id
    grid = torch.tensor([[1, 6, 6]] * 3)
    with torch.inference_mode():
        ours, nxt = model.positions(ids)
        theirs, delta = hf.model.get_rope_index(ids, mm_token_type_ids=image.int(), image_grid_thw=grid)
        assert torch.equal(ours, theirs) and int(nxt[0]) == ids.shape[1] + int(delta[0])
        patches = _patches((frames.float() / 255 - model.vision.mean) / model.vision.std)  # Qwen's processor's
        want = hf(input_ids=ids, pixel_values=patches, image_grid_thw=grid, mm_token_type_ids=image.int()).logits
        got = model(ids, frames=frames).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # a text position p is (p, p, p); a frame's tokens share its start in time and span rows x cols
    first = int(image[0].nonzero()[0])
    assert ours[:, 0, first - 1].tolist() == [first - 1] * 3
    assert ours[:, 0, first:first + 9].T.tolist()[:4] == [[first] * 3, [first, first, first + 1],
                                                          [first, first, first + 2], [first, first + 1, first]]


def _patches(pixels):
    """Qwen's flattened patches of normalised (F, 3, 48, 48) frames (patch 8, merge 2, 2 temporal slots)."""
    f = pixels.shape[0]
    x = pixels.reshape(f, 3, 3, 2, 8, 3, 2, 8).permute(0, 2, 5, 3, 6, 1, 4, 7)
    return x.unsqueeze(6).expand(f, 3, 3, 2, 2, 3, 2, 8, 8).reshape(f * 36, 3 * 2 * 64)


def test_positions_of_adjacent_frames_and_broken_ones(tiny):
    """Frames with nothing between them (``frame_interval: ""``, no prefix/suffix) each start after the last one's
    span; a placeholder run that is not whole frames is refused, and so is a cache continued without positions."""
    model, _ = tiny
    v = model.v_token_id
    positions, nxt = vlm.MRopePositions(v, 2, 2)(torch.tensor([[7, v, v, v, v, v, v, v, v, 7]]), start=5)
    assert positions[0, 0].tolist() == [5, 6, 6, 6, 6, 8, 8, 8, 8, 10] and int(nxt[0]) == 11
    assert positions[1, 0].tolist() == [5, 6, 6, 7, 7, 8, 8, 9, 9, 10]
    assert positions[2, 0].tolist() == [5, 6, 7, 6, 7, 8, 9, 8, 9, 10]
    with pytest.raises(ValueError, match="frames must be 9 consecutive placeholder tokens"):
        model.positions(torch.tensor([[1] + [v] * 8]))
    with pytest.raises(ValueError, match="frames must be 9 consecutive placeholder tokens"):
        model.positions(torch.tensor([[v] * 4 + [1] + [v] * 5]))
    with pytest.raises(ValueError, match="continuing a KV cache needs position_ids"):
        with torch.inference_mode():
            cache = model(torch.tensor([[1, 2]]), use_cache=True).cache
            model(torch.tensor([[3]]), cache=cache, use_cache=True)


# ---- streaming == one forward ---------------------------------------------------------------------------------------
def test_streaming_through_the_cache_equals_one_forward(tiny):
    model, tok = tiny
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers).input_ids])
    feats = torch.randn(5, 9, 64, generator=torch.Generator().manual_seed(2))
    ends = [i + 1 for i, x in enumerate(ids[0].tolist()) if x == markers.frame_end]
    cuts = [0, ends[0] - 10, ends[0], ends[1] + 1, ends[2], ends[3] + 1, ids.shape[1]]  # whole frames per step
    with torch.inference_mode():
        full = model(ids, frame_features=feats).logits
        cache, start, used, out = None, 0, 0, []
        for a, b in zip(cuts, cuts[1:]):
            chunk = ids[:, a:b]
            n = int((chunk == model.v_token_id).sum()) // 9
            positions, nxt = model.positions(chunk, start)
            res = model(chunk, frame_features=feats[used:used + n] if n else None, cache=cache, use_cache=True,
                        position_ids=positions)
            cache, start, used = res.cache, int(nxt[0]), used + n
            out.append(res.logits)
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=1e-5, rtol=1e-4)


def test_training_batch_positions_are_per_row(tiny):
    """A right-padded batch: each row's logits equal its own forward (positions counted per row from 0)."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    a, b = conversation(tpl, tok, markers, (2, 1)).input_ids, conversation(tpl, tok, markers, (1, 1)).input_ids
    feats = torch.randn(5, 9, 64, generator=torch.Generator().manual_seed(3))
    ids = torch.full((2, len(a)), tok.pad_token_id)
    ids[0], ids[1, :len(b)] = torch.tensor(a), torch.tensor(b)
    mask = (torch.arange(len(a))[None] < torch.tensor([[len(a)], [len(b)]])).long()
    with torch.inference_mode():
        both = model(ids, frame_features=feats, attention_mask=mask).logits
        one = model(torch.tensor([a]), frame_features=feats[:3]).logits[0]
        two = model(torch.tensor([b]), frame_features=feats[3:]).logits[0]
    torch.testing.assert_close(both[0], one, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1, :len(b)], two, atol=1e-5, rtol=1e-4)


# ---- checkpoints -----------------------------------------------------------------------------------------------------
def test_random_init_round_trip(tiny, tmp_path):
    model, tok = tiny
    save_checkpoint(model, tok, tmp_path / "ckpt")
    cfg = check_checkpoint_files(tmp_path / "ckpt")
    assert cfg == model.cfg
    loaded, tok2 = load_model(tmp_path / "ckpt")
    frames = torch.randint(0, 256, (1, 3, 48, 48), dtype=torch.uint8)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * 9, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, frames=frames).logits, model(ids, frames=frames).logits)
    assert tok2.convert_ids_to_tokens(model.v_token_id) == "<|image_pad|>" and tok2.eos_token == "<|im_end|>"
    encoder, enc_cfg = load_frame_encoder(tmp_path / "ckpt")
    with torch.inference_mode():
        torch.testing.assert_close(encoder(frames), model.vision(frames))
    assert enc_cfg.frame_num_tokens == 9


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory):
    """A "pretrained" Qwen2.5-VL directory, as save_pretrained writes it, with its preprocessor config."""
    _, tok = tiny
    out = tmp_path_factory.mktemp("qwen")
    hf_vlm(tok).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                              "image_std": [0.25, 0.25, 0.25]}))
    return out


def test_pretrained_directory_loads_as_a_vlm_base(pretrained):
    model, tok = load_model(pretrained, dtype="float32")
    cfg = model.cfg
    assert cfg.is_vlm and cfg.vlm.name_or_path == str(pretrained)
    assert cfg.frame_num_tokens == 196  # the default 224 px / 8 / 2 = 14x14
    assert model.vision.mean.flatten().tolist() == [0.5] * 3 and model.vision.std.flatten().tolist() == [0.25] * 3
    hf = hf_vlm(tok)
    torch.testing.assert_close(model.lm.lm_head.weight, hf.lm_head.weight)
    with pytest.raises(FileNotFoundError, match="not a livecue checkpoint"):
        load_model(pretrained.parent)


def test_lora_and_projector_over_a_pretrained_directory_round_trip(pretrained, tmp_path):
    from livecue.model.lora import apply_lora, has_lora

    over = ["vlm.frame_resolution=48", "vlm.train_projector=true", "vlm.dtype=float32", "lora.r=4", "lora.alpha=8"]
    model, tok = load_model(pretrained, overrides=over)
    apply_lora(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains and all("lora_" in n or n.startswith("vision.tower.merger.") for n in trains)
    assert any(n.startswith("vision.tower.merger.") for n in trains) and any("lm_head" in n for n in trains)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(model, tok, tmp_path / "ckpt")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ckpt" / "livecue_model.safetensors")
    assert saved and all(k.startswith("vision.tower.merger.") for k in saved)  # the pretrained rest is not copied
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * 9, 3, *[model.v_token_id] * 9]])
    with torch.inference_mode():
        want = model(ids, frames=frames).logits
    merged, _ = load_model(tmp_path / "ckpt")
    unmerged, _ = load_model(tmp_path / "ckpt", merge_lora=False)
    assert has_lora(unmerged)
    with torch.inference_mode():
        torch.testing.assert_close(unmerged(ids, frames=frames).logits, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(merged(ids, frames=frames).logits, want, atol=1e-4, rtol=1e-4)


# ---- learning --------------------------------------------------------------------------------------------------------
def test_a_few_lora_steps_learn_a_world_stream(tiny):
    """LoRA (and the frozen VLM vision) on one world stream: the streaming loss falls."""
    from livecue.data.dataset import StreamDataset, collate
    from livecue.data.world import WorldConfig, generate_stream
    from livecue.model.lora import apply_lora

    _, tok = tiny
    model, tok = build_model(preset(PRESET, {"lora.r": 8, "lora.alpha": 16}), tokenizer=tok)
    frames, record = generate_stream(WorldConfig(resolution=48, fps=2.0, duration=4.0), seed=1)
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    data = StreamDataset([record], tok, Template.from_config(model.cfg, tok), frames=lambda r: pixels,
                         system_prompt=SYS)
    batch = collate([data[0]], tok.pad_token_id)
    torch.manual_seed(0)
    apply_lora(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and not any(p.requires_grad for p in model.vision.parameters())
    opt = torch.optim.AdamW(params, lr=2e-2)
    losses = []
    for _ in range(10):
        loss = model(**{k: v for k, v in batch.items() if k != "ids"}, labelled_logits_only=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses
