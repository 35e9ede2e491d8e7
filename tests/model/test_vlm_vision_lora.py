"""LoRA inside a VLM's vision encoder and projector (vlm.lora_vision / vlm.lora_projector), every family, over a
"pretrained" directory as transformers saves it: only the adapter weights are saved, the checkpoint loads merged and
unmerged to the same outputs, the vision LoRA receives gradients from the LIVE loss, and the refusals name the
fields."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from livecue.config import LiveConfig, preset
from livecue.data.labels import Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model.load import load_model, save_checkpoint
from livecue.model.lora import apply_vision_lora, has_vision_lora
from livecue.model.vlm import adapter_for
from livecue.train.trainable import setup_model

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm", "gemma3"]
MATRIX_PROJECTOR = {"gemma3"}  # its projector is a matrix, not a linear layer: LoRA cannot reach it


@pytest.fixture(scope="module", params=FAMILIES)
def pretrained(request, tmp_path_factory):
    family = request.param
    adapter = adapter_for(family)
    tok = adapter.tiny_tokenizer()
    torch.manual_seed(0)
    hf = adapter.model_class().from_config(adapter.random_config(dict(preset(f"tiny_{family}").vlm.random_init), tok))
    with torch.no_grad():  # weights a random init leaves at zero (Gemma 3's projector) would hide the adapter
        for p in hf.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp(family) / "hf"
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return family, path


def config(path, tmp_path, **vlm):
    return LiveConfig.from_dict({"architecture": "vlm", "vlm": {"name_or_path": str(path), "frame_resolution": 48,
                                                                "dtype": "float32", **vlm},
                                 "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                                 "train": {"output_dir": str(tmp_path)}})


def test_vision_lora_saves_only_adapters_and_loads_merged_or_not(pretrained, tmp_path):
    family, path = pretrained
    projector = family not in MATRIX_PROJECTOR
    model, tok = setup_model(config(path, tmp_path, lora_vision=True, lora_projector=projector))
    assert has_vision_lora(model)
    trains = {n for n, p in model.vision.named_parameters() if p.requires_grad}
    assert trains and all("lora_" in n for n in trains)
    assert any(model.vision._in_projector(n[len("tower."):]) for n in trains) == projector
    with torch.no_grad():  # a trained adapter (B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    save_checkpoint(model, tok, tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "livecue_model.safetensors")
    vision = [k for k in saved if k.startswith("vision.")]
    assert vision and all(k.startswith("vision.tower.") and ".lora_" in k and ".default." not in k for k in vision)
    assert len(vision) == len(trains)  # the pretrained vision weights are not copied
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    k = model.frame_num_tokens
    ids = torch.tensor([[1, 2, *[model.v_token_id] * k, 3, *[model.v_token_id] * k]])
    with torch.inference_mode():
        want = model(ids, frames=frames).logits
        base = load_model(path, overrides=["vlm.frame_resolution=48", "vlm.dtype=float32"])[0].vision(frames)
        assert not torch.allclose(model.vision(frames), base, atol=1e-4)  # the adapter changes the features
    for merge in (True, False):
        loaded, _ = load_model(tmp_path / "ckpt", merge_lora=merge)
        assert has_vision_lora(loaded)
        with torch.inference_mode():
            torch.testing.assert_close(loaded(ids, frames=frames).logits, want, atol=1e-4, rtol=1e-4)


def test_vision_lora_learns_from_the_live_loss(pretrained, tmp_path):
    _, path = pretrained
    model, tok = setup_model(config(path, tmp_path, lora_vision=True))
    tpl = Template.from_config(model.cfg, tok)
    msgs = [{"role": "system", "content": "S"}, {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "assistant", "content": "A red square.", "learn": True}]
    conv = tokenize_conversation(tpl.render(msgs), tok, Markers.from_template(tok, tpl), tpl)
    frames = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # B = 0 gives A no gradient: start from a trained state
        for n, p in model.vision.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    loss = model(torch.tensor([conv.input_ids]), frames=frames, labels=torch.tensor([conv.labels])).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.vision.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for n, p in model.vision.named_parameters() if "lora_" not in n)


def test_refusals_name_the_fields(pretrained, tmp_path):
    family, path = pretrained
    with pytest.raises(ValueError, match="vlm.train_vision trains the vision encoder in full and vlm.lora_vision"):
        config(path, tmp_path, lora_vision=True, train_vision=True)
    with pytest.raises(ValueError, match="train.feature_cache holds .*vlm.lora_projector need the frames decoded"):
        LiveConfig.from_dict({**config(path, tmp_path, lora_projector=True).to_dict(),
                              "train": {"feature_cache": "cache"}})
    if family in MATRIX_PROJECTOR:
        model, _ = load_model(path, overrides=["vlm.frame_resolution=48", "vlm.dtype=float32",
                                               "vlm.lora_projector=true"])
        with pytest.raises(ValueError, match="projector .* has no linear layer for LoRA: train it in full"):
            apply_vision_lora(model)
