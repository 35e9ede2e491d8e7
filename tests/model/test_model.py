"""LiveModel: splice contract, streaming loss by hand, KV-cache streaming == full forward, architectures."""

import math

import pytest
import torch

from livecue.config import preset
from livecue.data.labels import IGNORE, Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model import lm as lm_api
from livecue.model.build import build_model
from livecue.model.load import load_model, save_checkpoint
from livecue.model.loss import streaming_loss

LM_ARCHS = {
    "llama": None,  # the tiny preset
    "qwen2": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 4096},
}
VISION = {
    "siglip": None,  # the tiny preset
    "dinov2": {"model_type": "dinov2", "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 1,
               "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
}


def build(lm="llama", vision="siglip", **overrides):
    ov = dict(overrides)
    if LM_ARCHS[lm] is not None:
        ov["lm.random_init"] = LM_ARCHS[lm]
    if VISION[vision] is not None:
        ov["vision.kind"] = vision
        ov["vision.random_init"] = VISION[vision]
    return build_model(preset("tiny", ov))


# ---- loss ------------------------------------------------------------------------------------------------------------
def test_loss_equals_hand_computation():
    torch.manual_seed(0)
    V, v_id = 7, 5
    logits = torch.randn(1, 6, V)
    input_ids = torch.tensor([[1, 5, 5, 2, 5, 3]])
    labels = torch.tensor([[IGNORE, 5, 4, 6, 2, 0]])  # positions 1, 2, 4 are <v>; 3 and 5 are text
    alpha = 0.3
    total, count = 0.0, 0
    for t in range(6):
        if labels[0, t] == IGNORE:
            continue
        logp = logits[0, t].log_softmax(-1)[labels[0, t]].item()
        w = alpha if input_ids[0, t] == v_id else 1.0
        total += -w * logp
        count += 1
    expected = total / count
    got = streaming_loss(logits, labels, input_ids, v_id, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # one normaliser: not the mean of a <v> average and a text average
    two_means = (sum(-logits[0, t].log_softmax(-1)[labels[0, t]].item() for t in (1, 2, 4)) / 3 * alpha
                 + sum(-logits[0, t].log_softmax(-1)[labels[0, t]].item() for t in (3, 5)) / 2) / 2
    assert got.item() != pytest.approx(two_means, rel=1e-3)


def test_alpha_changes_only_v_positions():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 9)
    input_ids = torch.tensor([[8, 8, 1, 2, 3], [4, 8, 8, 8, 1]])
    labels = torch.tensor([[3, 4, 5, IGNORE, 1], [IGNORE, 2, 2, 7, 0]])
    count = int((labels != IGNORE).sum())
    base = streaming_loss(logits, labels, input_ids, 8, 1.0) * count
    doubled = streaming_loss(logits, labels, input_ids, 8, 2.0) * count
    text_only = streaming_loss(logits, labels, input_ids, 8, 0.0) * count
    v_part = base - text_only
    assert doubled.item() == pytest.approx(text_only.item() + 2 * v_part.item(), rel=1e-5)
    assert v_part.item() > 0


def test_alpha_weighs_the_frame_end_not_the_placeholders():
    """With a frame suffix (Qwen <|vision_start|> <|image_pad|>*K <|vision_end|>), the decision is learned on the
    suffix token: α weighs the positions whose input is the frame_end id, by hand."""
    torch.manual_seed(2)
    start, pad, end, comma = 6, 7, 8, 3  # one frame: start pad pad end, then "," and the next frame
    input_ids = torch.tensor([[start, pad, pad, end, comma, start, pad, pad, end, 1, 2]])
    labels = torch.full_like(input_ids, IGNORE)
    labels[0, 3], labels[0, 8], labels[0, 9], labels[0, 10] = comma, 1, 2, 0  # silence, speak, then the reply
    logits = torch.randn(1, 11, 9)
    alpha = 0.25
    ce = {t: -logits[0, t].log_softmax(-1)[labels[0, t]].item() for t in (3, 8, 9, 10)}
    expected = (alpha * (ce[3] + ce[8]) + ce[9] + ce[10]) / 4
    assert streaming_loss(logits, labels, input_ids, end, alpha).item() == pytest.approx(expected, rel=1e-6)
    # weighing the placeholder instead changes nothing: no placeholder position is labelled
    assert streaming_loss(logits, labels, input_ids, pad, alpha).item() == pytest.approx(sum(ce.values()) / 4,
                                                                                      rel=1e-6)


def test_loss_without_labels_is_zero_with_grad():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss = streaming_loss(logits, torch.full((1, 3), IGNORE), torch.zeros(1, 3, dtype=torch.long), 1)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_model_loss_matches_streaming_loss(tiny):
    model, tok = tiny
    tpl = Template.from_config(model.cfg, tok)
    r = tpl.render([{"role": "system", "content": "S"}, {"role": "stream", "num_frames": 3, "learn": True},
                    {"role": "assistant", "content": "A red square appears.", "learn": True}])
    t = tokenize_conversation(r, tok, Markers.from_tokenizer(tok), tpl)
    ids, labels = torch.tensor([t.input_ids]), torch.tensor([t.labels])
    frames = torch.randint(0, 256, (3, 3, 24, 40), dtype=torch.uint8)
    out = model(ids, frames=frames, labels=labels)
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(streaming_loss(out.logits, labels, ids, model.v_token_id, 1.0).item())
    # pixels and precomputed features give the same result
    out2 = model(ids, frame_features=model.encode_frames(frames), labels=labels)
    torch.testing.assert_close(out.logits, out2.logits)


# ---- splice contract -------------------------------------------------------------------------------------------------
def test_merge_count_mismatch_names_both_counts(tiny):
    model, tok = tiny
    ids = torch.tensor([[tok.bos_token_id] + [model.v_token_id] * 20])
    feats = torch.randn(3, model.frame_num_tokens, model.vision.hidden_size)
    with pytest.raises(ValueError, match="20 <v> positions but 30 frame tokens"):
        model(ids, frame_features=feats)
    with pytest.raises(ValueError, match="20 <v> positions but 0 frame tokens"):
        model(ids)


def test_v_is_clamped_and_overwritten(tiny):
    model, tok = tiny
    assert model.v_token_id >= model.vocab_size  # upstream: no embedding resize
    ids = torch.tensor([[tok.bos_token_id] + [model.v_token_id] * 10])
    feats = torch.randn(1, 10, model.vision.hidden_size)
    emb = model.embed(ids, model.project(feats))
    torch.testing.assert_close(emb[0, 1:], model.project(feats)[0])
    torch.testing.assert_close(emb[0, 0], model.lm.get_input_embeddings().weight[tok.bos_token_id])


def test_wrong_feature_shape_is_explained(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"frame features must have shape \(F, 10, D\)"):
        model.project(torch.randn(2, 7, 32))
    width = model.vision.hidden_size
    with pytest.raises(ValueError, match=f"frame features are {width + 15} wide but this model's connector takes "
                                         f"{width}"):
        model.project(torch.randn(2, 10, width + 15))


# ---- streaming == batch ----------------------------------------------------------------------------------------------
def test_crop_cache_then_refeed_is_identical(tiny):
    model, tok = tiny
    ids = torch.tensor([tok("You see a red square and a blue circle.", add_special_tokens=False).input_ids])
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        n = ids.shape[1]
        lm_api.crop_cache(out.cache, n - 3)
        assert lm_api.cache_length(out.cache) == n - 3
        again = model(ids[:, n - 3:], cache=out.cache, use_cache=True)
    torch.testing.assert_close(again.logits[0], out.logits[0, n - 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot crop"):
        lm_api.crop_cache(out.cache, 10_000)


# ---- architectures and towers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("lm,vision", [("llama", "siglip"), ("qwen2", "siglip"), ("gpt2", "dinov2"),
                                       ("llama", "dinov2")])
def test_architectures_train_step(lm, vision):
    model, tok = build(lm, vision)
    assert model.vision.cfg.kind == vision
    tpl = Template.from_config(model.cfg, tok)
    r = tpl.render([{"role": "stream", "num_frames": 2, "learn": True},
                    {"role": "assistant", "content": "Hi.", "learn": True}])
    t = tokenize_conversation(r, tok, Markers.from_tokenizer(tok), tpl)
    model.train()
    out = model(torch.tensor([t.input_ids]), frames=torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
                labels=torch.tensor([t.labels]))
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert model.connector[0].weight.grad is not None  # connector trains
    assert all(p.grad is None for p in model.vision.tower.parameters())  # vision frozen


def test_tiny_preset_is_deterministic(tiny):
    model, _ = tiny
    again, _ = build_model(preset("tiny"))
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_round_trip(tiny, tmp_path):
    model, tok = tiny
    save_checkpoint(model, tok, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "livecue_config.json").exists()
    with torch.no_grad():
        model.connector[0].bias.add_(0.5)  # make the checkpoint differ from a fresh tiny model
        try:
            save_checkpoint(model, tok, tmp_path / "ckpt2")
            loaded, tok2 = load_model(tmp_path / "ckpt2")
            ids = torch.tensor([[tok.bos_token_id] + [model.v_token_id] * 10 + [5, 6]])
            feats = torch.randn(1, 10, model.vision.hidden_size)
            torch.testing.assert_close(loaded(ids, frame_features=feats).logits,
                                       model(ids, frame_features=feats).logits)
        finally:
            model.connector[0].bias.sub_(0.5)
    assert tok2.convert_tokens_to_ids("<v>") == model.v_token_id
    assert loaded.cfg == model.cfg


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="has no livecue_config.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("lm", ["llama", "gpt2"])
def test_labelled_logits_only_gives_the_same_loss(lm):
    model, tok = build(lm)
    tpl = Template.from_config(model.cfg, tok)
    rs = [tpl.render([{"role": "stream", "num_frames": n, "learn": True},
                      {"role": "assistant", "content": "Hi there.", "learn": True}]) for n in (2, 3)]
    ts = [tokenize_conversation(r, tok, Markers.from_tokenizer(tok), tpl) for r in rs]
    length = max(len(t) for t in ts)
    ids = torch.tensor([t.input_ids + [tok.pad_token_id] * (length - len(t)) for t in ts])
    labels = torch.tensor([t.labels + [IGNORE] * (length - len(t)) for t in ts])
    mask = (torch.arange(length)[None] < torch.tensor([[len(t)] for t in ts])).long()
    feats = torch.randn(5, model.frame_num_tokens, model.vision.hidden_size)
    full = model(ids, frame_features=feats, labels=labels, attention_mask=mask)
    part = model(ids, frame_features=feats, labels=labels, attention_mask=mask, labelled_logits_only=True)
    assert part.logits.shape[1] == int((labels != IGNORE).any(0).sum()) < length
    assert part.loss.item() == pytest.approx(full.loss.item(), rel=1e-5)


def test_merge_keeps_tied_embeddings_intact(tmp_path):
    from livecue.model.lora import apply_lora, merge_lora

    model, tok = build(**{"lm.random_init.tie_word_embeddings": True})
    assert model.lm.lm_head.weight.data_ptr() == model.lm.get_input_embeddings().weight.data_ptr()
    apply_lora(model)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    ids = torch.tensor([[tok.bos_token_id, 5, 6, 7]])
    before = model(ids).logits
    table = model.lm.get_input_embeddings().weight.clone()
    merge_lora(model)
    torch.testing.assert_close(model.lm.get_input_embeddings().weight, table)  # the embedding table is untouched
    torch.testing.assert_close(model(ids).logits, before, atol=1e-4, rtol=1e-4)
