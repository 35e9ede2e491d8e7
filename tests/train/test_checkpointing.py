"""train.gradient_checkpointing on every base (the composed tiny and each VLM family): the decoder layers recompute
their activations in the backward, and the loss and every trainable gradient equal those without it."""

import pytest
import torch

from livecue.config import preset
from livecue.data.labels import Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.train.trainable import setup_model

PRESETS = ["tiny", "tiny_qwen2_5_vl", "tiny_qwen3_vl", "tiny_llava_onevision", "tiny_smolvlm", "tiny_gemma3"]


def trained(name, checkpointing, tmp_path):
    cfg = preset(name, {"train.gradient_checkpointing": checkpointing, "lora.dropout": 0.0,
                        "train.output_dir": str(tmp_path)})
    return setup_model(cfg)


@pytest.mark.parametrize("name", PRESETS)
def test_checkpointing_recomputes_and_changes_no_gradient(name, tmp_path):
    plain, tok = trained(name, False, tmp_path)
    ckpt, _ = trained(name, True, tmp_path)
    ckpt.load_state_dict(plain.state_dict())
    tpl = Template.from_config(plain.cfg, tok)
    msgs = [{"role": "system", "content": "S"}, {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "assistant", "content": "A red square.", "learn": True}]
    conv = tokenize_conversation(tpl.render(msgs), tok, Markers.from_template(tok, tpl), tpl)
    ids, labels = torch.tensor([conv.input_ids]), torch.tensor([conv.labels])
    feats = torch.randn(2, plain.frame_num_tokens, plain.feature_width, generator=torch.Generator().manual_seed(0))
    results = []
    for model in (plain, ckpt):
        layer = next(m for m in model.lm.modules() if type(m).__name__.endswith("DecoderLayer"))
        calls = []
        # a pre-hook inside the layer's forward (torch's recompute stops early, before later hooks would run)
        hook = layer.self_attn.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        loss = model(ids, frame_features=feats, labels=labels).loss
        loss.backward()
        hook.remove()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads, len(calls)))
    (loss_a, grads_a, calls_a), (loss_b, grads_b, calls_b) = results
    assert (calls_a, calls_b) == (1, 2)  # the checkpointed layer's forward ran again in the backward
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert grads_a.keys() == grads_b.keys() and any("lora" in n for n in grads_a)
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], atol=1e-6, rtol=1e-4, msg=n)
