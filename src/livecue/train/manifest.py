"""What a training checkpoint's manifest records, shared by the writer (:mod:`livecue.train.checkpoint`) and the
verifier (:mod:`livecue.train.verify`): the format constants, the error type, and the hash of the run config.

The manifest file itself (``livecue_manifest.json``, :data:`MANIFEST`) and file hashing come from
:mod:`livecue.model.verify`, which checks a model checkpoint's weights against the same manifest when it loads.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..model.verify import MANIFEST, file_sha256  # noqa: F401 - also this module's interface

STATE_DIR = "state"                  # accelerate's save_state: model, optimizer, scheduler, RNG per process
STATE_FILE = "trainer_state.json"    # {"step", "epoch", "micro"}
CHECKPOINT_FORMAT = "livecue-training-checkpoint"
MODEL_FORMAT = "livecue-model"       # output_dir/final
FORMAT_VERSION = 1

# Fields of the run config that may change when resuming: the run's name, where and how often the run logs,
# evaluates and saves, the experiment trackers, and memory/speed knobs. Everything else (model, LoRA, data,
# optimisation, schedule, seed) must equal the checkpoint's. ``train.train_data`` may move to another path when the
# records it names are byte-identical.
RESUMABLE_CHANGES = frozenset({
    "name", "train.output_dir", "train.eval_data", "train.eval_steps", "train.eval_max_samples", "train.log_steps",
    "train.save_steps", "train.save_total_limit", "train.num_workers", "train.gradient_checkpointing",
    "train.report_to",
})

# The fields config_sha256 leaves out: those of format 1, fixed, so that the manifests written before a field became
# resumable still verify (the hash checks that a manifest's config is intact; RESUMABLE_CHANGES alone decides what a
# resume may change). A field that is new to the config (train.report_to) is absent from older manifests, so hashing
# it changes nothing for them.
_UNHASHED = frozenset({
    "train.output_dir", "train.eval_data", "train.eval_steps", "train.eval_max_samples", "train.log_steps",
    "train.save_steps", "train.save_total_limit", "train.num_workers", "train.gradient_checkpointing",
    "train.train_data",
})


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and what is wrong."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (nested dicts such as ``lm.random_init`` too)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_sha256(config: dict[str, Any]) -> str:
    """A hash of a run config, but for where the run writes, logs and saves (:data:`_UNHASHED`): a manifest records
    it beside the config, so that an edited or damaged config is caught."""
    fixed = {k: v for k, v in flatten(config).items() if k not in _UNHASHED}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when empty), at most 200 characters."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
