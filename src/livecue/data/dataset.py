"""Records + frames (pixels or cached features) -> padded training batches with SPEC §3 labels.

``StreamDataset`` turns each record into ``input_ids``, position-aligned ``labels`` and the record's frames;
``collate`` pads a list of samples into one batch whose frames are concatenated in the order of the batch's ``<v>``
positions (row-major: sample by sample), which is the order :meth:`LiveModel.embed` fills them in.

Frames come from a *frame provider*: :class:`VideoFrames` decodes the record's video (or loads a ``.npy`` array of
frames) at the record's fps; :class:`~livecue.data.features.FeatureCache` reads pre-encoded vision features.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .labels import IGNORE, Markers, tokenize_conversation
from .records import num_frames, read_records, template_messages, truncate
from .template import Template
from .video import decode_at_fps, letterbox


class FrameProvider(Protocol):
    """Gives the frames of a record: ``(F, 3, H, W)`` uint8 pixels or ``(F, K, D)`` float features."""

    def __call__(self, record: dict[str, Any]) -> torch.Tensor: ...


def resolve_video(record: dict[str, Any], root: Path | None) -> Path:
    video = record.get("video")
    if not video:
        raise ValueError(f"record {record.get('id')!r} has frames but no 'video'")
    path = Path(video)
    return path if path.is_absolute() or root is None else root / path


class VideoFrames:
    """Decode a record's frames from its video file (PyAV) or ``.npy`` array, letterboxed to ``resolution``.

    A ``.npy`` file holds ``(N, H, W, 3)`` uint8 frames at the record's fps starting at video time 0.
    """

    def __init__(self, root: str | Path | None = None, resolution: int | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.resolution = resolution

    def __call__(self, record: dict[str, Any]) -> torch.Tensor:
        n = num_frames(record)
        if n == 0:
            return torch.zeros(0, 3, self.resolution or 1, self.resolution or 1, dtype=torch.uint8)
        path = resolve_video(record, self.root)
        fps, start = record["fps"], record.get("start", 0.0)
        if path.suffix == ".npy":
            if not path.is_file():
                raise FileNotFoundError(f"frames file not found: {str(path)!r}")
            array = np.load(path, mmap_mode="r")
            first = int(round(start * fps))
            frames = np.array(array[first:first + n])  # a copy: writable, file closed
        else:
            frames = np.stack([f for _, f in decode_at_fps(path, fps, start=start, max_frames=n)]) \
                if n else np.zeros((0, 1, 1, 3), np.uint8)
        if len(frames) < n:
            raise ValueError(f"record {record['id']!r} needs {n} frames from {str(path)!r} at {fps:g} fps "
                             f"(start {start:g} s) but the video gives {len(frames)}")
        x = torch.from_numpy(np.ascontiguousarray(frames[:n])).permute(0, 3, 1, 2)  # (F, 3, H, W)
        if self.resolution is not None:
            x = letterbox(x, self.resolution).round().to(torch.uint8)
        return x


@dataclass
class Sample:
    id: str
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor     # (T,)
    frames: torch.Tensor     # (F, 3, H, W) uint8 or (F, K, D) features
    turn_ends: list[int] = field(default_factory=list)  # position of each reply's end token (the metrics' turns)


class StreamDataset(torch.utils.data.Dataset):
    """A map-style dataset of streaming dialogues.

    Args:
        records: a JSONL path or a list of (validated) records.
        tokenizer: the model's tokenizer (with ``<v>``).
        template: the model's :class:`Template`.
        frames: a frame provider (default: :class:`VideoFrames` relative to the JSONL file's directory).
        max_num_frames: truncate each record at the first stream exceeding this many frames.
        markers: marker ids (default: read from the tokenizer for the template).
        system_prompt: put this system message first in records that have none (as the engine does at inference:
            a model must see the same prefix in training and in streaming).
    """

    def __init__(self, records: str | Path | Sequence[dict[str, Any]], tokenizer: Any, template: Template, *,
                 frames: FrameProvider | None = None, max_num_frames: int | None = None,
                 markers: Markers | None = None, system_prompt: str | None = None) -> None:
        root = None
        if isinstance(records, (str, Path)):
            root = Path(records).parent
            records = read_records(records)
        self.records = [truncate(r, max_num_frames) if max_num_frames else r for r in records]
        self.tokenizer = tokenizer
        self.template = template
        self.markers = markers or Markers.from_template(tokenizer, template)
        self.frames = frames if frames is not None else VideoFrames(root)
        self.system_prompt = system_prompt

    def messages(self, index: int) -> list[dict[str, Any]]:
        """The record's messages as the template renders them (with the default system prompt if it has none)."""
        msgs = template_messages(self.records[index])
        if self.system_prompt is not None and (not msgs or msgs[0]["role"] != "system"):
            msgs = [{"role": "system", "content": self.system_prompt}] + msgs
        return msgs

    def __len__(self) -> int:
        return len(self.records)

    def tokenize(self, index: int):
        rendered = self.template.render(self.messages(index))
        return tokenize_conversation(rendered, self.tokenizer, self.markers, self.template)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        tok = self.tokenize(index)
        frames = self.frames(record)
        if frames.shape[0] != tok.num_frames:
            raise ValueError(f"record {record['id']!r}: {tok.num_frames} frames in the dialogue but the frame "
                             f"provider gave {frames.shape[0]}")
        return Sample(id=record["id"], input_ids=torch.tensor(tok.input_ids), labels=torch.tensor(tok.labels),
                      frames=frames, turn_ends=tok.turn_ends)


def collate(samples: list[Sample], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a list of samples into a batch.

    Returns:
        ``input_ids`` (B, T), ``attention_mask`` (B, T), ``labels`` (B, T) with -100 on padding, and either
        ``frames`` (ΣF, 3, H, W) uint8 or ``frame_features`` (ΣF, K, D), concatenated sample by sample; ``ids``.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[i, :n], labels[i, :n], mask[i, :n] = s.input_ids, s.labels, 1
    frames = [s.frames for s in samples if s.frames.shape[0]]
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
                             "ids": [s.id for s in samples]}
    if frames:
        stacked = torch.cat(frames)
        batch["frame_features" if stacked.is_floating_point() else "frames"] = stacked
    return batch


class Collator:
    """Picklable ``collate_fn`` for DataLoader workers."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[Sample]) -> dict[str, Any]:
        return collate(samples, self.pad_token_id)


class SeededSampler(torch.utils.data.Sampler[int]):
    """Deterministic shuffling: epoch e uses ``seed + e``; identical order on every rank and every resume.

    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th index of the shuffled order (padded by
    wrapping so ranks get equal counts).
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order; ``skip`` drops its first indices (resuming mid-epoch without decoding them)."""
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = math.ceil(self.length / self.num_replicas) * self.num_replicas
        order += order[:total - len(order)]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip:])

    def __len__(self) -> int:
        return math.ceil(self.length / self.num_replicas) - self.skip
