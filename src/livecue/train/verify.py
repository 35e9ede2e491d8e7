"""Verify a training checkpoint before a resume uses it (written by :mod:`livecue.train.checkpoint`).

:func:`verify_checkpoint` needs only the checkpoint: its manifest is present, complete and of a known format; every
file it lists exists with the recorded size and sha256; every file loads (safetensors headers and finite tensors,
the zip CRCs and pickles of the optimizer, scheduler and RNG files); the loaded objects have the expected structure
(an RNG state must apply to a fresh generator) and agree with each other and the manifest (the scheduler's step,
every process's micro-batch counter). :func:`verify_against_run` then checks the parts against the run about to
load them (parameter names and shapes, optimizer groups). Both raise :class:`CheckpointError` with one line.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from .manifest import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    STATE_DIR,
    STATE_FILE,
    CheckpointError,
    config_sha256,
    file_sha256,
    one_line,
)

OPTIMIZER = f"{STATE_DIR}/optimizer.bin"
SCHEDULER = f"{STATE_DIR}/custom_checkpoint_0.pkl"
MODEL_STATE = f"{STATE_DIR}/model.safetensors"
_ACCELERATE_FILE = re.compile(rf"{STATE_DIR}/(random_states_\d+\.pkl|custom_checkpoint_\d+\.pkl|optimizer(_\d+)?\.bin|"
                              r"scheduler(_\d+)?\.bin|sampler(_\d+)?\.bin|scaler\.pt)")
_INTS = ("step", "epoch", "micro", "micro_total", "num_processes", "batches_per_epoch", "total_steps",
         "gradient_accumulation_steps")


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a checkpoint, checked for its format and fields."""
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"it has no {MANIFEST} (not completely written, or saved by a livecue without "
                              f"manifests)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{MANIFEST} is not UTF-8 text (corrupt)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{MANIFEST} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{MANIFEST} is not a livecue training-checkpoint manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{MANIFEST} has format_version {manifest.get('format_version')!r}; this livecue "
                              f"reads {FORMAT_VERSION}")
    for key in _INTS:
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{MANIFEST} has no valid {key!r} (got {value!r})")
    files, config = manifest.get("files"), manifest.get("config")
    if not isinstance(files, dict) or not files or not all(
            isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
            for m in files.values()):
        raise CheckpointError(f"{MANIFEST} has no valid 'files' list (size and sha256 of each file)")
    if not isinstance(config, dict) or manifest.get("config_sha256") != config_sha256(config):
        raise CheckpointError(f"{MANIFEST}'s run config does not match its config_sha256 (edited or corrupt)")
    return manifest


def verify_checkpoint(directory: Path) -> dict[str, Any]:
    """Check a checkpoint on its own (see the module docstring); returns its manifest."""
    manifest = read_manifest(directory)
    files = manifest["files"]
    required = [STATE_FILE] + [f"{STATE_DIR}/random_states_{r}.pkl" for r in range(manifest["num_processes"])]
    for rel in required:
        if rel not in files:
            raise CheckpointError(f"{MANIFEST} does not list {rel}")
    for rel, meta in files.items():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise CheckpointError(f"{MANIFEST} lists a file outside the checkpoint: {rel!r}")
        path = directory / rel
        if not path.is_file():
            raise CheckpointError(f"{rel} is missing")
        size = path.stat().st_size
        if size != meta["size"]:
            raise CheckpointError(f"{rel} has {size} bytes, the manifest says {meta['size']} (truncated or replaced)")
        if file_sha256(path) != meta["sha256"]:
            raise CheckpointError(f"{rel} does not match its sha256 in {MANIFEST} (corrupt or modified)")
    for rel in sorted(files, key=lambda r: r != STATE_FILE):  # the data-order position first
        _check_file(directory, rel, manifest)
    return manifest


def _check_file(directory: Path, rel: str, manifest: dict[str, Any]) -> None:
    """Load one file and check what it holds."""
    path = directory / rel
    try:
        if rel.endswith(".json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            if rel == STATE_FILE and data != {k: manifest[k] for k in ("step", "epoch", "micro")}:
                raise CheckpointError(f"{rel} ({data}) disagrees with {MANIFEST}")
        elif rel.endswith(".safetensors"):
            _check_safetensors(path, rel)
        elif _ACCELERATE_FILE.fullmatch(rel):  # (FSDP / DeepSpeed subdirectories are in their own formats)
            obj = _load_torch(path, rel)
            name = PurePosixPath(rel).name
            if name.startswith("random_states_"):
                _check_rng(obj, rel, manifest)
            elif rel == SCHEDULER:
                _check_scheduler(obj, rel, manifest)
            elif name.startswith("optimizer"):
                _check_optimizer(obj, rel)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises becomes one line naming it
        raise CheckpointError(f"{rel} cannot be loaded: {one_line(e)}") from None


def _check_safetensors(path: Path, rel: str) -> None:
    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{rel} holds non-finite values in {key}")


def _load_torch(path: Path, rel: str) -> Any:
    """A ``torch.save`` file: its zip CRCs first (torch.load does not check them), then the pickle."""
    from accelerate.utils import load

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{rel} is not a readable torch file ({one_line(e)})") from None
    if bad is not None:
        raise CheckpointError(f"{rel} is corrupt: the CRC of its member {bad!r} does not match")
    return load(path, map_location="cpu")


def _check_rng(obj: Any, rel: str, manifest: dict[str, Any]) -> None:
    """An accelerate RNG state: each generator state must apply to a fresh generator; its micro-batch counter must
    be the manifest's."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{rel} holds a {type(obj).__name__}, not an RNG state")
    for key in ("random_state", "numpy_random_seed", "torch_manual_seed", "step"):
        if key not in obj:
            raise CheckpointError(f"{rel} has no {key!r}")
    try:
        random.Random().setstate(obj["random_state"])
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{rel}: invalid Python random state ({one_line(e)})") from None
    try:
        np.random.RandomState().set_state(obj["numpy_random_seed"])
    except (TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{rel}: invalid numpy random state ({one_line(e)})") from None
    for key, value in obj.items():
        if key.startswith("torch_") and key.endswith("_manual_seed"):
            states = [value] if key == "torch_manual_seed" else value
            if not isinstance(states, (list, tuple)) or not all(
                    isinstance(s, torch.Tensor) and s.dtype == torch.uint8 and s.dim() == 1 for s in states):
                raise CheckpointError(f"{rel}: {key} is not a list of byte tensors")
    try:
        torch.Generator().set_state(obj["torch_manual_seed"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{rel}: invalid torch random state ({one_line(e)})") from None
    if obj["step"] != manifest["micro_total"]:
        raise CheckpointError(f"{rel} is at micro-batch {obj['step']!r}, the manifest at {manifest['micro_total']}")
    expected = manifest["epoch"] * manifest["batches_per_epoch"] + manifest["micro"]
    if manifest["micro_total"] != expected or manifest["step"] * manifest["gradient_accumulation_steps"] != expected:
        raise CheckpointError(f"{MANIFEST}'s data-order position (step {manifest['step']}, epoch "
                              f"{manifest['epoch']}, batch {manifest['micro']}) is inconsistent")


def _check_scheduler(obj: Any, rel: str, manifest: dict[str, Any]) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("base_lrs"), list):
        raise CheckpointError(f"{rel} is not a learning-rate scheduler state")
    if obj.get("last_epoch") != manifest["step"]:
        raise CheckpointError(f"{rel} is at step {obj.get('last_epoch')!r}, the manifest at {manifest['step']}")


def _check_optimizer(obj: Any, rel: str) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("state"), dict) or not isinstance(
            obj.get("param_groups"), list):
        raise CheckpointError(f"{rel} is not an optimizer state (no 'state' and 'param_groups')")
    for group in obj["param_groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise CheckpointError(f"{rel} has a parameter group without its 'params'")
    for index, state in obj["state"].items():
        if not isinstance(state, dict):
            raise CheckpointError(f"{rel}: the state of parameter {index} is not a mapping")
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{rel}: {key} of parameter {index} holds non-finite values")


# ---- against the run about to load it -----------------------------------------------------------------------------
def verify_against_run(directory: Path, manifest: dict[str, Any], model: Any, optimizer: Any,
                       sharded: bool = False) -> None:
    """The checkpoint's model and optimizer state fit this run's (prepared) model and optimizer.

    ``sharded`` (FSDP, DeepSpeed): the state is in the backend's own layout; only the RNG files are checked here.
    """
    from accelerate.utils import load

    if sharded:
        return
    files = manifest["files"]
    for rel in (MODEL_STATE, OPTIMIZER, SCHEDULER):
        if rel not in files:
            raise CheckpointError(f"{MANIFEST} does not list {rel}")
    _model_fits(directory / MODEL_STATE, model)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    saved = load(directory / OPTIMIZER, map_location="cpu")
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError(f"{OPTIMIZER} has parameter groups of sizes {sizes}; this run's are "
                              f"{[len(g['params']) for g in optimizer.param_groups]}")
    order = {index: n for n, index in enumerate(i for g in saved["param_groups"] for i in g["params"])}
    for index, state in saved["state"].items():
        if index not in order:
            raise CheckpointError(f"{OPTIMIZER} has state for an unknown parameter {index!r}")
        shape = tuple(params[order[index]].shape)
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state and tuple(state[key].shape) != shape:
                raise CheckpointError(f"{OPTIMIZER}: {key} of parameter {index} has shape "
                                      f"{tuple(state[key].shape)}, the parameter {shape}")
    scheduler = load(directory / SCHEDULER)
    if len(scheduler["base_lrs"]) != len(optimizer.param_groups):
        raise CheckpointError(f"{SCHEDULER} schedules {len(scheduler['base_lrs'])} parameter groups; this run has "
                              f"{len(optimizer.param_groups)}")


def _model_fits(file: Path, model: Any) -> None:
    own = model.state_dict()
    with safe_open(str(file), "pt") as f:
        keys = set(f.keys())
        unknown = sorted(keys - set(own))
        if unknown:
            raise CheckpointError(f"{MODEL_STATE} holds weights this model does not have: {unknown[:3]}")
        for key in keys:
            shape = tuple(f.get_slice(key).get_shape())
            if shape != tuple(own[key].shape):
                raise CheckpointError(f"{MODEL_STATE}: {key} has shape {shape}, the model {tuple(own[key].shape)}")
    stored = {own[k].untyped_storage().data_ptr() for k in keys}
    missing = sorted(k for k in own if k not in keys and own[k].untyped_storage().data_ptr() not in stored)
    if missing:
        raise CheckpointError(f"{MODEL_STATE} lacks weights of this model: {missing[:3]}")
