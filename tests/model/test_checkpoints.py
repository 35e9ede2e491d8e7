"""The checkpoint-corruption matrix: every way a checkpoint can be broken is refused before its weights are used,
with one line naming the file and what is wrong, through the CLI (exit 1, one stderr line, no traceback) and the
Python API (ValueError / FileNotFoundError / OSError). Never a random tensor under a checkpoint's name.

Bases, built once per module and copied per case: livecue checkpoints of the tiny preset (``save_checkpoint``,
with and without a LoRA adapter), an upstream-layout adapter directory (as peft 0.11 saves it) over a tiny base LM,
and that adapter's pretrained vision-tower directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from livecue import cli

pytest.importorskip("peft", reason="LoRA needs peft (the [train] extra)")

WEIGHTS, ADAPTER, ADAPTER_CONFIG = "livecue_model.safetensors", "adapter_model.safetensors", "adapter_config.json"
CONFIG = "livecue_config.json"
LORA_B = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"


# ---- bases --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from test_upstream import make_upstream
    from transformers.utils import logging as hf_logging

    from livecue.config import preset
    from livecue.model.build import build_model
    from livecue.model.load import save_checkpoint
    from livecue.model.lora import apply_lora

    hf_logging.disable_progress_bar()  # stderr holds only livecue's own line
    root = tmp_path_factory.mktemp("bases")
    model, tok = build_model(preset("tiny"))
    save_checkpoint(model, tok, root / "plain")
    model, tok = build_model(preset("tiny"))
    apply_lora(model)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    save_checkpoint(model, tok, root / "lora")
    make_upstream(root / "up")
    yield root
    hf_logging.enable_progress_bar()


# ---- corruptions --------------------------------------------------------------------------------------------------
def edit_tensors(file: Path, change: Callable[[dict], None]) -> None:
    from safetensors.torch import load_file, save_file

    state = dict(load_file(str(file)))
    change(state)
    save_file(state, str(file), metadata={"format": "pt"})


def tensors(change):
    return lambda file: edit_tensors(file, change)


def js(change):
    def edit(file: Path) -> None:
        data = json.loads(file.read_text())
        change(data)
        file.write_text(json.dumps(data))
    return edit


def drop(prefix):
    return lambda t: [t.pop(k) for k in [k for k in t if k.startswith(prefix)]]


def put(key, value):
    return lambda t: t.__setitem__(key, value)


def poison(key, value):
    def change(t):
        t[key] = t[key].clone()
        t[key].view(-1)[0] = value
    return change


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def garbage(file: Path) -> None:
    file.write_bytes(os.urandom(4096))


def remove(file: Path) -> None:
    file.unlink()


def set_path(*keys_value):
    *keys, value = keys_value

    def change(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


@dataclass
class Case:
    base: str                        # a key of BASES
    file: str                        # the file corrupted (in the base's directory)
    corrupt: Callable[[Path], None]  # applied to that file
    error: type                      # the API's exception type
    message: str                     # regex the one line must match


# base -> (directory of the module's bases copied per case, the sub-directory holding the corrupted file)
BASES = {"plain": ("plain", ""), "lora": ("lora", ""), "up": ("up", "adapter"), "vision": ("up", "vision"),
         "basel": ("up", "base")}


LIVECUE = {
    "missing-weights-file": Case("plain", WEIGHTS, remove, FileNotFoundError, "is missing: a livecue checkpoint"),
    "missing-tensor": Case("plain", WEIGHTS, tensors(drop("lm.model.layers.1.")), ValueError,
                           r"lacks 9 tensors the config in livecue_config.json needs: lm\.model\.layers\.1\.\* "
                           r"\(9 tensors\) \(the config in livecue_config.json has 2 lm\.model\.layers, the file 1\)"),
    "missing-connector": Case("plain", WEIGHTS, tensors(drop("connector.0.bias")), ValueError,
                              r"lacks 1 tensor .* needs: connector\.0\.bias$"),
    "missing-vision": Case("plain", WEIGHTS, tensors(drop("vision.tower.")), ValueError,
                           r"lacks \d+ tensors .* needs: vision\.tower\."),
    "unexpected-tensor": Case("plain", WEIGHTS, tensors(put("lm.extra.weight", torch.zeros(3))), ValueError,
                              r"holds 1 tensor the config in livecue_config.json does not have: lm\.extra\.weight"),
    "wrong-shape": Case("plain", WEIGHTS, tensors(put("lm.model.embed_tokens.weight", torch.zeros(100, 64))),
                        ValueError, r"'lm\.model\.embed_tokens\.weight' is \(100, 64\) in the file but "
                                    r"\(\d+, 64\) for the config"),
    "nan": Case("plain", WEIGHTS, tensors(poison("lm.model.norm.weight", float("nan"))), ValueError,
                r"tensor 'lm\.model\.norm\.weight' holds non-finite values"),
    "inf": Case("plain", WEIGHTS, tensors(poison("connector.2.bias", float("inf"))), ValueError,
                r"tensor 'connector\.2\.bias' holds non-finite values"),
    "truncated": Case("plain", WEIGHTS, truncate, ValueError, "not a valid safetensors file .truncated or corrupt."),
    "garbage": Case("plain", WEIGHTS, garbage, ValueError, "not a valid safetensors file .truncated or corrupt."),
    "config-bad-json": Case("plain", CONFIG, lambda f: f.write_text('{"name": "tiny",\n  "vision": {,}}'),
                            ValueError, r"^invalid JSON in '.*livecue_config\.json' at line 2 column \d+: "),
    "config-wrong-type": Case("plain", CONFIG, js(set_path("stream", "threshold", "high")), ValueError,
                              r"^invalid config '.*livecue_config\.json': config key 'stream\.threshold' must be a "
                              r"number"),
    "config-not-object": Case("plain", CONFIG, lambda f: f.write_text("[1, 2]"), ValueError,
                              r"^invalid config '.*livecue_config\.json': .*must be a mapping"),
    "config-more-layers": Case("plain", CONFIG, js(set_path("lm", "random_init", "num_hidden_layers", 3)),
                               ValueError, r"lacks 9 tensors .* lm\.model\.layers\.2\.\* \(9 tensors\) \(the config "
                                           r"in livecue_config.json has 3 lm\.model\.layers, the file 2\)"),
    "config-fewer-layers": Case("plain", CONFIG, js(set_path("lm", "random_init", "num_hidden_layers", 1)),
                                ValueError, r"holds 9 tensors .* does not have: lm\.model\.layers\.1\.\*"),
    "config-wider-vision": Case("plain", CONFIG, js(set_path("vision", "random_init", "hidden_size", 48)),
                                ValueError, r"' is \(.*\) in the file but \(.*\) for the config"),
    "no-tokenizer-vocab": Case("plain", "tokenizer.json", remove, FileNotFoundError,
                               "has no tokenizer vocabulary"),
    "no-tokenizer-config": Case("plain", "tokenizer_config.json", remove, FileNotFoundError,
                                "has no tokenizer_config.json"),
    "tokenizer-garbage": Case("plain", "tokenizer.json", lambda f: f.write_text("{not json"), OSError,
                              "cannot load the tokenizer from directory"),
    # the LoRA adapter of a livecue checkpoint
    "lora-lm-tensors-missing": Case("lora", WEIGHTS, tensors(drop("lm.model.layers.0.mlp.")), ValueError,
                                   r"lacks 3 tensors .* lm\.model\.layers\.0\.\* \(3 tensors\)"),
    "adapter-missing-file": Case("lora", ADAPTER, remove, FileNotFoundError, "is missing: the checkpoint's LoRA"),
    "adapter-both-files-missing": Case("lora", ADAPTER, lambda f: [f.unlink(), (f.parent / ADAPTER_CONFIG).unlink()],
                                       FileNotFoundError, r"is missing: '.*livecue_model\.safetensors' was saved "
                                                          r"with a LoRA adapter beside it"),
    "adapter-missing-tensor": Case("lora", ADAPTER, tensors(drop(LORA_B)), ValueError,
                                   r"adapter_model\.safetensors' lacks 1 tensor .*: "
                                   r"base_model\.model\.model\.layers\.1\.\*"),
    "adapter-unexpected-tensor": Case("lora", ADAPTER, tensors(put(LORA_B.replace(".1.", ".7."), torch.zeros(128, 8))),
                                      ValueError, r"holds 1 tensor .* does not have: base_model\.model\.model\."
                                                  r"layers\.7\.\*"),
    "adapter-wrong-shape": Case("lora", ADAPTER, tensors(put(LORA_B, torch.zeros(64, 4))), ValueError,
                                r"'base_model\.model\.model\.layers\.1\.mlp\.down_proj\.lora_B\.weight' is \(64, 4\) "
                                r"in the file but \(64, 8\)"),
    "adapter-nan": Case("lora", ADAPTER, tensors(poison(LORA_B, float("nan"))), ValueError, "holds non-finite"),
    "adapter-truncated": Case("lora", ADAPTER, truncate, ValueError, "not a valid safetensors file"),
    "adapter-garbage": Case("lora", ADAPTER, garbage, ValueError, "not a valid safetensors file"),
    "adapter-config-bad-json": Case("lora", ADAPTER_CONFIG, lambda f: f.write_text('{"r": 8,'), ValueError,
                                    r"^invalid JSON in '.*adapter_config\.json' at line 1 column \d+"),
    "adapter-config-wrong-type": Case("lora", ADAPTER_CONFIG, js(set_path("r", "eight")), ValueError,
                                      r"adapter_config\.json': r must be a positive integer, got 'eight'"),
    "adapter-config-disagrees": Case("lora", ADAPTER_CONFIG, js(set_path("lora_alpha", 99)), ValueError,
                                     r"adapter_config\.json' says lora_alpha=99 but livecue_config\.json has "
                                     r"lora\.alpha=16"),
    "adapter-config-missing": Case("lora", ADAPTER_CONFIG, remove, FileNotFoundError, "is missing"),
}

UPSTREAM = {
    "up-missing-weights-file": Case("up", ADAPTER, remove, FileNotFoundError, "is missing: the adapter's weights"),
    "up-missing-lora": Case("up", ADAPTER, tensors(drop(LORA_B)), ValueError,
                            r"lacks 1 tensor the base LM with this adapter's LoRA settings needs"),
    "up-missing-connector": Case("up", ADAPTER, tensors(drop("base_model.model.connector.2.")), ValueError,
                                 r"lacks 2 tensors .*: base_model\.model\.connector\.2\.weight, "),
    "up-unexpected-lora": Case("up", ADAPTER, tensors(put(LORA_B.replace(".1.", ".5."), torch.zeros(64, 4))),
                               ValueError, r"holds 1 tensor .* does not have: base_model\.model\.model\.layers\.5\.\* "
                                           r"\(.* has 2 base_model\.model\.model\.layers, the file 3\)"),
    "up-unexpected-kind": Case("up", ADAPTER, tensors(put("base_model.model.model.norm.weight", torch.ones(64))),
                               ValueError, r"neither LoRA, connector nor frozen base-layer weights: "
                                           r"base_model\.model\.model\.norm\.weight"),
    "up-wrong-shape": Case("up", ADAPTER, tensors(put("base_model.model.connector.0.weight", torch.zeros(64, 48))),
                           ValueError, r"'base_model\.model\.connector\.0\.weight' is \(64, 48\) in the file but "
                                       r"\(64, 32\)"),
    "up-head-wrong-shape": Case("up", ADAPTER, tensors(put("base_model.model.lm_head.base_layer.weight",
                                                           torch.zeros(3, 64))), ValueError,
                                r"'base_model\.model\.lm_head\.base_layer\.weight' is \(3, 64\) in the file"),
    "up-nan": Case("up", ADAPTER, tensors(poison("base_model.model.connector.0.bias", float("nan"))), ValueError,
                   r"tensor 'base_model\.model\.connector\.0\.bias' holds non-finite"),
    "up-truncated": Case("up", ADAPTER, truncate, ValueError, "not a valid safetensors file"),
    "up-garbage": Case("up", ADAPTER, garbage, ValueError, "not a valid safetensors file"),
    "up-config-bad-json": Case("up", ADAPTER_CONFIG, lambda f: f.write_text("{'r': 4}"), ValueError,
                               r"^invalid JSON in '.*adapter_config\.json' at line 1 column 2"),
    "up-config-wrong-type": Case("up", ADAPTER_CONFIG, js(set_path("lora_alpha", [8])), ValueError,
                                 r"lora_alpha must be a positive integer, got \[8\]"),
    "up-config-missing-r": Case("up", ADAPTER_CONFIG, js(lambda d: d.pop("r")), ValueError,
                                r"r must be a positive integer, got None"),
    "up-config-not-lora": Case("up", ADAPTER_CONFIG, js(set_path("peft_type", "IA3")), ValueError,
                               r"peft_type must be LORA, got 'IA3'"),
    "up-config-vs-weights": Case("up", ADAPTER_CONFIG, js(set_path("r", 8)), ValueError,
                                 r"lora_A\.weight' is \(4, 64\) in the file but \(8, 64\)"),
    "up-no-tokenizer-vocab": Case("up", "tokenizer.json", remove, FileNotFoundError, "has no tokenizer vocabulary"),
    # the vision tower directory (loaded through transformers) and the base LM directory
    "vision-missing-file": Case("vision", "model.safetensors", remove, OSError,
                                "cannot load the vision tower from directory"),
    "vision-missing-tensor": Case("vision", "model.safetensors", tensors(drop("post_layernorm.weight")),
                                  ValueError, r"model\.safetensors' lacks 1 tensor the vision tower needs: "
                                              r"post_layernorm\.weight"),
    "vision-wrong-shape": Case("vision", "model.safetensors", tensors(put("post_layernorm.weight", torch.ones(31))),
                               ValueError, r"'post_layernorm\.weight' is \(31,\) in the file but \(32,\) for the "
                                           r"vision tower"),
    "vision-nan": Case("vision", "model.safetensors", tensors(poison("post_layernorm.bias", float("nan"))),
                       ValueError, r"tensor '.*post_layernorm\.bias' holds non-finite"),
    "vision-truncated": Case("vision", "model.safetensors", truncate, ValueError, "not a valid safetensors file"),
    "vision-garbage": Case("vision", "model.safetensors", garbage, ValueError, "not a valid safetensors file"),
    "vision-config-bad-json": Case("vision", "config.json", lambda f: f.write_text("{"), ValueError,
                                   r"^invalid JSON in '.*config\.json' at line 1 column 2"),
    "vision-preprocessor-bad-json": Case("vision", "preprocessor_config.json", lambda f: f.write_text('{"a": }'),
                                         ValueError, r"^invalid JSON in '.*preprocessor_config\.json' at line 1"),
    "base-missing-tensor": Case("basel", "model.safetensors", tensors(drop("model.layers.1.mlp.up_proj.")),
                                ValueError, r"model\.safetensors' lacks 1 tensor the language model needs: "
                                            r"model\.layers\.1\.\*"),
    "base-truncated": Case("basel", "model.safetensors", truncate, ValueError, "not a valid safetensors file"),
}
CASES = {**LIVECUE, **UPSTREAM}


def prepare(bases: Path, tmp_path: Path, case: Case) -> tuple[list[str], Callable[[], object], Path]:
    """Copy the base, corrupt it; returns ``(CLI args, API call, corrupted file)``."""
    from livecue.model.load import load_model

    source, sub = BASES[case.base]
    root = tmp_path / "b"
    shutil.copytree(bases / source, root)
    target = root / sub / case.file
    case.corrupt(target)
    if source != "up":
        return ["info", "--model", str(root)], lambda: load_model(root), target
    parts = {"adapter": str(root / "adapter"), "base": str(root / "base"), "vision": str(root / "vision")}
    args = ["info", "--adapter", parts["adapter"], "--base", parts["base"], "--vision", parts["vision"],
            "--dtype", "float32"]
    return args, lambda: load_model(parts["adapter"], base=parts["base"], vision=parts["vision"],
                                    dtype="float32"), target


def check_line(line: str, case: Case, target: Path) -> None:
    """One line naming the corrupted file (or, for a missing tokenizer / weights file, its directory), matching the
    case's message."""
    assert "\n" not in line.strip(), line
    assert str(target) in line or str(target.parent) in line, f"{line!r} does not name {target}"
    assert re.search(case.message, line), f"{line!r} !~ {case.message!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_corruption_is_refused_by_the_cli(name, bases, tmp_path, capsys):
    case = CASES[name]
    args, _, target = prepare(bases, tmp_path, case)
    capsys.readouterr()
    assert cli.main(args) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line on stderr
    assert err.startswith("livecue info: error: ")
    check_line(err[len("livecue info: error: "):], case, target)


@pytest.mark.parametrize("name", list(CASES))
def test_corruption_is_refused_by_the_api(name, bases, tmp_path):
    case = CASES[name]
    _, load, target = prepare(bases, tmp_path, case)
    with pytest.raises(case.error) as info:
        load()
    check_line(str(info.value), case, target)


@pytest.mark.parametrize("base", ["plain", "lora", "up"])
def test_bases_load(base, bases, capsys):
    """The matrix is not vacuous: every uncorrupted base loads, and holds what was saved."""
    from safetensors.torch import load_file

    up = bases / "up"
    args = (["info", "--adapter", str(up / "adapter"), "--base", str(up / "base"), "--vision", str(up / "vision"),
             "--dtype", "float32"] if base == "up" else ["info", "--model", str(bases / base)])
    assert cli.main(args) == 0
    if base != "up":
        from livecue.model.load import load_model

        model, _ = load_model(bases / base, merge_lora=False)
        saved = load_file(str(bases / base / WEIGHTS))
        assert torch.equal(model.lm.model.norm.weight, saved["lm.model.norm.weight"])
        assert torch.equal(model.connector[2].bias, saved["connector.2.bias"])


@pytest.mark.parametrize("name", ["nan", "truncated", "adapter-nan", "adapter-both-files-missing",
                                  "config-bad-json", "no-tokenizer-vocab"])
def test_files_are_checked_without_building(name, bases, tmp_path):
    """``check_checkpoint_files`` (for a resume that must trust a checkpoint) finds the same faults unbuilt."""
    from livecue.model.load import check_checkpoint_files

    case = CASES[name]
    _, _, target = prepare(bases, tmp_path, case)
    with pytest.raises(case.error) as info:
        check_checkpoint_files(tmp_path / "b")
    check_line(str(info.value), case, target)
    assert check_checkpoint_files(bases / case.base).name == "tiny"


def test_frame_encoder_is_checked(bases, tmp_path):
    """``load_frame_encoder`` (``livecue encode``) takes a random tower's weights from the checkpoint, checked: no
    random tower under a checkpoint's name."""
    from livecue.model.load import load_frame_encoder

    ckpt = tmp_path / "c"
    shutil.copytree(bases / "plain", ckpt)
    load_frame_encoder(ckpt)
    edit_tensors(ckpt / WEIGHTS, poison("vision.tower.post_layernorm.weight", float("inf")))
    with pytest.raises(ValueError, match=r"livecue_model\.safetensors': tensor 'vision\.tower\.post_layernorm\.weight"
                                         r"' holds non-finite"):
        load_frame_encoder(ckpt)
    edit_tensors(ckpt / WEIGHTS, drop("vision.tower.post_layernorm."))
    with pytest.raises(ValueError, match=r"lacks 2 tensors .*: vision\.tower\.post_layernorm\.weight, "):
        load_frame_encoder(ckpt)
    (ckpt / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"livecue_model\.safetensors' is missing"):
        load_frame_encoder(ckpt)


def test_config_only_directory_is_not_a_random_model(tmp_path, capsys):
    """``livecue config --save DIR`` writes only livecue_config.json: loading DIR is refused (it used to run a
    random model with exit 0); the config file itself still builds a random model on purpose."""
    from livecue.config import preset
    from livecue.model.load import load_model

    preset("tiny").save(tmp_path)
    assert cli.main(["info", "--model", str(tmp_path)]) == 1
    assert "livecue_model.safetensors' is missing" in capsys.readouterr().err
    model, _ = load_model(tmp_path / CONFIG)
    assert model.cfg.name == "tiny"


def test_weights_must_match_the_manifest_of_a_training_run(bases, tmp_path, capsys):
    """A checkpoint a training run wrote carries a manifest: a flipped bit inside a tensor's bytes (still finite,
    right names and shapes) is refused naming the file; a hand-edited config (e.g. a calibrated θ) still loads."""
    from livecue.model.load import load_model
    from livecue.train.checkpoint import MODEL_FORMAT, write_manifest

    ckpt = tmp_path / "final"
    shutil.copytree(bases / "lora", ckpt)
    write_manifest(ckpt, {"format": MODEL_FORMAT})
    config = json.loads((ckpt / CONFIG).read_text())
    config["stream"]["threshold"] = 0.5
    (ckpt / CONFIG).write_text(json.dumps(config))
    assert load_model(ckpt)[0].cfg.stream.threshold == 0.5
    for name in (WEIGHTS, ADAPTER):
        broken = tmp_path / name
        shutil.copytree(ckpt, broken)
        data = bytearray((broken / name).read_bytes())
        data[-4] ^= 1  # the lowest mantissa bit of the last float32: finite, every structural check passes
        (broken / name).write_bytes(bytes(data))
        assert cli.main(["info", "--model", str(broken)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and "does not match its sha256 in livecue_manifest.json" in err[0]


def test_efficientnet_weights_are_checked(tmp_path):
    """The EfficientNet-Lite0 tower's ``torch.save`` weights: corrupt, incomplete or non-finite -> one line."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="the EfficientNet tower needs the [models] extra")
    from efficientnet_lite_pytorch import EfficientNet

    from livecue.config import VisionConfig
    from livecue.model.vision import build_frame_encoder

    state = EfficientNet.from_name("efficientnet-lite0", image_size=64).state_dict()
    file = tmp_path / "lite0.pth"
    cfg = VisionConfig(kind="efficientnet_lite0", name_or_path=str(file), resolution=64)
    torch.save(state, file)
    build_frame_encoder(cfg)
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"lite0\.pth': not a valid EfficientNet-Lite0 weights file"):
        build_frame_encoder(cfg)
    torch.save({k: v for k, v in state.items() if k != "_bn1.weight"}, file)
    with pytest.raises(ValueError, match=r"lite0\.pth' lacks 1 tensor EfficientNet-Lite0 needs: _bn1\.weight"):
        build_frame_encoder(cfg)
    torch.save({**state, "_bn1.bias": torch.full_like(state["_bn1.bias"], float("nan"))}, file)
    with pytest.raises(ValueError, match=r"lite0\.pth': tensor '_bn1\.bias' holds non-finite"):
        build_frame_encoder(cfg)


def test_corrupt_gguf_is_one_line(tmp_path):
    """The offline SmolLM2 ships as GGUF, converted once: a corrupt file is one line naming it, nothing cached."""
    pytest.importorskip("gguf", reason="GGUF conversion needs the [models] extra")
    from livecue.pretrained import convert_gguf

    (tmp_path / "m.gguf").write_bytes(os.urandom(1000))
    with pytest.raises(OSError, match=r"^cannot read '.*m\.gguf' \(corrupt\? reinstall"):
        convert_gguf(tmp_path, "m.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
