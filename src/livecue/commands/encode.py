"""``livecue encode VIDEO_DIR --out DIR --model M``: the resumable, sharded feature cache.

Run on several processes (GPUs or machines) with ``accelerate launch -m livecue.cli encode ...``; each process
encodes its share of the videos, and the main process writes the index once all have finished.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from ..progress import Progress
from ._common import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    FPS,
    announce_random,
    check_device,
    check_model_source,
    distributed,
    has_accelerate,
    parser,
    positive_int,
    source_random_parts,
    split_overrides,
)

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("encode", "Pre-encode videos with the model's frozen vision tower into a feature cache.")
    p.add_argument("video_dir", help="directory of video files (searched recursively; .npy frame arrays too)")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory, config file or preset (its vision "
                                                          "tower is used); default: %(default)s (the packaged "
                                                          "default model)")
    p.add_argument("--fps", type=FPS, default=None,
                   help=f"frames per second, in {FPS.range} (default: the model's stream fps)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16",
                   help="storage dtype of the features (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int(4096), default=32, help="frames per vision batch, in [1, 4096]")
    p.add_argument("--device", default=DEFAULT_DEVICE,
                   help="torch device: auto (under accelerate: each process's own; else cuda, else mps, else cpu), "
                        "cpu, cuda, cuda:N or mps (default: %(default)s)")
    args = p.parse_args(argv)
    # cheap checks first (a typo never costs a model load): the inputs exist, the device is there
    if not Path(args.video_dir).is_dir():
        raise FileNotFoundError(f"video directory not found: {args.video_dir!r}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise FileExistsError(f"--out {args.out!r} is a file, not a cache directory")
    check_model_source(args.model)
    args.device = None if args.device == "auto" and has_accelerate() else check_device(args.device)

    import torch

    from ..data.features import DTYPES, INDEX, build_index, encode_video, feature_file, list_videos, save_features
    from ..model.load import load_frame_encoder

    rank, world, device, wait, is_main = distributed(args.device)
    videos = list_videos(args.video_dir)
    if not videos:
        raise ValueError(f"no video files in {args.video_dir!r}")
    tower = [part for part in source_random_parts(args.model, overrides) if part in ("vision", "vlm")]
    with announce_random("livecue encode", str(args.model), tower):
        encoder, cfg = load_frame_encoder(args.model, device=device, overrides=overrides or None)
    fps = cfg.stream.fps if args.fps is None else args.fps
    out = Path(args.out)
    vision = cfg.to_dict()["vlm" if cfg.is_vlm else "vision"]  # what made the features
    header = {"fps": fps, "vision": vision, "frame_num_tokens": cfg.frame_num_tokens, "dtype": args.dtype,
              "model": str(args.model)}
    _check_compatible(out / INDEX, header)

    mine = videos[rank::world]
    todo = [key for key in mine if not feature_file(out, key).exists()]
    skipped, done, failed, frames = len(mine) - len(todo), 0, 0, 0
    first_error = ""
    tag = f"[{rank}] " if world > 1 else ""
    if skipped:  # a resumed run: say what is kept (on stderr, with the progress)
        print(f"{tag}{skipped} of {len(mine)} videos already encoded in {str(out)!r}: resuming with the other "
              f"{len(todo)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    # one display for all processes (accelerate's convention): the main process shows its own share
    with Progress(len(todo), desc=f"{tag}encode", unit="video", enabled=None if is_main else False) as bar:

        def encoded(n: int) -> None:  # frames encoded so far, batch by batch (a long video shows it moving)
            nonlocal frames
            frames += n
            bar.update(0, frames=frames)

        for key in todo:
            try:
                with torch.inference_mode():
                    feats = encode_video(Path(args.video_dir) / key, fps, encoder, args.batch_size,
                                         DTYPES[args.dtype], on_batch=encoded)
            except (ValueError, OSError) as e:
                failed += 1
                reason = " ".join(str(e).split())
                first_error = first_error or f"{key}: {reason}"
                bar.write(f"{tag}skipped {key}: {reason}")
                bar.update(1, failed=failed)
                continue
            save_features(feature_file(out, key), feats, {"source": key, "fps": str(fps),
                                                          "num_frames": str(feats.shape[0]),
                                                          "duration": str((feats.shape[0] - 1) / fps)})
            done += 1
            bar.update(1)
    wait()
    if world == 1 and failed and not done and not skipped:
        raise ValueError(f"every video failed to encode ({failed} of {len(mine)} in {args.video_dir!r}); the first: "
                         f"{first_error}")
    if is_main:
        index = build_index(out, header)
        print(f"cache {out}: {len(index['videos'])} videos indexed ({done} encoded here, {skipped} already done, "
              f"{failed} failed) in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def _check_compatible(index_file: Path, header: dict) -> None:
    if not index_file.is_file():
        return
    try:
        old = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise ValueError(f"the cache index {str(index_file)!r} is not valid JSON{where}: use another --out directory "
                         "or delete it") from None
    if not isinstance(old, dict):
        raise ValueError(f"the cache index {str(index_file)!r} is not a livecue feature index")
    for key in ("fps", "vision", "frame_num_tokens", "dtype"):
        if old.get(key) != header[key]:
            raise ValueError(f"the cache {str(index_file.parent)!r} was encoded with a different {key} "
                             f"({old.get(key)!r} vs {header[key]!r}); use another --out directory")
