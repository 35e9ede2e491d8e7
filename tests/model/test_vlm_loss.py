"""The LIVE objective on every VLM family's own template, by hand: each frame's last token (the family's frame_end)
predicts silence or the speak marker, the reply is learned through its end token, and the loss is
Σ w_i·CE_i / #labelled with w = α (stream_loss_weight) where the input is the frame_end id (SPEC §3)."""

import math

import pytest
import torch

from livecue.config import preset
from livecue.data.labels import IGNORE, Markers, tokenize_conversation
from livecue.data.template import Template
from livecue.model.build import build_model

FAMILIES = ["tiny_qwen2_5_vl", "tiny_qwen3_vl", "tiny_llava_onevision", "tiny_smolvlm", "tiny_gemma3"]
ALPHA = 0.4


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, tok = build_model(preset(request.param, {"stream.stream_loss_weight": ALPHA}))
    tpl = Template.from_config(model.cfg, tok)
    markers = Markers.from_template(tok, tpl)
    msgs = [{"role": "system", "content": "You narrate."}, {"role": "stream", "num_frames": 3, "learn": True},
            {"role": "assistant", "content": "A red square appears.", "learn": True},
            {"role": "stream", "num_frames": 2, "learn": 1}]
    conv = tokenize_conversation(tpl.render(msgs), tok, markers, tpl)
    return model, tok, markers, conv


def test_labels_sit_on_each_frames_last_token_and_the_reply(family):
    model, tok, markers, conv = family
    ids, labels = conv.input_ids, conv.labels
    # each frame's last token: its last placeholder, or the end of the frame suffix after it
    ends = [t + len(markers.frame_suffix) for t, x in enumerate(ids)
            if x == markers.v and (t + 1 == len(ids) or ids[t + 1] != markers.v)]
    assert all(ids[t] == markers.frame_end for t in ends)
    assert len(ends) == 5 and markers.frame_end == model.frame_end_id
    # the first stream: frames 1-2 stay silent, frame 3 speaks; the second stream learns its first frame only
    assert [labels[t] for t in ends[:2]] == [markers.silence] * 2
    assert labels[ends[2]] == markers.speak[0]
    assert labels[ends[3]] == markers.silence and labels[ends[4]] == IGNORE
    # no other placeholder, frame prefix or frame token is labelled
    assert all(labels[t] == IGNORE for t, x in enumerate(ids) if x in markers.frame_tokens and t not in ends)
    # the reply is learned through the family's end of turn (eos), and nothing is learned after the last frame
    learned = [x for x in labels[ends[2] + 1:ends[3]] if x != IGNORE]
    assert learned[-1] == markers.eos and tok.decode(learned).count("A red square appears.") == 1, tok.decode(learned)
    assert all(x == IGNORE for x in labels[ends[4]:])


def test_loss_is_the_weighted_cross_entropy_by_hand(family):
    model, _, markers, conv = family
    ids, labels = torch.tensor([conv.input_ids]), torch.tensor([conv.labels])
    feats = torch.randn(5, model.frame_num_tokens, model.feature_width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model(ids, frame_features=feats, labels=labels)
        only = model(ids, frame_features=feats, labels=labels, labelled_logits_only=True)
    total, count = 0.0, 0
    for t in range(ids.shape[1]):
        target = int(labels[0, t])
        if target == IGNORE:
            continue
        ce = -out.logits[0, t].double().log_softmax(-1)[target].item()
        total += (ALPHA if int(ids[0, t]) == markers.frame_end else 1.0) * ce
        count += 1
    assert count == int((labels != IGNORE).sum()) and count > 6
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)
    assert only.loss.item() == pytest.approx(total / count, rel=1e-5)  # training's labelled-logits path
    unweighted = sum(-out.logits[0, t].double().log_softmax(-1)[int(labels[0, t])].item()
                     for t in range(ids.shape[1]) if int(labels[0, t]) != IGNORE) / count
    assert not math.isclose(out.loss.item(), unweighted, rel_tol=1e-4)  # α reaches the frame decisions
