"""Checks run on checkpoint files before their weights are used: every refusal is one line naming the file.

livecue checkpoints, upstream-layout adapters and pretrained parts (vision towers, base LMs) all go through here:

* :func:`read_header` reads a safetensors header (names, shapes, dtypes) without loading a tensor; a truncated or
  corrupt file is refused here (``SafetensorError`` never escapes).
* :func:`check_keys` compares a file's tensors with what the config builds: missing, unexpected, wrong shape.
* :func:`load_tensors` does both, then loads the tensors and refuses non-finite values.
* :func:`require_file`, :func:`read_json`, :func:`check_tokenizer_dir` cover the other files of a checkpoint.
* :func:`check_manifest` compares weights files with the sizes and sha256 a ``livecue_manifest.json`` records
  (livecue training writes one beside every checkpoint and final model): corruption inside a tensor's bytes passes
  every structural check but not this one.
* :func:`from_pretrained` loads a Hugging Face part strictly (no randomly initialised "missing" weights).

The names of a checkpoint's weights files live here too, beside their checks: :data:`WEIGHTS_FILE` (with the header
:func:`weights_metadata` it is written with) and :data:`MANIFEST`.

Loading is strict: a tensor a config needs is either in the file with the right shape, or the load is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..pretrained import first_line, hub_error

log = logging.getLogger(__name__)
Shape = tuple[int, ...]
SHOWN = 3  # keys (or key groups) a message names before "..."
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")
MANIFEST = "livecue_manifest.json"  # sizes and sha256 of a checkpoint's files, written last (livecue.train)
WEIGHTS_FILE = "livecue_model.safetensors"  # the weights a checkpoint cannot rebuild from pretrained sources


def weights_metadata(lora: bool) -> dict[str, str]:
    """The header metadata of ``livecue_model.safetensors``: whether a LoRA adapter belongs beside it (a checkpoint
    whose adapter files went missing is refused instead of loading without them)."""
    return {"format": "livecue", "adapter": "yes" if lora else "no"}


def require_file(file: Path, why: str) -> Path:
    """``file`` if it exists, else ``FileNotFoundError`` naming it and why it is needed."""
    if not file.is_file():
        raise FileNotFoundError(f"{str(file)!r} is missing: {why}")
    return file


def read_json(file: Path) -> dict[str, Any]:
    """A JSON object from ``file``; invalid JSON is refused naming the file, line and column."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON in {str(file)!r} at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{str(file)!r} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(file)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def file_sha256(path: Path, sync: bool = False) -> str:
    """The sha256 of a file (read in 1 MiB blocks); ``sync`` also flushes it to disk."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def check_manifest(directory: Path, files: Iterable[Path]) -> None:
    """When ``directory`` has a ``livecue_manifest.json``, each of ``files`` it lists must have the recorded size
    and sha256 (ValueError naming the file otherwise). Without a manifest (packaged or hand-made checkpoints) there
    is nothing to compare. Only weights files are passed: a config or tokenizer may be edited by hand on purpose."""
    manifest = Path(directory) / MANIFEST
    if not manifest.is_file():
        return
    listed = read_json(manifest).get("files")
    if not isinstance(listed, dict):
        raise ValueError(f"{str(manifest)!r} has no 'files' table (the size and sha256 of each file): corrupt")
    for file in files:
        meta = listed.get(Path(file).relative_to(directory).as_posix())
        if not isinstance(meta, dict):
            continue
        size = Path(file).stat().st_size
        if size != meta.get("size"):
            raise ValueError(f"{str(file)!r} has {size} bytes but {MANIFEST} records {meta.get('size')!r} (truncated "
                             f"or replaced)")
        if file_sha256(file) != meta.get("sha256"):
            raise ValueError(f"{str(file)!r} does not match its sha256 in {MANIFEST} (corrupt or modified)")


@contextmanager
def open_safetensors(file: Path, device: str | torch.device = "cpu") -> Iterator[Any]:
    """``safetensors.safe_open`` whose every failure (``SafetensorError`` included) is one line naming the file."""
    try:
        with safe_open(str(file), "pt", device=str(device)) as f:
            yield f
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(file)!r} does not exist") from None
    except Exception as e:  # noqa: BLE001 - SafetensorError and friends become one clear line
        raise ValueError(f"{str(file)!r}: not a valid safetensors file (truncated or corrupt): {first_line(e)}") \
            from None


def read_header(file: Path) -> dict[str, tuple[Shape, str]]:
    """``{name: (shape, dtype)}`` from a safetensors file's header; no tensor is loaded."""
    with open_safetensors(file) as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def read_metadata(file: Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header (``{"format": "livecue", ...}``)."""
    with open_safetensors(file) as f:
        return dict(f.metadata() or {})


def check_keys(file: Path, found: Mapping[str, Shape], expected: Mapping[str, Shape], *,
               optional: Iterable[str] = (), what: str = "the config") -> None:
    """Refuse a file whose tensors are not exactly ``expected``: one missing, one unexpected, one in another shape.

    Args:
        file: the file named in messages.
        found: name -> shape of the tensors in the file.
        expected: name -> shape of the tensors the model built from the config needs.
        optional: names the file may hold beyond ``expected`` (with the shape ``expected`` gives, when it has one).
        what: who expects the tensors, for messages ("the config in livecue_config.json").
    """
    optional = set(optional)
    missing = [k for k in expected if k not in found and k not in optional]
    if missing:
        raise ValueError(f"{str(file)!r} lacks {_count(missing)} {what} needs: {_summary(missing)}"
                         f"{_layer_hint(expected, found, what)}")
    unexpected = [k for k in found if k not in expected and k not in optional]
    if unexpected:
        raise ValueError(f"{str(file)!r} holds {_count(unexpected)} {what} does not have: {_summary(unexpected)}"
                         f"{_layer_hint(expected, found, what)}")
    wrong = [k for k in found if k in expected and tuple(found[k]) != tuple(expected[k])]
    if wrong:
        k = wrong[0]
        more = f" ({len(wrong) - 1} more tensors disagree)" if len(wrong) > 1 else ""
        raise ValueError(f"{str(file)!r}: {k!r} is {tuple(found[k])} in the file but {tuple(expected[k])} for "
                         f"{what}{more}")


def load_tensors(file: Path, expected: Mapping[str, Shape] | None = None, *, optional: Iterable[str] = (),
                 prefix: str = "", what: str = "the config", device: str | torch.device = "cpu",
                 ) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked: header, names and shapes (when ``expected`` is given), finite.

    Only tensors whose name starts with ``prefix`` are checked and loaded (e.g. ``vision.tower.``).
    """
    header = {k: v for k, v in read_header(file).items() if k.startswith(prefix)}
    if expected is not None:
        check_keys(file, {k: shape for k, (shape, _) in header.items()}, expected, optional=optional, what=what)
    with open_safetensors(file, device) as f:
        tensors = {k: f.get_tensor(k) for k in header}
    for k, v in tensors.items():
        if not all_finite(v):
            raise ValueError(f"{str(file)!r}: tensor {k!r} holds non-finite values (NaN or inf)")
    return tensors


def all_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN or inf: one min/max pass (NaN propagates, inf is an extreme), no temporary, so
    checking an 8B model costs seconds, not minutes."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_finite(module: torch.nn.Module, source: str) -> None:
    """Refuse a loaded module with a NaN/inf parameter or buffer, naming the tensor and where it came from."""
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        if not all_finite(t):
            raise ValueError(f"{source!r}: tensor {name!r} holds non-finite values (NaN or inf)")


def same_values(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 22) -> bool:
    """``a`` equals ``b``: exactly in one dtype; to within one unit of the coarser dtype across dtypes (a bfloat16
    copy of a float32 head is the same head)."""
    if a.shape != b.shape:
        return False
    a, b = a.detach().reshape(-1), b.detach().reshape(-1).to(a.device)
    if a.dtype == b.dtype:
        return all(torch.equal(x, y) for x, y in zip(a.split(chunk), b.split(chunk)))
    coarse = max(torch.finfo(a.dtype), torch.finfo(b.dtype), key=lambda f: f.eps)
    return all(torch.allclose(x.float(), y.float(), rtol=coarse.eps, atol=coarse.tiny)
               for x, y in zip(a.split(chunk), b.split(chunk)))


def check_tokenizer_dir(directory: Path) -> None:
    """Refuse a directory without the tokenizer files ``save_pretrained`` writes (config + vocabulary)."""
    if not (directory / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{str(directory)!r} has no tokenizer_config.json: the tokenizer files are missing")
    if not any((directory / name).is_file() for name in TOKENIZER_VOCAB_FILES):
        raise FileNotFoundError(f"{str(directory)!r} has no tokenizer vocabulary (one of "
                                f"{', '.join(TOKENIZER_VOCAB_FILES)}): the tokenizer files are incomplete")


def weights_name(directory: Path) -> str:
    """How to name a pretrained directory's weights in a message: its one weights file, else the directory."""
    files = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin"))
    return str(files[0]) if len(files) == 1 else str(directory)


def from_pretrained(cls: Any, name: str, what: str, **kwargs: Any) -> torch.nn.Module:
    """``cls.from_pretrained(name, **kwargs)``, strict: a local directory's safetensors headers are checked first;
    missing or wrongly shaped weights (which transformers would initialise randomly) and non-finite values are
    refused naming the file. Any failure is one line (``OSError`` / ``ValueError``)."""
    path = Path(name)
    if path.is_dir():
        for file in sorted(path.glob("*.safetensors")):
            read_header(file)
        for meta in ("config.json", "model.safetensors.index.json"):
            if (path / meta).is_file():
                read_json(path / meta)
    # transformers logs a multi-line "LOAD REPORT" of missing/unexpected/mismatched keys: we refuse on our own
    # (its logger's level must stay as it is: transformers changes what it logs by that level)
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(_no_load_report)
    try:
        model, info = cls.from_pretrained(name, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - transformers/safetensors/torch errors become one line naming the source
        raise hub_error(what, name, e) from None
    finally:
        logger.removeFilter(_no_load_report)
    if info.get("unexpected_keys"):
        log.debug("%s: %d tensors the %s does not use (ignored)", name, len(info["unexpected_keys"]), what)
    source = weights_name(path) if path.is_dir() else name
    mismatched = sorted(info.get("mismatched_keys") or (), key=str)
    if mismatched:
        key, got, want = (list(mismatched[0]) + [None, None])[:3]
        raise ValueError(f"{source!r}: {key!r} is {_shape(got)} in the file but {_shape(want)} for the {what}")
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ValueError(f"{source!r} lacks {_count(missing)} the {what} needs: {_summary(missing)}")
    check_finite(model, source)
    return model


def _no_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


# ---- message helpers ----------------------------------------------------------------------------------------------
def _count(keys: list[str]) -> str:
    return f"{len(keys)} tensor{'s' if len(keys) != 1 else ''}"


def _summary(keys: Iterable[str]) -> str:
    """The first few keys, one ``…layers.N.*`` group per layer: ``lm.model.layers.2.* (9 tensors), lm.x``."""
    groups: dict[str, int] = {}
    for k in keys:
        m = _LAYER.match(k)
        name = f"{m.group(1)}.*" if m else k
        groups[name] = groups.get(name, 0) + 1
    shown = [f"{g} ({n} tensors)" if n > 1 else g for g, n in list(groups.items())[:SHOWN]]
    return ", ".join(shown) + (", ..." if len(groups) > SHOWN else "")


def _layer_hint(expected: Iterable[str], found: Iterable[str], what: str) -> str:
    """`` (the config has 3 lm.model.layers, the file 2)`` when the two disagree on a stack's number of layers."""
    def layers(keys: Iterable[str]) -> dict[str, set[str]]:
        stacks: dict[str, set[str]] = {}
        for m in filter(None, map(_LAYER.match, keys)):
            stack, index = m.group(1).rsplit(".", 1)
            stacks.setdefault(stack, set()).add(index)
        return stacks

    want, got = layers(expected), layers(found)
    for stack in sorted(want.keys() | got.keys()):
        a, b = len(want.get(stack, ())), len(got.get(stack, ()))
        if a != b:
            return f" ({what} has {a} {stack}, the file {b})"
    return ""


def _shape(shape: Any) -> str:
    return str(tuple(shape)) if shape is not None else "another shape"
