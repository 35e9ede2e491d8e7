"""Weight-only quantization (livecue.model.quantize) and θ re-calibration (livecue.eval.calibrate.match_speak_rate).

Measured decision agreement with full precision (teacher-forced, world streams; benchmarks/results/quantize_cpu.md):
the default model int8 1.000 (87 of 87 decisions, 6 streams), int4 0.98; the tiny random model 1.000. The tests
assert :data:`INT8_AGREEMENT` for int8 on both models and :data:`INT4_AGREEMENT` for int4 on tiny.
"""

import logging
import sys

import numpy as np
import pytest
import torch

from livecue.config import QUANTIZE_SCHEMES, LiveConfig, preset
from livecue.data.world import WorldConfig, generate_world
from livecue.eval.calibrate import RateMatch, compare_decisions, match_speak_rate, recalibrate_quantized
from livecue.eval.metrics import StreamScore, TurnScores
from livecue.eval.narration import RecordScores
from livecue.model.load import load_model, save_checkpoint
from livecue.model.quantize import SCHEMES, check_scheme, quantize_model, quantized_layers

pytest.importorskip("torchao")

INT8_AGREEMENT = 0.95  # measured 1.000 (default and tiny)
INT4_AGREEMENT = 0.90  # measured 1.000 on tiny, 0.98 on the default model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three short world streams (6 s, 32 px npy) and their records file."""
    out = tmp_path_factory.mktemp("world")
    generate_world(out, 3, seed=5, split="val", cfg=WorldConfig(resolution=32, duration=6.0), video_format="npy")
    return out / "val.jsonl"


def _records(p_silence: list[list[float]], gold_last: bool = True) -> list[RecordScores]:
    """One record per list, one turn, every position with argmax silence; the last position's gold is speak."""
    return [RecordScores(f"r{i}", 2.0, [TurnScores(0, stream=[StreamScore(p, True) for p in ps],
                                                   gold_speak=gold_last)]) for i, ps in enumerate(p_silence)]


def test_schemes_agree_with_the_config():
    assert QUANTIZE_SCHEMES == ("none", *SCHEMES)
    with pytest.raises(ValueError, match="unknown quantization scheme 'int3'"):
        check_scheme("int3")


def test_match_speak_rate_moves_theta_to_the_reference_rate():
    ref = _records([[0.9, 0.9, 0.6, 0.9, 0.5]])       # θ 0.7: speaks at 2 of 5
    shifted = _records([[0.95, 0.95, 0.75, 0.95, 0.72]])  # quantized: p(silence) up, at θ 0.7 speaks at 0 of 5
    match = match_speak_rate(ref, shifted, 0.7)
    assert match.rate_before == 0.0 and match.reference_rate == pytest.approx(0.4)
    assert match.rate_after == pytest.approx(0.4)
    assert 0.75 < match.threshold <= 0.95
    assert match.agreement_after == 1.0 and match.agreement_before == pytest.approx(0.6)
    assert match.f1_after == match.f1_reference


@pytest.mark.parametrize("seed", range(20))
def test_recalibration_is_never_further_from_the_reference_rate(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 1.0, size=(4, 25))
    noisy = np.clip(p + rng.normal(0, 0.08, size=p.shape) + rng.uniform(-0.1, 0.1), 0, 1)
    theta = float(rng.uniform(0.4, 0.9))
    match = match_speak_rate(_records(p.tolist()), _records(noisy.tolist()), theta)
    assert abs(match.rate_after - match.reference_rate) <= abs(match.rate_before - match.reference_rate)


def test_ties_in_rate_go_to_the_nearest_theta():
    ref = _records([[0.9, 0.5, 0.9, 0.9]])       # θ 0.7: speaks at position 1
    new = _records([[0.9, 0.6, 0.9, 0.9]])       # any θ in (0.6, 0.9] speaks at position 1 only
    match = match_speak_rate(ref, new, 0.7, grid=[0.62, 0.8])
    assert match.threshold == 0.7 and match.rate_after == match.reference_rate == 0.25
    match = match_speak_rate(ref, new, 0.7, grid=[0.62, 0.65, 0.8])
    assert match.threshold == 0.7
    far = _records([[0.9, 0.8, 0.9, 0.9]])       # needs θ in (0.8, 0.9]: of 0.85 and 0.88, the nearer 0.85
    assert match_speak_rate(ref, far, 0.7, grid=[0.85, 0.88]).threshold == 0.85


def test_scorings_must_match():
    with pytest.raises(ValueError, match="same stream positions"):
        compare_decisions(_records([[0.5, 0.5]]), _records([[0.5]]), 0.7, 0.7)


def test_tiny_int8_int4_quantize_the_lm_but_not_lm_head(tiny):
    for scheme in ("int8", "int4"):
        model, _ = load_model("tiny", quantize="none")
        linears = [n for n, m in model.lm.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
        quantize_model(model, scheme)
        assert sorted(quantized_layers(model.lm)) == sorted(linears)
        assert model.vision is None or not quantized_layers(model.vision)


@pytest.mark.parametrize("scheme,level", [("int8", INT8_AGREEMENT), ("int4", INT4_AGREEMENT)])
def test_tiny_decision_agreement(world, scheme, level):
    model, tok = load_model("tiny", quantize="none")
    match = recalibrate_quantized(model, tok, world, scheme)
    assert isinstance(match, RateMatch) and match.decisions > 20
    assert match.agreement_before >= level
    assert abs(match.rate_after - match.reference_rate) <= abs(match.rate_before - match.reference_rate)


def test_default_model_int8_decision_agreement(world):
    model, tok = load_model("default", device="cpu", quantize="none")
    theta = model.cfg.stream.threshold
    match = recalibrate_quantized(model, tok, world, "int8")
    assert quantized_layers(model.lm) and model.cfg.stream.threshold == theta
    assert match.decisions > 20
    assert match.agreement_before >= INT8_AGREEMENT and match.agreement_after >= INT8_AGREEMENT
    assert abs(match.rate_after - match.reference_rate) <= abs(match.rate_before - match.reference_rate)


def test_fp8_on_cpu_is_one_line(tiny):
    model, _ = load_model("tiny", quantize="none")
    with pytest.raises(ValueError, match=r"fp8 needs a CUDA GPU with float8 support.*on cpu: use int8 or int4"):
        quantize_model(model, "fp8")
    assert not quantized_layers(model.lm)


def test_torchao_missing_names_the_extra(monkeypatch):
    model, _ = load_model("tiny", quantize="none")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(ImportError, match=r"pip install 'livecue\[quant\]'"):
        quantize_model(model, "int8")


def test_quantize_section_round_trip_and_load(tmp_path, caplog):
    cfg = preset("tiny", ["quantize.scheme=int8", "quantize.threshold=0.61"])
    assert LiveConfig.from_json(cfg.to_json()).quantize == cfg.quantize
    with pytest.raises(ValueError, match="quantize.scheme must be one of"):
        preset("tiny", ["quantize.scheme=int2"])
    with pytest.raises(ValueError, match="quantize.threshold needs quantize.scheme"):
        preset("tiny", ["quantize.threshold=0.6"])
    model, tok = load_model("tiny", quantize="none")
    model.cfg = cfg
    save_checkpoint(model, tok, tmp_path / "ckpt", card=False)

    loaded, _ = load_model(tmp_path / "ckpt")  # the config's scheme, with its θ
    assert quantized_layers(loaded.lm) and loaded.cfg.stream.threshold == 0.61
    assert loaded.cfg.quantize.scheme == "int8" and loaded.cfg.quantize.threshold == 0.61

    full, _ = load_model(tmp_path / "ckpt", quantize="none")  # full precision, its own θ
    assert not quantized_layers(full.lm) and full.cfg.stream.threshold == cfg.stream.threshold

    with caplog.at_level(logging.WARNING, logger="livecue.model.quantize"):
        other, _ = load_model(tmp_path / "ckpt", quantize="int4")  # not re-calibrated for int4: θ kept, one warning
    assert quantized_layers(other.lm) and other.cfg.stream.threshold == cfg.stream.threshold
    assert other.cfg.quantize.threshold is None
    warned = [r.getMessage() for r in caplog.records if "calibrated at full precision" in r.getMessage()]
    assert len(warned) == 1 and "livecue quantize" in warned[0] and "--scheme int4" in warned[0]


def test_training_loads_ignore_the_scheme(tmp_path):
    model, tok = load_model("tiny", quantize="none")
    model.cfg = preset("tiny", ["quantize.scheme=int8"])
    save_checkpoint(model, tok, tmp_path / "ckpt", card=False)
    loaded, _ = load_model(tmp_path / "ckpt", merge_lora=False)
    assert not quantized_layers(loaded.lm)
    with pytest.raises(ValueError, match="needs the LoRA adapter merged"):
        load_model(tmp_path / "ckpt", merge_lora=False, quantize="int8")
