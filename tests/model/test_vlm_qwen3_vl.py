"""Qwen3-VL as the base (architecture: vlm), on a tiny random Qwen3VLConfig (no download): the template is Qwen3-VL's
chat format, the frame encoder is Qwen's processor and vision model with its DeepStack features, the positions are
transformers' get_rope_index, the whole model equals Qwen3VLForConditionalGeneration (DeepStack levels added where
Qwen adds them), streaming through the KV cache equals one forward, checkpoints round-trip (random init, and LoRA plus
the trained mergers over a saved "pretrained" directory), a few LoRA steps learn a world stream; the MoE sibling
shares it all."""

import json

import numpy as np
import pytest
import torch

from livecue.config import preset
from livecue.data.labels import IGNORE, Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model import lm as lm_api
from livecue.model import vlm
from livecue.model.build import build_model, resolve_config
from livecue.model.load import check_checkpoint_files, load_frame_encoder, load_model, save_checkpoint

PRESET = "tiny_qwen3_vl"
SYS = "You narrate."
K, H, LEVELS = 9, 64, 2  # 48 px / 8 / 2 = 3x3 tokens of width 64; DeepStack after vision blocks 0 and 1
FRAME = "<|vision_start|>" + "<|image_pad|>" * K + "<|vision_end|>"
MOE = {"vlm.random_init.model_type": "qwen3_vl_moe", "vlm.random_init.text_config.num_experts": 4,
       "vlm.random_init.text_config.num_experts_per_tok": 2, "vlm.random_init.text_config.moe_intermediate_size": 32}


@pytest.fixture(scope="module")
def tiny():
    return build_model(preset(PRESET))


def hf_vlm(tokenizer, **over):
    """The tiny preset's Hugging Face model itself (what a Qwen3-VL directory holds), seeded."""
    cfg = preset(PRESET, over)
    adapter = vlm.adapter_for(cfg.vlm.random_init["model_type"])
    hf_config = adapter.random_config(cfg.vlm.random_init, tokenizer)
    torch.manual_seed(0)
    return adapter.model_class().from_config(hf_config, dtype=torch.float32).eval()


def as_livecue(hf, tok, **over):
    """A livecue model holding ``hf``'s weights."""
    model, _ = build_model(preset(PRESET, over), tokenizer=tok)
    model.load_state_dict({**{f"lm.model.{k}": v for k, v in hf.model.language_model.state_dict().items()},
                           "lm.lm_head.weight": hf.lm_head.weight,
                           **{f"vision.tower.{k}": v for k, v in hf.model.visual.state_dict().items()}})
    return model


def conversation(tpl, tok, markers, frames=(3, 2)):
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": frames[0], "learn": True},
            {"role": "assistant", "content": "A red square appears.", "learn": True},
            {"role": "stream", "num_frames": frames[1], "learn": True}]
    return tokenize_conversation(tpl.render(msgs), tok, markers, tpl)


def parts(model, tok):
    tpl = Template.from_config(model.cfg, tok)
    return tpl, Markers.from_template(tok, tpl)


def frames_of(n, seed=1):
    return torch.randint(0, 256, (n, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def qwen_pixels(frames):
    """Qwen's processor on frames already at the resolution (Qwen3-VL's 0.5/0.5 normalisation): patches and grids."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3)
    inputs = processor(images=[f.permute(1, 2, 0).numpy() for f in frames], do_resize=False, return_tensors="pt")
    return inputs["pixel_values"], inputs["image_grid_thw"]


# ---- the config and the template the model fixes --------------------------------------------------------------------
def test_config_is_derived_from_the_tokenizer_and_the_model(tiny):
    model, tok = tiny
    cfg = model.cfg
    hf = vlm.adapter_for("qwen3_vl").random_config(cfg.vlm.random_init, tok)
    assert cfg.stream.v_placeholder == tok.convert_ids_to_tokens(hf.image_token_id) == "<|image_pad|>"
    assert (cfg.stream.frame_prefix, cfg.stream.frame_suffix) == ("<|vision_start|>", "<|vision_end|>")
    assert cfg.stream.chat_format == "template" and cfg.vlm.family == "qwen3_vl"
    assert cfg.frame_num_tokens == cfg.vlm.frame_tokens == K == model.vision.num_tokens
    assert model.v_token_id == hf.image_token_id and model.frame_end_id == hf.vision_end_token_id
    assert model.explicit_positions and lm_api.deepstack_levels(model.lm) == LEVELS
    assert model.feature_width == model.vision.hidden_size == H * (1 + LEVELS)  # the tokens, then 2 levels
    assert model.vision.projector_name == "merger + deepstack_merger_list"
    assert resolve_config(preset(PRESET)) == cfg
    with pytest.raises(ValueError, match="vlm.frame_resolution 50 must be a multiple of 16"):
        resolve_config(preset(PRESET, {"vlm.frame_resolution": 50}))
    assert resolve_config(preset(PRESET, {"vlm.frame_resolution": 0})).vlm.frame_resolution == 256
    assert resolve_config(preset(PRESET, {"vlm.frame_pooled": 2})).frame_num_tokens == 4


def test_golden_template_and_label_positions(tiny):
    """Qwen3-VL's chat format from the tokenizer's template (ChatML, no default system turn): the decision sits on
    ``<|vision_end|>``, ``<|im_end|>`` ends a reply."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "user", "content": "What is it?"},
            {"role": "assistant", "content": "A red square.", "learn": True},
            {"role": "stream", "num_frames": 1, "learn": True}]
    rendered = tpl.render(msgs)
    assert rendered.text == ("<|im_start|>system\nYou narrate.<|im_end|>\n"
                             "<|im_start|>user\n" + FRAME + "," + FRAME + "<|im_end|>\n"
                             "<|im_start|>user\nWhat is it?<|im_end|>\n"
                             "<|im_start|>assistant\nA red square.<|im_end|>\n"
                             "<|im_start|>user\n" + FRAME + "<|im_end|>\n")
    t = tokenize_conversation(rendered, tok, markers, tpl)
    learned = [(tok.convert_ids_to_tokens(t.input_ids[i]), tok.convert_ids_to_tokens(y))
               for i, y in enumerate(t.labels) if y != IGNORE]
    assert learned == [("<|vision_end|>", ","), ("<|vision_end|>", "<|im_end|>"), ("<|im_end|>", "Ċ"),
                       ("Ċ", "<|im_start|>"), ("<|im_start|>", "a"), ("a", "ssistant"), ("ssistant", "Ċ"),
                       ("Ċ", "A"), ("A", "Ġred"), ("Ġred", "Ġsquare"), ("Ġsquare", "."), (".", "<|im_end|>")]
    assert markers.eos == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert markers.frame_end == tok.convert_tokens_to_ids("<|vision_end|>")


# ---- frames: Qwen's own vision path, DeepStack included --------------------------------------------------------------
def test_frame_encoder_is_qwens_processor_and_image_features(tiny):
    """The tokens are get_image_features' merged tokens, the levels its deepstack_features, frame by frame."""
    model, tok = tiny
    hf = hf_vlm(tok)
    encoder = as_livecue(hf, tok).vision
    frames = frames_of(2, seed=0)
    pixels, grid = qwen_pixels(frames)
    assert grid.tolist() == [[1, 6, 6], [1, 6, 6]]
    with torch.inference_mode():
        ours = encoder(frames)  # (2, 9, 3 * 64)
        theirs = hf.model.get_image_features(pixels, grid)
        alone = torch.cat([encoder(frames[i:i + 1]) for i in range(2)])  # attention never crosses frames
    want = torch.cat([torch.cat(theirs.pooler_output)] + [torch.cat(level) for level in theirs.deepstack_features], -1)
    assert ours.shape == (2, K, H * (1 + LEVELS)) and len(theirs.deepstack_features) == LEVELS
    torch.testing.assert_close(ours.reshape(-1, H * (1 + LEVELS)), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-4)
    assert encoder(torch.zeros(1, 3, 30, 70, dtype=torch.uint8)).shape == (1, K, H * (1 + LEVELS))
    # k x k pooling averages the tokens and every level alike
    pooled, _ = build_model(preset(PRESET, {"vlm.frame_pooled": 1}))
    pooled.load_state_dict(as_livecue(hf, tok).state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(pooled.vision(frames)[:, 0], ours.mean(1), atol=1e-5, rtol=1e-4)


# ---- positions and the whole forward: transformers' own -------------------------------------------------------------
def test_positions_and_logits_equal_transformers_qwen3_vl(tiny):
    """Text, three frames (each an image between text), a reply: livecue's positions are get_rope_index's and its
    logits are Qwen3VLForConditionalGeneration's with the frames as images; without the DeepStack levels they are
    not (the levels matter)."""
    _, tok = tiny
    hf = hf_vlm(tok)
    model = as_livecue(hf, tok)
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers, (2, 1)).input_ids])
    frames = frames_of(3)
    pixels, grid = qwen_pixels(frames)
    image = ids == hf.config.image_token_id
    with torch.inference_mode():
        ours, nxt = model.positions(ids)
        theirs, delta = hf.model.get_rope_index(ids, mm_token_type_ids=image.int(), image_grid_thw=grid)
        assert torch.equal(ours, theirs) and int(nxt[0]) == ids.shape[1] + int(delta[0])
        want = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=image.int()).logits
        got = model(ids, frames=frames).logits
        feats = model.encode_frames(frames)
        flat, _ = lm_api.lm_forward(model.lm, model.embed(ids, feats[..., :H]), position_ids=ours)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    first = int(image[0].nonzero()[0])
    assert not torch.allclose(flat[0, first:], want[0, first:], atol=1e-3)  # the levels change what follows
    torch.testing.assert_close(flat[0, :first], want[0, :first], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="frames with DeepStack levels: embed_frames"):
        model.embed(ids, feats)


def test_moe_sibling_equals_transformers_and_streams(tiny):
    """Qwen3-VL-MoE (vlm.random_init.model_type qwen3_vl_moe): the same adapter code, its logits are
    Qwen3VLMoeForConditionalGeneration's and streaming equals one forward."""
    _, tok = tiny
    hf = hf_vlm(tok, **MOE)
    model = as_livecue(hf, tok, **MOE)
    assert model.cfg.vlm.family == "qwen3_vl_moe" and type(model.lm.model).__name__ == "Qwen3VLMoeTextModel"
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers, (2, 1)).input_ids])
    frames = frames_of(3)
    pixels, grid = qwen_pixels(frames)
    image = ids == hf.config.image_token_id
    with torch.inference_mode():
        want = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=image.int()).logits
        feats = model.encode_frames(frames)
        full = model(ids, frame_features=feats).logits
        cut = int(image[0].nonzero()[K - 1]) + 2  # after the first frame and its <|vision_end|>
        head, nxt = model.positions(ids[:, :cut])
        tail, _ = model.positions(ids[:, cut:], int(nxt[0]))
        a = model(ids[:, :cut], frame_features=feats[:1], use_cache=True, position_ids=head)
        b = model(ids[:, cut:], frame_features=feats[1:], cache=a.cache, use_cache=True, position_ids=tail)
    torch.testing.assert_close(full, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat([a.logits, b.logits], dim=1), full, atol=1e-5, rtol=1e-4)


# ---- streaming == one forward ---------------------------------------------------------------------------------------
def test_streaming_through_the_cache_equals_one_forward(tiny):
    """Steps with whole frames carry their DeepStack levels, steps without frames none: the same logits."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers).input_ids])
    feats = torch.randn(5, K, H * (1 + LEVELS), generator=torch.Generator().manual_seed(2))
    ends = [i + 1 for i, x in enumerate(ids[0].tolist()) if x == markers.frame_end]
    cuts = [0, ends[0] - 10, ends[0], ends[1] + 1, ends[2], ends[3] + 1, ids.shape[1]]  # whole frames per step
    with torch.inference_mode():
        full = model(ids, frame_features=feats).logits
        cache, start, used, out = None, 0, 0, []
        for a, b in zip(cuts, cuts[1:]):
            chunk = ids[:, a:b]
            n = int((chunk == model.v_token_id).sum()) // K
            positions, nxt = model.positions(chunk, start)
            res = model(chunk, frame_features=feats[used:used + n] if n else None, cache=cache, use_cache=True,
                        position_ids=positions)
            cache, start, used = res.cache, int(nxt[0]), used + n
            out.append(res.logits)
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=1e-5, rtol=1e-4)


def test_training_batch_is_per_row(tiny):
    """A right-padded batch: each row's logits equal its own forward (positions and DeepStack levels per row)."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    a, b = conversation(tpl, tok, markers, (2, 1)).input_ids, conversation(tpl, tok, markers, (1, 1)).input_ids
    feats = torch.randn(5, K, H * (1 + LEVELS), generator=torch.Generator().manual_seed(3))
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
    assert check_checkpoint_files(tmp_path / "ckpt") == model.cfg
    loaded, tok2 = load_model(tmp_path / "ckpt")
    frames = frames_of(1)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * K, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, frames=frames).logits, model(ids, frames=frames).logits)
    assert tok2.convert_ids_to_tokens(model.v_token_id) == "<|image_pad|>" and tok2.eos_token == "<|im_end|>"
    encoder, enc_cfg = load_frame_encoder(tmp_path / "ckpt")
    with torch.inference_mode():
        torch.testing.assert_close(encoder(frames), model.vision(frames))
    assert enc_cfg.frame_num_tokens == K


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory):
    """A "pretrained" Qwen3-VL directory, as save_pretrained writes it (no preprocessor config: Qwen3-VL's 0.5/0.5)."""
    _, tok = tiny
    out = tmp_path_factory.mktemp("qwen3")
    hf_vlm(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_pretrained_directory_loads_as_a_vlm_base(pretrained):
    model, tok = load_model(pretrained, dtype="float32")
    cfg = model.cfg
    assert cfg.is_vlm and cfg.vlm.name_or_path == str(pretrained) and cfg.vlm.family == "qwen3_vl"
    assert cfg.vlm.frame_resolution == 256 and cfg.frame_num_tokens == 256  # the default 256 px / 8 / 2 = 16x16
    assert model.vision.mean.flatten().tolist() == [0.5] * 3 and model.vision.std.flatten().tolist() == [0.5] * 3
    torch.testing.assert_close(model.lm.lm_head.weight, hf_vlm(tok).lm_head.weight)
    (pretrained / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.25] * 3, "image_std": [0.5] * 3}))
    try:
        assert load_model(pretrained, dtype="float32")[0].vision.mean.flatten().tolist() == [0.25] * 3
    finally:
        (pretrained / "preprocessor_config.json").unlink()


def test_lora_and_the_mergers_over_a_pretrained_directory_round_trip(pretrained, tmp_path):
    """vlm.train_projector trains the merger and the DeepStack mergers; the checkpoint holds only them (and LoRA)."""
    from safetensors.torch import load_file

    from livecue.model.lora import apply_lora, has_lora

    over = ["vlm.frame_resolution=48", "vlm.train_projector=true", "vlm.dtype=float32", "lora.r=4", "lora.alpha=8"]
    model, tok = load_model(pretrained, overrides=over)
    apply_lora(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    mergers = ("vision.tower.merger.", "vision.tower.deepstack_merger_list.")
    assert trains and all("lora_" in n or n.startswith(mergers) for n in trains)
    assert all(any(n.startswith(m) for n in trains) for m in mergers) and any("lm_head" in n for n in trains)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(model, tok, tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "livecue_model.safetensors")
    assert saved and all(k.startswith(mergers) for k in saved)  # the pretrained rest is not copied
    assert any(k.startswith(mergers[1]) for k in saved)
    frames = frames_of(2)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * K, 3, *[model.v_token_id] * K]])
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
    """LoRA (and the frozen VLM vision, DeepStack mergers included) on one world stream: the streaming loss falls."""
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
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**{k: v for k, v in batch.items() if k != "ids"}, labelled_logits_only=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses
