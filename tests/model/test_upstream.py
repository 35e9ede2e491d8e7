"""The paper's released checkpoint layout: a tiny upstream-layout adapter loads through the user path with logits
equal to a reference assembled by hand; conversion both ways is bit-exact; the engine uses the tokenizer's ids.

The adapter is written the way peft 0.11 (upstream's pin) saves a LoRA whose ``target_modules`` regex names
``lm_head``: ``get_peft_model_state_dict`` keeps the ``lora_`` tensors and the ``modules_to_save`` copies (the
connector, ``…connector.modules_to_save.default.`` -> ``…connector.``), and because an embedding-layer name
(``EMBEDDING_LAYER_NAMES = ["embed_tokens", "lm_head"]``) appears in ``target_modules`` it sets
``save_embedding_layers = True`` and also saves every state-dict entry under each LoRA-wrapped input/output
embedding's ``base_layer``: here ``base_model.model.lm_head.base_layer.weight``, the frozen head. ``embed_tokens`` is
not LoRA-wrapped (no ``base_layer``), so it is not saved. ``test_fixture_keys_are_what_peft_saves`` checks the key set
against the installed peft.
"""

import json
import re

import pytest
import torch
import torch.nn.functional as F

from livecue import cli
from livecue.config import UPSTREAM_SYSTEM_PROMPT
from livecue.data.labels import add_frame_placeholder
from livecue.model.tiny_tokenizer import load_tiny_tokenizer

pytest.importorskip("peft", reason="LoRA needs peft (the [train] extra)")

UPSTREAM_TARGETS = "model.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)|lm_head$"
R, ALPHA = 4, 8


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A tiny Llama base, a tiny SigLIP tower and an adapter directory in the exact upstream layout."""
    return make_upstream(tmp_path_factory.mktemp("upstream"))


def make_upstream(root):
    """Write ``base/``, ``vision/`` and ``adapter/`` (upstream layout, as peft 0.11 saves it) under ``root``;
    returns ``(root, adapter tensors)``."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, SiglipVisionModel

    tok = load_tiny_tokenizer()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False))
    base.save_pretrained(root / "base")
    vision = SiglipVisionModel(AutoConfig.for_model(
        "siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=384, patch_size=96))
    vision.save_pretrained(root / "vision")

    adapter = root / "adapter"
    adapter.mkdir()
    add_frame_placeholder(tok, "<v>")  # upstream adds <v> to the tokenizer and saves it with the adapter
    tok.save_pretrained(adapter)
    tensors = {}
    pattern = re.compile(UPSTREAM_TARGETS)
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name):
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(R, module.in_features) * 0.1
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(module.out_features, R) * 0.1
    tensors["base_model.model.connector.0.weight"] = torch.randn(64, 32) * 0.2
    tensors["base_model.model.connector.0.bias"] = torch.randn(64) * 0.1
    tensors["base_model.model.connector.2.weight"] = torch.randn(64, 64) * 0.1
    tensors["base_model.model.connector.2.bias"] = torch.randn(64) * 0.1
    tensors["base_model.model.lm_head.base_layer.weight"] = base.lm_head.weight.detach().clone()  # peft 0.11 adds it
    save_file(tensors, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    (adapter / "adapter_config.json").write_text(json.dumps({
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": str(root / "base"), "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layer_replication": None,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": ALPHA,
        "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": ["connector"], "peft_type": "LORA", "r": R, "rank_pattern": {}, "revision": None,
        "target_modules": UPSTREAM_TARGETS, "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False}))
    assert "base_model.model.lm_head.lora_A.weight" in tensors
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in tensors
    return root, tensors


def test_fixture_keys_are_what_peft_saves(upstream):
    """The fixture's LM keys are exactly what peft's get_peft_model_state_dict saves for these targets (the frozen
    head included; the same logic as peft 0.11's), and the frozen head is the base's."""
    import warnings

    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    root, tensors = upstream
    base = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=UPSTREAM_TARGETS,
                                                 task_type="CAUSAL_LM"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = get_peft_model_state_dict(peft_model)  # save_embedding_layers="auto", as save_pretrained uses
    assert set(saved) == {k for k in tensors if ".connector." not in k}
    assert torch.equal(saved["base_model.model.lm_head.base_layer.weight"],
                       tensors["base_model.model.lm_head.base_layer.weight"])


def reference_logits(root, tensors, ids, frames):
    """Assemble the model by hand from the same tensors: merged LoRA, SigLIP tokens, connector, splice."""
    from transformers import AutoModelForCausalLM, SiglipVisionModel

    lm = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
    with torch.no_grad():
        for name, module in lm.named_modules():
            a = tensors.get(f"base_model.model.{name}.lora_A.weight")
            if a is not None:
                b = tensors[f"base_model.model.{name}.lora_B.weight"]
                module.weight += (ALPHA / R) * b @ a
        tower = SiglipVisionModel.from_pretrained(root / "vision")
        pixels = (frames.float() / 255 - 0.5) / 0.5                       # 384×384 frames: no letterbox needed
        out = tower(pixel_values=pixels)
        grid = out.last_hidden_state.transpose(1, 2).reshape(len(frames), 32, 4, 4)
        pooled = F.adaptive_avg_pool2d(grid, 3).flatten(2).transpose(1, 2)            # (F, 9, 32)
        feats = torch.cat([out.pooler_output[:, None], pooled], 1)                    # (F, 10, 32)
        h = F.linear(feats, tensors["base_model.model.connector.0.weight"],
                     tensors["base_model.model.connector.0.bias"])
        h = F.linear(F.gelu(h), tensors["base_model.model.connector.2.weight"],
                     tensors["base_model.model.connector.2.bias"])
        table = lm.get_input_embeddings().weight
        v_id = table.shape[0]  # <v> was added after the base vocabulary
        embeds = table[ids.clamp(max=v_id - 1)]
        embeds[ids == v_id] = h.reshape(-1, 64)
        return lm(inputs_embeds=embeds).logits


def sample_ids(tok, n_frames):
    from livecue.data.template import Template

    tpl = Template(bos=tok.bos_token, eos=tok.eos_token, frame_num_tokens=10, frame_interval=",")
    text = tpl.render([{"role": "system", "content": UPSTREAM_SYSTEM_PROMPT},
                       {"role": "stream", "num_frames": n_frames},
                       {"role": "user", "content": "What is happening?"}], add_generation_prompt=True).text
    return torch.tensor([tok(text, add_special_tokens=False).input_ids])


def test_upstream_layout_loads_with_reference_logits(upstream):
    from livecue.model.load import load_model

    root, tensors = upstream
    frames = torch.randint(0, 256, (3, 3, 384, 384), dtype=torch.uint8)
    for merge in (True, False):
        model, tok = load_model(root / "adapter", vision=str(root / "vision"), dtype="float32", merge_lora=merge)
        ids = sample_ids(tok, 3)
        with torch.no_grad():
            got = model(ids, frames=frames).logits
        torch.testing.assert_close(got, reference_logits(root, tensors, ids, frames), atol=1e-4, rtol=1e-4)
    assert model.cfg.frame_num_tokens == 10 and model.cfg.stream.frame_interval == ","
    assert (model.cfg.lora.r, model.cfg.lora.alpha) == (R, ALPHA)


def test_engine_uses_tokenizer_ids_and_upstream_threshold(upstream):
    from livecue.inference.engine import StreamEngine
    from livecue.model.load import load_model

    root, _ = upstream
    model, tok = load_model(root / "adapter", vision=str(root / "vision"), dtype="float32")
    engine = StreamEngine(model, tok)
    assert engine.markers.silence == tok(",", add_special_tokens=False).input_ids[0]
    assert engine.markers.speak == tuple(tok("]\n", add_special_tokens=False).input_ids)
    assert len(engine.markers.speak) == 1  # "]\n" is one token, as in Llama-3
    assert engine.markers.v == tok.convert_tokens_to_ids("<v>") and engine.markers.eos == tok.eos_token_id
    session = engine.session()
    assert session.threshold == 0.725 and session.system_prompt == UPSTREAM_SYSTEM_PROMPT
    events = list(session.push_frame(torch.randint(0, 256, (3, 200, 300), dtype=torch.uint8), 0.0))
    assert events[0].type in ("silence", "reply")


def test_convert_both_ways_is_bit_exact(upstream, tmp_path):
    from safetensors.torch import load_file

    from livecue.model.load import load_model

    root, tensors = upstream
    out = tmp_path / "livecue"
    assert cli.main(["convert", str(root / "adapter"), "--out", str(out), "--vision", str(root / "vision")]) == 0
    assert (out / "livecue_config.json").exists()
    card = (out / "README.md").read_text()  # a model card naming where the adapter came from
    assert card.startswith("---\n") and str(root / "adapter") in card
    converted = {**load_file(str(out / "adapter_model.safetensors")),
                 **{"base_model.model." + k: v for k, v in load_file(str(out / "livecue_model.safetensors")).items()}}
    assert converted.keys() == tensors.keys()
    assert all(torch.equal(converted[k], tensors[k]) for k in tensors)

    a, tok = load_model(out, dtype="float32")
    b, _ = load_model(root / "adapter", vision=str(root / "vision"), dtype="float32")
    ids = sample_ids(tok, 1)
    feats = torch.randn(1, 10, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(ids, frame_features=feats).logits, b(ids, frame_features=feats).logits)

    back = tmp_path / "back"
    assert cli.main(["convert", str(out), "--to-upstream", "--out", str(back)]) == 0
    again = load_file(str(back / "adapter_model.safetensors"))
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)
    config = json.loads((back / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["connector"] and config["r"] == R


def test_watch_runs_on_upstream_layout(upstream, tmp_path):
    import numpy as np

    root, _ = upstream
    video = tmp_path / "frames.npy"
    np.save(video, np.random.default_rng(0).integers(0, 256, (4, 120, 160, 3), dtype=np.uint8))
    out = tmp_path / "e.jsonl"
    # an image folder source stands in for a video file here (no codec needed)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    import av

    for i, frame in enumerate(np.load(video)):
        with av.open(str(imgs / f"{i}.png"), "w") as c:
            s = c.add_stream("png")
            s.width, s.height, s.pix_fmt = 160, 120, "rgb24"
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
    rc = cli.main(["watch", str(imgs), "--adapter", str(root / "adapter"), "--base", str(root / "base"),
                   "--vision", str(root / "vision"), "--dtype", "float32", "--max-reply-tokens", "2",
                   "--jsonl", str(out), "--quiet"])
    assert rc == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["t"] for e in events] == [0.0, 0.5, 1.0, 1.5]


def test_missing_parts_are_explained(upstream, tmp_path, capsys):
    root, _ = upstream
    rc = cli.main(["info", "--adapter", str(root / "adapter")])  # vision defaults to the SigLIP hub id: offline
    err = capsys.readouterr().err
    assert rc == 1 and "google/siglip-large-patch16-384" in err and err.strip().count("\n") == 0
    rc = cli.main(["info", "--adapter", str(root / "adapter"), "--base", str(tmp_path / "no-such-base"),
                   "--vision", str(root / "vision")])
    err = capsys.readouterr().err
    assert rc == 1 and "no-such-base" in err


def test_frozen_head_must_be_the_bases(upstream, tmp_path, capsys):
    """peft's frozen copy of lm_head is checked against the base on every loading path: a different head means the
    adapter was trained over another base, refused naming the tensor (directly, and after convert)."""
    import shutil

    from safetensors.torch import save_file

    root, tensors = upstream
    bad = tmp_path / "adapter"
    shutil.copytree(root / "adapter", bad)
    key = "base_model.model.lm_head.base_layer.weight"
    save_file({**tensors, key: tensors[key] + 0.01}, str(bad / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    args = ["--base", str(root / "base"), "--vision", str(root / "vision"), "--dtype", "float32"]
    assert cli.main(["info", "--adapter", str(bad), *args]) == 1
    err = error_line(capsys.readouterr().err)
    assert key in err and "differs from the base" in err
    out = tmp_path / "converted"
    assert cli.main(["convert", str(bad), "--out", str(out), "--vision", str(root / "vision")]) == 0  # no base here
    capsys.readouterr()
    assert cli.main(["info", "--model", str(out)]) == 1
    err = error_line(capsys.readouterr().err)
    assert key in err and "differs from the base" in err


def test_frozen_head_in_another_dtype_is_the_same_head(upstream, tmp_path):
    """A bfloat16 copy of a float32 base's head (a bf16 training run) is the same head: accepted."""
    import shutil

    from safetensors.torch import save_file

    from livecue.model.load import load_model

    root, tensors = upstream
    half = tmp_path / "adapter"
    shutil.copytree(root / "adapter", half)
    key = "base_model.model.lm_head.base_layer.weight"
    save_file({**tensors, key: tensors[key].bfloat16()}, str(half / "adapter_model.safetensors"))
    model, _ = load_model(half, base=str(root / "base"), vision=str(root / "vision"), dtype="float32",
                          merge_lora=False)
    head = model.lm.get_output_embeddings().base_layer.weight.detach()
    assert torch.equal(head, load_base_head(root))  # checked, not loaded: the head stays the base's float32 one


@pytest.mark.parametrize("direction", ["to-livecue", "to-upstream"])
@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "nan"])
def test_convert_refuses_corrupt_files(direction, corrupt, upstream, tmp_path, capsys):
    """``livecue convert`` (both ways) checks the files it copies: one line naming the file, no traceback."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    from livecue.model.upstream import convert_to_livecue

    root, _ = upstream
    src = tmp_path / "src"
    if direction == "to-livecue":
        shutil.copytree(root / "adapter", src)
        args = ["convert", str(src), "--out", str(tmp_path / "out"), "--vision", str(root / "vision")]
    else:
        convert_to_livecue(root / "adapter", src, vision=str(root / "vision"))
        args = ["convert", str(src), "--to-upstream", "--out", str(tmp_path / "out")]
    file = src / "adapter_model.safetensors"
    if corrupt == "nan":
        state = load_file(str(file))
        state["base_model.model.lm_head.lora_A.weight"][0, 0] = float("nan")
        save_file(state, str(file))
    else:
        file.write_bytes(file.read_bytes()[:1000] if corrupt == "truncated" else os.urandom(4096))
    capsys.readouterr()
    assert cli.main(args) == 1
    assert str(file) in error_line(capsys.readouterr().err)


def test_convert_never_writes_over_its_source(upstream, tmp_path, capsys):
    import shutil

    root, _ = upstream
    src = tmp_path / "src"
    shutil.copytree(root / "adapter", src)
    before = (src / "adapter_model.safetensors").read_bytes()
    assert cli.main(["convert", str(src), "--out", str(src)]) == 1
    assert "is the source directory" in error_line(capsys.readouterr().err)
    assert (src / "adapter_model.safetensors").read_bytes() == before and not (src / "livecue_config.json").exists()


def error_line(err):
    """The one error line of a failed command (transformers' loading progress bars aside); no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("livecue ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def load_base_head(root):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
    return lm.lm_head.weight.detach()
