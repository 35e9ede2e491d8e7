"""Typed configs: presets, validation, dotted overrides, JSON/YAML round trips."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from livecue import cli
from livecue.commands.config import reference_markdown
from livecue.config import (
    CONFIG_FILE,
    LiveConfig,
    LMConfig,
    LoraConfig,
    StreamConfig,
    VisionConfig,
    list_presets,
    preset,
)
from livecue.config_fields import describe

DEFAULT_MODEL = Path(__file__).parent.parent / "src" / "livecue" / "assets" / "default_model"


def test_presets_exist_with_upstream_defaults():
    assert {"live1", "live1_plus", "tiny"} <= set(list_presets())
    plus = preset("live1_plus")
    assert plus.frame_num_tokens == 10 and plus.stream.frame_interval == ","
    assert plus.vision.name_or_path == "google/siglip-large-patch16-384" and plus.vision.resolution == 384
    assert plus.lm.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert plus.stream.fps == 2 and plus.stream.max_num_frames == 1200 and plus.stream.threshold == 0.725
    assert (plus.lora.r, plus.lora.alpha, plus.lora.dropout) == (128, 256, 0.05)
    assert (plus.train.learning_rate, plus.train.epochs, plus.train.warmup_ratio) == (2e-4, 2, 0.05)
    one = preset("live1")
    assert one.frame_num_tokens == 1 and one.stream.frame_interval == "" and one.stream.max_num_frames == 7200
    assert preset("live1+") == plus


def test_lora_pattern_targets_projections_and_lm_head():
    import re

    pat = re.compile(preset("live1_plus").lora.target_modules)
    for name in ["model.layers.0.self_attn.q_proj", "model.layers.31.mlp.down_proj", "lm_head"]:
        assert pat.search(name), name
    assert not pat.search("connector.0") and not pat.search("model.embed_tokens")


def test_json_round_trip(tmp_path):
    cfg = preset("tiny", ["stream.threshold=0.9", "lm.random_init.num_hidden_layers=3"])
    assert LiveConfig.from_json(cfg.to_json()) == cfg
    path = cfg.save(tmp_path)
    assert path.name == CONFIG_FILE and LiveConfig.load(tmp_path) == cfg
    assert json.loads(path.read_text())["stream"]["threshold"] == 0.9


def test_yaml_round_trip(tmp_path):
    cfg = preset("live1")
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(cfg.to_dict()))
    assert LiveConfig.load(file) == cfg


def test_overrides_are_typed():
    cfg = preset("tiny", ["stream.fps=4", "vision.frozen=false", "train.epochs=3", "stream.frame_interval=;"])
    assert cfg.stream.fps == 4.0 and isinstance(cfg.stream.fps, float)
    assert cfg.vision.frozen is False and cfg.train.epochs == 3.0
    assert cfg.stream.frame_interval == ";"
    cfg = preset("tiny", {"lm.random_init": {"model_type": "qwen2", "hidden_size": 32}})
    assert cfg.lm.random_init == {"model_type": "qwen2", "hidden_size": 32}


def test_yaml_booleans_words_on_the_command_line(tmp_path):
    """--train.mixed_precision=no is the string "no" (YAML 1.1 would read False); a bool field reads yes/no/on/off;
    a YAML file's unquoted `no` for a string field is refused saying to quote it."""
    cfg = preset("tiny", ["train.mixed_precision=no", "vision.frozen=no", "lora.dropout=0"])
    assert cfg.train.mixed_precision == "no" and cfg.vision.frozen is False
    assert preset("tiny", ["vision.frozen=On"]).vision.frozen is True
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  mixed_precision: no\n")
    with pytest.raises(ValueError, match="'train.mixed_precision' must be a string, got False .*quote the value"):
        LiveConfig.load(file)


@pytest.mark.parametrize("override,match", [
    ("stream.thresold=0.5", "unknown config key.*'stream.thresold'"),
    ("nosection.x=1", "unknown config key.*'nosection'"),
    ("stream.threshold=1.5", r"stream.threshold must be a finite number in \[0, 1\], got '1.5'"),
    ("stream.fps=fast", "'stream.fps' must be a number, got 'fast'"),
    ("vision.frozen=3", "'vision.frozen' must be true or false"),
    ("vision.kind=resnet", "vision.kind must be one of"),
    ("stream.threshold", "must look like section.key=value"),
    ("lm.dtype=float64", "lm.dtype must be one of"),
])
def test_bad_overrides_name_the_value(override, match):
    with pytest.raises(ValueError, match=match):
        preset("tiny", [override])


def test_validation_on_construction():
    with pytest.raises(ValueError, match="emits no token per frame"):
        VisionConfig(frame_token_cls=False, frame_token_pooled=0)
    with pytest.raises(ValueError, match="needs a model_type"):
        LMConfig(name_or_path=None, random_init={"hidden_size": 3}, tokenizer="tiny")
    with pytest.raises(ValueError, match="must not contain the placeholder"):
        StreamConfig(frame_interval="<v>")
    with pytest.raises(ValueError, match="newer than this livecue"):
        LiveConfig(config_version=99)


def test_unknown_preset_and_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")
    with pytest.raises(FileNotFoundError, match="no livecue_config.json"):
        LiveConfig.load(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list")
    with pytest.raises(ValueError, match="must hold a mapping"):
        LiveConfig.load(bad)


@pytest.mark.parametrize("override,match", [
    ("lm.random_init.hidden_size=-1", r"lm.random_init.hidden_size must be a positive integer, got -1"),
    ("lm.random_init.num_hidden_layers=0", r"lm.random_init.num_hidden_layers must be a positive integer, got 0"),
    ("lm.random_init.num_key_value_heads=-2", r"lm.random_init.num_key_value_heads must be a positive integer"),
    ("lm.random_init.vocab_size=1.5", r"lm.random_init.vocab_size must be a positive integer, got 1.5"),
    ("lm.random_init.max_position_embeddings=0", r"max_position_embeddings must be a positive integer"),
    ("vision.random_init.hidden_size=-3", r"vision.random_init.hidden_size must be a positive integer, got -3"),
    ("vision.random_init.patch_size=true", r"vision.random_init.patch_size must be a positive integer, got True"),
    ("vision.frame_token_pooled=-1", r"vision.frame_token_pooled must be in 0..64 .*, got -1"),
    ("vision.frame_token_pooled=100000", r"vision.frame_token_pooled must be in 0..64"),
    ("stream.fps=nan", r"config key 'stream.fps' must be a finite number, got nan"),
    ("stream.fps=1e9", r"stream.fps must be a finite number in \(0, 240\], got '1000000000.0'"),
    ("train.learning_rate=inf", r"config key 'train.learning_rate' must be a finite number, got inf"),
    ("train.learning_rate=1e999", r"config key 'train.learning_rate' must be a finite number"),
    ("stream.threshold=-.inf", r"config key 'stream.threshold' must be a finite number"),
    ("train.weight_decay=-1", r"train.weight_decay must be >= 0"),
    ("train.seed=-1", r"train.seed must be in \[0, 2\^32\), got -1"),
])
def test_sizes_and_numbers_are_checked_naming_the_key(override, match):
    """Sizes that would build negative or empty tensors and non-finite numbers are refused, naming the key."""
    with pytest.raises(ValueError, match=match) as e:
        preset("tiny", [override])
    assert "\n" not in str(e.value)


def test_model_sizes_that_stay_valid():
    cfg = preset("tiny", ["lm.random_init.num_key_value_heads=null", "lm.random_init.tie_word_embeddings=true"])
    assert cfg.lm.random_init["num_key_value_heads"] is None and cfg.lm.random_init["tie_word_embeddings"] is True
    for name in ("live1", "live1_plus", "tiny"):
        preset(name)


def test_yaml_errors_are_one_line_with_position(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\nstream: [1,\n  threshold: }\n")
    with pytest.raises(ValueError) as e:
        LiveConfig.load(bad)
    assert "\n" not in str(e.value)
    assert f"invalid YAML in '{bad}' (line 3, column 14)" in str(e.value)
    bad.write_bytes(b"base: tiny\n\xff\xfe")
    with pytest.raises(ValueError, match=r"invalid YAML in .*bad.yaml' \(byte 11\): not UTF-8 text"):
        LiveConfig.load(bad)


def test_yaml_numbers_without_exponent_sign(tmp_path):
    """YAML 1.1 reads ``1e-4`` and ``1.0e9`` as strings: a float field takes them as numbers."""
    good = tmp_path / "c.yaml"
    good.write_text("base: tiny\ntrain:\n  learning_rate: 1e-4\n")
    assert LiveConfig.load(good).train.learning_rate == 1e-4
    good.write_text("base: tiny\ntrain:\n  learning_rate: fast\n")
    with pytest.raises(ValueError, match="'train.learning_rate' must be a number, got 'fast'"):
        LiveConfig.load(good)


def test_legacy_lora_modules_to_save_still_loads(tmp_path):
    """``lora.modules_to_save`` (never read) is gone; configs that older versions wrote with it keep loading."""
    assert "modules_to_save" not in {f.name for f in dataclasses.fields(LoraConfig)}
    packaged = json.loads((DEFAULT_MODEL / CONFIG_FILE).read_text())  # retrained 2026-12-02: written without it
    cfg = LiveConfig.load(DEFAULT_MODEL)
    assert cfg.lora.r == packaged["lora"]["r"] and "modules_to_save" not in cfg.to_dict()["lora"]
    old = preset("tiny").to_dict()
    old["lora"]["modules_to_save"] = ["connector"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(old))
    assert LiveConfig.load(tmp_path) == preset("tiny")
    with pytest.raises(ValueError, match="unknown config key.*'lora.modules_to_sav'"):  # other keys stay checked
        preset("tiny", ["lora.modules_to_sav=[]"])


def test_every_config_field_is_documented():
    """Each field of every section has a docstring (meaning, unit, range), read by ``livecue config --fields``."""
    sections = describe(LiveConfig)
    assert [s.name for s in sections] == ["", "vision", "connector", "lm", "vlm", "stream", "lora", "train", "quantize"]
    for section in sections:
        assert section.summary, section.name
        names = {f.name for f in dataclasses.fields(LiveConfig)} if not section.name else {
            f.name for f in dataclasses.fields(getattr(LiveConfig(), section.name))}
        assert {f.key.rpartition(".")[2] for f in section.fields} <= names
        for f in section.fields:
            assert len(f.help) > 20, f"{f.key} has no docstring in livecue/config.py"
    documented = sum(len(s.fields) for s in sections)
    fields = sum(len(dataclasses.fields(type(v))) for v in vars(LiveConfig()).values() if dataclasses.is_dataclass(v))
    assert documented == fields + 3  # every section's fields, and name, architecture and config_version


def test_config_reference_doc_is_current():
    """docs/config.md is what ``livecue config --fields --markdown`` prints: regenerate it when a field changes."""
    doc = Path(__file__).parent.parent / "docs" / "config.md"
    assert doc.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/config.md is stale: run `livecue config --fields --markdown > docs/config.md`")
    for section in describe(LiveConfig):
        for f in section.fields:
            assert f"**`{f.key}`**" in doc.read_text(encoding="utf-8")


def test_config_help_lists_sections_and_fields(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["config", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--fields [SECTION]" in out
    for name in ("vision", "connector", "lm", "stream", "lora", "train"):
        assert f"  {name}: " in out
    assert "learning_rate" in out and "frame_colour_bins" in out
    assert cli.main(["config", "--fields", "train"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[train] ") and "train.learning_rate: float = 0.0002" in out and "stream." not in out
    assert cli.main(["config", "--fields", "stream.threshold"]) == 0
    out = capsys.readouterr().out
    assert "stream.threshold: float = 0.725" in out and "θ in [0, 1]" in out and "stream.fps" not in out
    with pytest.raises(SystemExit) as e:
        cli.main(["config", "--fields", "nope"])
    assert e.value.code == 2
    assert "no section or field 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    """Every example config in configs/ validates (the VLM one without downloading its model)."""
    cfg = LiveConfig.load(Path(__file__).parent.parent / "configs" / name)
    assert cfg.train.output_dir and (cfg.is_vlm or cfg.lm.name_or_path or cfg.lm.random_init)
