"""Gemma 3 as the base (architecture: vlm), on a tiny random Gemma3Config (no download): the template is Gemma's chat
format, the frame encoder is Gemma's own vision path, the whole model equals transformers' forward with the tokens of
each image attending to each other (token_type_ids), streaming through the KV cache equals one forward across the
sliding window, checkpoints round-trip (random init, and LoRA plus a trained projector over a saved "pretrained"
directory), and a few LoRA steps learn a world stream."""

import json

import numpy as np
import pytest
import torch

from livecue.config import preset
from livecue.data.labels import IGNORE, Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model import vlm
from livecue.model.build import build_model, resolve_config
from livecue.model.load import check_checkpoint_files, load_frame_encoder, load_model, save_checkpoint

PRESET = "tiny_gemma3"
SYS = "You narrate."
K = 9  # 48 px / 8 = 6x6 patches, pooled by the projector to 3x3
FRAME = "<start_of_image>" + "<image_soft_token>" * K + "<end_of_image>"


@pytest.fixture(scope="module")
def tiny():
    return build_model(preset(PRESET))


def hf_vlm(tokenizer, **over):
    """The tiny preset's Hugging Face model itself (what a Gemma 3 directory holds), seeded."""
    cfg = preset(PRESET, over)
    adapter = vlm.adapter_for("gemma3")
    hf_config = adapter.random_config(cfg.vlm.random_init, tokenizer)
    torch.manual_seed(0)
    model = adapter.model_class().from_config(hf_config, dtype=torch.float32).eval()
    adapter.init_random(model)
    return model


def as_livecue(hf, tok):
    """A livecue model holding ``hf``'s weights."""
    model, _ = build_model(preset(PRESET), tokenizer=tok)
    inner = hf.model
    model.load_state_dict({**{f"lm.model.{k}": v for k, v in inner.language_model.state_dict().items()},
                           "lm.lm_head.weight": hf.lm_head.weight,
                           **{f"vision.tower.vision_tower.{k}": v for k, v in inner.vision_tower.state_dict().items()},
                           **{f"vision.tower.multi_modal_projector.{k}": v
                              for k, v in inner.multi_modal_projector.state_dict().items()}})
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


# ---- the config and the template the model fixes --------------------------------------------------------------------
def test_config_is_derived_from_the_tokenizer_and_the_model(tiny):
    model, tok = tiny
    cfg = model.cfg
    hf = vlm.adapter_for("gemma3").random_config(cfg.vlm.random_init, tok)
    assert cfg.stream.v_placeholder == tok.convert_ids_to_tokens(hf.image_token_id) == "<image_soft_token>"
    assert (cfg.stream.frame_prefix, cfg.stream.frame_suffix) == ("<start_of_image>", "<end_of_image>")
    assert cfg.stream.chat_format == "template" and cfg.vlm.family == "gemma3"
    assert cfg.frame_num_tokens == cfg.vlm.frame_tokens == K == model.vision.num_tokens
    assert model.v_token_id == hf.image_token_id and model.frame_end_id == hf.eoi_token_id
    assert model.lm.bidirectional_frames and not model.explicit_positions
    assert resolve_config(preset(PRESET)) == cfg
    # the frame size is the vision encoder's: 0 is filled with it, another value refused
    assert resolve_config(preset(PRESET, {"vlm.frame_resolution": 0})).vlm.frame_resolution == 48
    with pytest.raises(ValueError, match="vlm.frame_resolution 32 must be 48 for this gemma3 model"):
        resolve_config(preset(PRESET, {"vlm.frame_resolution": 32}))
    assert resolve_config(preset(PRESET, {"vlm.frame_pooled": 2})).frame_num_tokens == 4
    with pytest.raises(ValueError, match="vlm.frame_pooled 4 is larger than the frame's token grid 3x3"):
        resolve_config(preset(PRESET, {"vlm.frame_pooled": 4}))
    with pytest.raises(ValueError, match="attends bidirectionally everywhere"):
        resolve_config(preset(PRESET, {"vlm.random_init.text_config.use_bidirectional_attention": True}))


def test_golden_template_and_label_positions(tiny):
    """Gemma's chat format from the tokenizer's template: no system role (the system text opens the first user
    turn), ``model`` answers, ``<end_of_turn>`` ends a reply; the decision sits on ``<end_of_image>``."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "user", "content": "What is it?"},
            {"role": "assistant", "content": "A red square.", "learn": True},
            {"role": "stream", "num_frames": 1, "learn": True}]
    rendered = tpl.render(msgs)
    assert rendered.text == ("<bos><start_of_turn>user\nYou narrate.\n\n" + FRAME + "," + FRAME + "<end_of_turn>\n"
                             "<start_of_turn>user\nWhat is it?<end_of_turn>\n"
                             "<start_of_turn>model\nA red square.<end_of_turn>\n"
                             "<start_of_turn>user\n" + FRAME + "<end_of_turn>\n")
    t = tokenize_conversation(rendered, tok, markers, tpl)
    learned = [(tok.convert_ids_to_tokens(t.input_ids[i]), tok.convert_ids_to_tokens(y))
               for i, y in enumerate(t.labels) if y != IGNORE]
    assert learned == [("<end_of_image>", ","), ("<end_of_image>", "<end_of_turn>"), ("<end_of_turn>", "Ċ"),
                       ("Ċ", "<start_of_turn>"), ("<start_of_turn>", "m"), ("m", "o"), ("o", "d"), ("d", "el"),
                       ("el", "Ċ"), ("Ċ", "A"), ("A", "Ġred"), ("Ġred", "Ġsquare"), ("Ġsquare", "."),
                       (".", "<end_of_turn>")]
    assert markers.eos == tok.convert_tokens_to_ids("<end_of_turn>") != tok.eos_token_id
    assert markers.frame_end == tok.convert_tokens_to_ids("<end_of_image>")


# ---- frames: Gemma's own vision path ---------------------------------------------------------------------------------
def test_frame_encoder_is_gemmas_processor_and_image_features(tiny):
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    _, tok = tiny
    hf = hf_vlm(tok)
    model = as_livecue(hf, tok)
    frames = frames_of(2, seed=0)  # already at the resolution
    processor = Gemma3ImageProcessorPil(size={"height": 48, "width": 48})
    pixels = processor(images=[f.permute(1, 2, 0).numpy() for f in frames], do_resize=False,
                       return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        ours = model.vision(frames)  # (2, 9, 64)
        theirs = hf.model.get_image_features(pixels).pooler_output
        alone = torch.cat([model.vision(frames[i:i + 1]) for i in range(2)])
    assert ours.shape == (2, K, 64) and ours.abs().amax() > 0  # the projector is drawn at random, not zero
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-4)
    assert model.vision(torch.zeros(1, 3, 30, 70, dtype=torch.uint8)).shape == (1, K, 64)  # letterboxed
    pooled, _ = build_model(preset(PRESET, {"vlm.frame_pooled": 1}))
    with torch.inference_mode():
        torch.testing.assert_close(pooled.vision(frames)[:, 0], pooled.vision.adapter.encode(
            pooled.vision.tower, (frames.float() / 255 - 0.5) / 0.5).mean((1, 2)), atol=1e-5, rtol=1e-4)


# ---- the whole forward: transformers' own, frames attending within themselves ---------------------------------------
def test_logits_equal_transformers_gemma3_with_bidirectional_frames(tiny):
    """Text, three frames (each an image between text), a reply: livecue's logits are
    Gemma3ForConditionalGeneration's with the frames as images and token_type_ids marking them (the tokens of one
    image see each other); plain causal attention would differ."""
    _, tok = tiny
    hf = hf_vlm(tok)
    model = as_livecue(hf, tok)
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers, (2, 1)).input_ids])
    frames = frames_of(3)
    image = ids == hf.config.image_token_id
    pixels = (frames.float() / 255 - 0.5) / 0.5  # Gemma's processor's, at the model's size
    with torch.inference_mode():
        want = hf(input_ids=ids, pixel_values=pixels, token_type_ids=image.long()).logits
        causal = hf(input_ids=ids, pixel_values=pixels).logits
        got = model(ids, frames=frames).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    first = int(image[0].nonzero()[0])
    assert (got[0, first] - causal[0, first]).abs().amax() > 1e-3  # a frame's first token sees the rest
    torch.testing.assert_close(got[0, :first], causal[0, :first])  # text before the frames is causal


# ---- streaming == one forward ---------------------------------------------------------------------------------------
def test_streaming_through_the_cache_equals_one_forward_across_the_sliding_window(tiny):
    model, tok = tiny
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers).input_ids])
    window = model.lm.config.sliding_window
    assert ids.shape[1] > 3 * window
    feats = torch.randn(5, K, 64, generator=torch.Generator().manual_seed(2))
    ends = [i + 1 for i, x in enumerate(ids[0].tolist()) if x == markers.frame_end]
    cuts = [0, ends[0] - 12, ends[0], ends[1] + 1, ends[2], ends[3] + 1, ids.shape[1]]  # whole frames per step
    with torch.inference_mode():
        full = model(ids, frame_features=feats).logits
        cache, used, out = None, 0, []
        for a, b in zip(cuts, cuts[1:]):
            chunk = ids[:, a:b]
            n = int((chunk == model.v_token_id).sum()) // K
            res = model(chunk, frame_features=feats[used:used + n] if n else None, cache=cache, use_cache=True)
            cache, used = res.cache, used + n
            out.append(res.logits)
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=1e-5, rtol=1e-4)
    sliding, whole = cache.layers
    assert sliding.is_sliding and sliding.keys.shape[-2] < window + 20 and whole.keys.shape[-2] == ids.shape[1]


def test_training_batch_is_per_row(tiny):
    """A right-padded batch: each row's logits equal its own forward (frames numbered per row)."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    a, b = conversation(tpl, tok, markers, (2, 1)).input_ids, conversation(tpl, tok, markers, (1, 1)).input_ids
    feats = torch.randn(5, K, 64, generator=torch.Generator().manual_seed(3))
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
    assert tok2.convert_ids_to_tokens(model.v_token_id) == "<image_soft_token>" and tok2.bos_token == "<bos>"
    encoder, enc_cfg = load_frame_encoder(tmp_path / "ckpt")
    with torch.inference_mode():
        torch.testing.assert_close(encoder(frames), model.vision(frames))
    assert enc_cfg.frame_num_tokens == K


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory):
    """A "pretrained" Gemma 3 directory, as save_pretrained writes it, with its preprocessor config."""
    _, tok = tiny
    out = tmp_path_factory.mktemp("gemma3")
    hf_vlm(tok).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                              "image_std": [0.25, 0.25, 0.25]}))
    return out


def test_pretrained_directory_loads_as_a_vlm_base(pretrained):
    model, tok = load_model(pretrained, dtype="float32")
    cfg = model.cfg
    assert cfg.is_vlm and cfg.vlm.name_or_path == str(pretrained) and cfg.vlm.family == "gemma3"
    assert cfg.vlm.frame_resolution == 48 and cfg.frame_num_tokens == K  # the model's own image size
    assert model.vision.std.flatten().tolist() == [0.25] * 3
    hf = hf_vlm(tok)
    torch.testing.assert_close(model.lm.lm_head.weight, hf.lm_head.weight)
    torch.testing.assert_close(model.vision.projector.mm_input_projection_weight,
                               hf.model.multi_modal_projector.mm_input_projection_weight)


def test_lora_and_projector_over_a_pretrained_directory_round_trip(pretrained, tmp_path):
    from safetensors.torch import load_file

    from livecue.model.lora import apply_lora, has_lora

    over = ["vlm.train_projector=true", "vlm.dtype=float32", "lora.r=4", "lora.alpha=8"]
    model, tok = load_model(pretrained, overrides=over)
    apply_lora(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains and all("lora_" in n or n.startswith("vision.tower.multi_modal_projector.") for n in trains)
    assert any(n.startswith("vision.tower.multi_modal_projector.") for n in trains)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(model, tok, tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "livecue_model.safetensors")
    assert saved and all(k.startswith("vision.tower.multi_modal_projector.") for k in saved)
    frames = frames_of(2)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * K, 3, *[model.v_token_id] * K]])
    with torch.inference_mode():
        want = model(ids, frames=frames).logits
    merged, _ = load_model(tmp_path / "ckpt")
    unmerged, _ = load_model(tmp_path / "ckpt", merge_lora=False)
    assert has_lora(unmerged) and unmerged.lm.bidirectional_frames
    with torch.inference_mode():
        torch.testing.assert_close(unmerged(ids, frames=frames).logits, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(merged(ids, frames=frames).logits, want, atol=1e-4, rtol=1e-4)


# ---- learning --------------------------------------------------------------------------------------------------------
def test_a_few_lora_steps_learn_a_world_stream(tiny):
    """LoRA (and the frozen vision) on one world stream: the streaming loss falls."""
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
