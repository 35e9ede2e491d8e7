"""``livecue quantize --model M --scheme int8 --calibration DATA.jsonl --out DIR``: quantize a checkpoint's LM and
re-calibrate θ for it.

Quantized weights are not saved: torchao's tensor subclasses do not round-trip through safetensors, and
quantizing at load takes a fraction of a second. ``DIR`` is a copy of the checkpoint (the same full-precision
weights) whose ``livecue_config.json`` gains ``quantize: {scheme, threshold}``; loading it (any command's
``--model DIR``) quantizes the LM with that scheme and uses that θ. Full-precision ``stream.threshold`` is kept
(``--quantize none`` loads the copy unquantized, with it).

Re-calibration (:func:`livecue.eval.calibrate.match_speak_rate`): one teacher-forced forward per calibration record
at full precision and one quantized give p(silence) at every stream position; θ for the quantized model is the one
whose speak rate is nearest the full-precision model's at its own θ (ties: the higher decision agreement). The
result (speak rates, decision agreement and teacher-forced speak F1, before / after) is printed and written to
``DIR/quantize_calibration.json``.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from ..progress import Progress
from ._common import add_model_argument, load_from_args, parser, positive_int, split_overrides

SCHEMES = ("int8", "int4", "fp8")  # livecue.model.quantize.SCHEMES (a test keeps them equal)
REPORT_FILE = "quantize_calibration.json"


def build_parser():
    p = parser("quantize", "Quantize a checkpoint's LM (weight-only, torchao) and re-calibrate θ so the quantized "
                           "model speaks as often as the full-precision one; writes a checkpoint copy whose config "
                           "loads quantized with that θ.")
    add_model_argument(p)
    p.add_argument("--scheme", choices=SCHEMES, required=True, help="int8, int4 or fp8 (a float8 GPU only)")
    p.add_argument("--calibration", required=True, help="records JSONL to calibrate θ on (videos relative to it)")
    p.add_argument("--feature-cache", default=None, help="read frame features from a 'livecue encode' cache")
    p.add_argument("--max-samples", type=positive_int(), default=None, help="use only the first N records (>= 1)")
    p.add_argument("--out", required=True, help="the quantized checkpoint directory to write (new or empty)")
    return p


def main(argv: list[str]) -> int:
    command = shlex.join(["livecue", "quantize", *argv])
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    if args.quantize not in (None, "none"):
        raise ValueError("livecue quantize takes --scheme, not --quantize (it loads the model at full precision)")
    args.quantize = "none"
    source = _checkpoint_dir(args.adapter or args.model)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} exists and is not an empty directory")
    if not Path(args.calibration).is_file():
        raise FileNotFoundError(f"--calibration {args.calibration!r}: no such records file")

    from ..eval.calibrate import recalibrate_quantized

    model, tokenizer = load_from_args(args, overrides)
    with Progress(None, desc="quantize: calibration forwards", unit="record") as bar:
        def step(done: int, total: int) -> None:
            bar.set_total(total)
            bar.update(1)

        match = recalibrate_quantized(model, tokenizer, args.calibration, args.scheme,
                                      max_samples=args.max_samples, feature_cache=args.feature_cache, progress=step)

    shutil.copytree(source, out, dirs_exist_ok=True)
    from ..config import LiveConfig

    cfg = LiveConfig.load(out).with_overrides({"quantize.scheme": args.scheme, "quantize.threshold": match.threshold})
    cfg.save(out)
    report = {"command": command, "source": str(source), "scheme": args.scheme, "records": match.records,
              **match.to_dict()}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    _print(match, args.scheme, out)
    return 0


def _checkpoint_dir(source: str) -> Path:
    """The checkpoint directory to copy (``default``: the packaged default model); one line for anything else."""
    from ..config import CONFIG_FILE
    from ..model.load import DEFAULT_ALIAS, DEFAULT_MODEL_DIR

    path = DEFAULT_MODEL_DIR if source == DEFAULT_ALIAS and not Path(source).exists() else Path(source)
    if not (path.is_dir() and (path / CONFIG_FILE).is_file()):
        raise ValueError(f"--model {source!r}: livecue quantize needs a livecue checkpoint directory (or "
                         f"{DEFAULT_ALIAS}) to copy; a preset, config file or upstream adapter has none (convert or "
                         f"train it first, or pass --quantize to a command to quantize at load)")
    return path


def _print(match, scheme: str, out: Path) -> None:
    print(f"scheme            {scheme}")
    print(f"decisions         {match.decisions} stream positions")
    print(f"θ                 {match.reference_threshold:.3f} (full precision) -> {match.threshold:.3f} ({scheme})")
    print(f"speak rate        full {match.reference_rate:.4f}; {scheme} {match.rate_before:.4f} at the old θ, "
          f"{match.rate_after:.4f} re-calibrated")
    print(f"agreement         {match.agreement_before:.4f} at the old θ, {match.agreement_after:.4f} re-calibrated")
    print(f"speak F1          full {match.f1_reference:.4f}; {scheme} {match.f1_before:.4f} at the old θ, "
          f"{match.f1_after:.4f} re-calibrated")
    print(f"wrote             {out} (quantize.scheme={scheme}, quantize.threshold={match.threshold:.3f})")
