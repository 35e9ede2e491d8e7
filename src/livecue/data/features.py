"""The feature cache: frames encoded once by the frozen vision tower, stored per video (SPEC §4 "Features").

Layout of a cache directory::

    index.json                      {"version": 1, "fps": 2.0, "vision": {...}, "frame_num_tokens": 10,
                                     "dtype": "float16", "videos": {KEY: {"file", "num_frames", "duration"}}}
    features/<KEY>.safetensors      tensor "features": (N, K, D) at the cache fps, frame i at video time i / fps

KEY is the video's path relative to the encoded directory (what records put in ``video``). Writing is resumable
and safe to kill: each video is written to a temporary file and renamed into place, a rerun skips videos whose file
exists, and the index is rebuilt from the files. Encoding is sharded across processes with accelerate
(``accelerate launch -m livecue.cli encode ...``): process r of n takes videos r, r + n, ...
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .records import num_frames
from .video import decode_at_fps

log = logging.getLogger(__name__)
INDEX = "index.json"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".npy"}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def list_videos(directory: str | Path) -> list[str]:
    """Video files under ``directory`` (recursively), as sorted relative POSIX paths."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"video directory not found: {str(directory)!r}")
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))


def feature_file(out: Path, key: str) -> Path:
    return out / "features" / f"{key}.safetensors"


def iter_video_frames(path: Path, fps: float) -> Iterable[np.ndarray]:
    """Frames of a video file (decoded at ``fps``) or of a ``.npy`` array (already at ``fps``)."""
    if path.suffix == ".npy":
        try:
            frames = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"not a readable .npy frame array: {str(path)!r} ({' '.join(str(e).split())})") from None
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
            raise ValueError(f"{str(path)!r}: expected an (N, H, W, 3) uint8 frame array, got shape {frames.shape} "
                             f"dtype {frames.dtype}")
        for frame in frames:
            yield np.array(frame)
        return
    for _, frame in decode_at_fps(path, fps):
        yield frame


def encode_video(path: Path, fps: float, encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 32,
                 dtype: torch.dtype = torch.float16, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Encode every frame of a video at ``fps`` in batches. Returns (N, K, D) on CPU in ``dtype``.

    ``on_batch(n)``, when given, is called after each batch with its number of frames (for progress displays).
    """
    chunks: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        chunks.append(encode(torch.stack(batch)).to("cpu", dtype))
        if on_batch is not None:
            on_batch(len(batch))
        batch.clear()

    for frame in iter_video_frames(path, fps):
        tensor = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
        if batch and tensor.shape != batch[0].shape:  # the frame size changed mid-video: encode what came before
            flush()
        batch.append(tensor)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not chunks:
        raise ValueError(f"no frames decoded from {str(path)!r}")
    return torch.cat(chunks)


def save_features(file: Path, features: torch.Tensor, metadata: dict[str, str]) -> None:
    """Atomic write: a temporary file in the same directory renamed into place."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=file.parent)
    os.close(fd)
    try:
        save_file({"features": features.contiguous()}, tmp, metadata=metadata)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_index(out: str | Path, header: dict[str, Any]) -> dict[str, Any]:
    """Rebuild ``index.json`` from the feature files present (after all shards finished)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    videos = {}
    for file in sorted((out / "features").rglob("*.safetensors")):
        if file.name.startswith(".tmp-"):
            continue
        key = file.relative_to(out / "features").as_posix()[: -len(".safetensors")]
        try:
            with safe_open(str(file), "pt") as f:
                meta = f.metadata() or {}
                n = f.get_slice("features").get_shape()[0]
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            log.warning("feature file %s is unreadable (%s): left out of the index; delete it and rerun",
                        file, " ".join(str(e).split()))
            continue
        videos[key] = {"file": file.relative_to(out).as_posix(), "num_frames": n,
                       "duration": float(meta.get("duration", (n - 1) / header["fps"]))}
    index = dict(header, version=1, videos=videos)
    tmp = out / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / INDEX)
    return index


class FeatureCache:
    """Read cached features; also a frame provider for :class:`~livecue.data.dataset.StreamDataset`."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        file = self.dir / INDEX
        if not file.is_file():
            raise FileNotFoundError(f"no feature cache index at {str(file)!r}: run 'livecue encode' first")
        try:
            self.index = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
            raise ValueError(f"feature cache index {str(file)!r} is not valid JSON{where}: rerun 'livecue encode'") \
                from None
        fps = self.index.get("fps") if isinstance(self.index, dict) else None
        if not isinstance(self.index, dict) or not isinstance(self.index.get("videos"), dict) \
                or isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
            raise ValueError(f"feature cache index {str(file)!r} is not a livecue feature index (needs a positive "
                             "'fps' and a 'videos' object): rerun 'livecue encode'")
        self.fps = float(fps)

    def __contains__(self, key: str) -> bool:
        return key in self.index["videos"]

    def load(self, key: str) -> torch.Tensor:
        """All features of one video: (N, K, D)."""
        entry = self.index["videos"].get(key)
        if entry is None:
            some = next(iter(self.index["videos"]), None)
            raise FileNotFoundError(f"video {key!r} is not in the feature cache {str(self.dir)!r} (it holds e.g. "
                                    f"{some!r}: encode the directory the records' video paths are relative to)")
        file = self.dir / str(entry.get("file") if isinstance(entry, dict) else "")
        try:
            return load_file(str(file))["features"]
        except FileNotFoundError:
            raise FileNotFoundError(f"feature file missing from the cache: {str(file)!r}") from None
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise ValueError(f"feature file {str(file)!r} is unreadable (corrupt or truncated: "
                             f"{' '.join(str(e).split())}); delete it and rerun 'livecue encode'") from None

    def __call__(self, record: dict[str, Any]) -> torch.Tensor:
        """The record's frames as features: frame k at video time start + k / fps -> cache frame round(t·fps)."""
        n = num_frames(record)
        feats = self.load(record["video"])
        fps, start = record["fps"], record.get("start", 0.0)
        idx = torch.tensor([round((start + k / fps) * self.fps) for k in range(n)], dtype=torch.long)
        if n and int(idx.max()) >= feats.shape[0]:
            raise ValueError(f"record {record['id']!r} needs cache frame {int(idx.max())} of {record['video']!r}, "
                             f"which has {feats.shape[0]} frames at {self.fps:g} fps")
        return feats[idx].float()
