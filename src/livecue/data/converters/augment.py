"""Reply augmentation and robustness items (SPEC §4, the released model's extra data).

**augment** (upstream ``StreamMixIn.augment``, done once offline with a seed): in a record with at least two learned
replies, pick one learned reply at index ``i`` (never the last) and a fake: another reply of the record (of the
whole input file when the record has none), an empty reply ``""``, or none at all. Then, with probability ½
("fix"):

* ``correct`` (fake text, next message a stream of n > 1 frames): the fake reply (unlearned), a learned 1-frame
  stream, the learned reply ``"(Sorry, the last response is wrong) {real}"``, the remaining n - 1 frames;
* ``delay`` (no fake, a stream before and a stream of n > 1 frames after): the reply moves one frame later: the
  previous stream of p frames takes one more frame and learns only its first p - 1, the next stream loses one;

otherwise ("no fix"):

* ``wrong`` (fake text): the fake reply replaces the real one, unlearned, and the next stream is unlearned;
* ``drop`` (no fake): the reply disappears; the previous stream learns its first p - 1 frames and absorbs the next
  stream (whose frames are then unlearned).

A fake reply is never learned: the model learns the correction, never the error. When the chosen case does not
apply (e.g. no stream after the reply), the record stays as it is (upstream). Augmented records get the id suffix
``/aug`` and ``meta.augment = {"case", "index", "fake"}``; times are kept valid (a delayed reply is 1/fps later).

**robustness** (upstream ``Robustness``): greetings and requests without any video (no frames), 10 frames of noise
and one black frame, each followed by a user question and the learned apology. The frames are written as
``(N, H, W, 3)`` uint8 ``.npy`` arrays in ``robustness/`` next to the output file.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...argtypes import FPS, SEED, UNIT_INTERVAL, int_range, positive_int
from ..records import read_records
from .common import require_records

log = logging.getLogger(__name__)

KINDS = {
    "augment": "augment learned replies of a records file: a wrong/empty reply then a correction or a one-frame delay",
    "robustness": "robustness items: greetings without video, noise frames, a black frame (writes .npy frames)",
}
CORRECTION = "(Sorry, the last response is wrong) {real}"
NOISE_REPLY = "Sorry, it seems the input video frames are noise. Please check your video input."
BLACK_REPLY = "Sorry, I cannot see anything. The video frame is black."
GREETINGS = (
    ("Hi!", "Hi! How can I help you?"),
    ("Hello.", "Hello! How can I help you?"),
    ("Hey, are you there?", "Yes, I am here. How can I help you?"),
    ("Please help me to narrate the video in real time.",
     "Sure! Please provide me the video stream, and I will narrate it for you."),
    ("Concisely output what you have seen.", "Sure! Please provide me the video input first."),
    ("What can you do?", "I can watch your video stream and help you in real time. Please share your video."),
)
QUESTIONS = ("What is happening now?", "What do you see?", "What is the next step?",
             "Please narrate the video in real time.", "Can you describe the scene?")
NOISE_FRAMES = 10


# ---- augmentation --------------------------------------------------------------------------------------------------
def _head(learn: bool | int, k: int) -> bool | int:
    """The learn flag of a stream restricted to its first ``k`` frames."""
    if isinstance(learn, bool):
        return k if learn else False
    return min(learn, k)


def _tail(learn: bool | int, drop: int) -> bool | int:
    """The learn flag of a stream's frames after its first ``drop``."""
    return learn if isinstance(learn, bool) else max(learn - drop, 0)


def augment_record(record: dict[str, Any], rng: random.Random, pool: Sequence[str] = ()) -> dict[str, Any] | None:
    """One augmented copy of ``record`` (see the module docstring), or None when nothing applies."""
    msgs = copy.deepcopy(record["messages"])
    learned = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and m.get("learn")]
    if len(learned) <= 1:
        return None
    i = rng.choice(learned[:-1])  # never the last reply: nothing after it depends on it
    real = msgs[i]["content"]
    fakes = sorted({msgs[j]["content"] for j in learned} - {real})
    if not fakes:  # the record has no other reply: borrow one from the dataset
        others = [x for x in pool if x != real]
        fakes = [rng.choice(others)] if others else []
    fake = rng.choice([*fakes, "", None])
    fix = rng.random() < 0.5
    fps = record["fps"]
    t = msgs[i]["time"]
    prev = msgs[i - 1] if i > 0 and msgs[i - 1]["role"] == "stream" else None
    nxt = msgs[i + 1] if i + 1 < len(msgs) and msgs[i + 1]["role"] == "stream" else None
    fake_msg = {"role": "assistant", "time": t, "content": fake, "learn": False} if fake is not None else None
    if fix and fake_msg and nxt and nxt["num_frames"] > 1:
        case = "correct"
        new = [fake_msg,
               {"role": "stream", "time": nxt["time"], "num_frames": 1, "learn": bool(_head(nxt["learn"], 1))},
               {"role": "assistant", "time": nxt["time"], "content": CORRECTION.format(real=real), "learn": True},
               {"role": "stream", "time": nxt["time"] + 1 / fps, "num_frames": nxt["num_frames"] - 1,
                "learn": _tail(nxt["learn"], 1)}]
        msgs[i:i + 2] = new
    elif fix and fake_msg is None and prev and nxt and nxt["num_frames"] > 1:
        case = "delay"
        p = prev["num_frames"]
        msgs[i - 1:i + 2] = [
            dict(prev, num_frames=p + 1, learn=_head(prev["learn"], p - 1)),
            dict(msgs[i], time=t + 1 / fps),
            dict(nxt, time=nxt["time"] + 1 / fps, num_frames=nxt["num_frames"] - 1, learn=_tail(nxt["learn"], 1))]
    elif fix:
        return None
    elif fake_msg:
        case = "wrong"
        msgs[i:i + 2 if nxt else i + 1] = [fake_msg] + ([dict(nxt, learn=False)] if nxt else [])
    else:
        case = "drop"
        if prev:
            p = prev["num_frames"]
            merged = dict(prev, num_frames=p + (nxt["num_frames"] if nxt else 0), learn=_head(prev["learn"], p - 1))
            msgs[i - 1:i + 2 if nxt else i + 1] = [merged]
        else:
            msgs[i:i + 2 if nxt else i + 1] = [dict(nxt, learn=False)] if nxt else []
    meta = dict(record.get("meta") or {}, augment={"case": case, "index": i, "fake": fake})
    return dict(record, id=f"{record['id']}/aug", messages=msgs, meta=meta)


def augment_records(records: Sequence[dict[str, Any]], *, seed: int = 0, p: float = 1.0,
                    keep_original: bool = False) -> Iterator[dict[str, Any]]:
    """Each record, augmented with probability ``p`` (deterministic per record id and seed)."""
    pool = sorted({m["content"] for r in records for m in r["messages"]
                   if m["role"] == "assistant" and m.get("learn") and m["content"]})
    done = 0
    for record in records:
        rng = random.Random(f"{seed}/{record['id']}")
        out = augment_record(record, rng, pool) if rng.random() < p else None
        if out is None or keep_original:
            yield record
        if out is not None:
            done += 1
            yield out
    log.info("augmented %d of %d records", done, len(records))


# ---- robustness ----------------------------------------------------------------------------------------------------
def _save_npy(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, frames)
    os.replace(tmp, path)


def robustness_records(out_dir: str | os.PathLike, *, n: int = 10, seed: int = 0, fps: float = 2.0,
                       resolution: int = 384) -> Iterator[dict[str, Any]]:
    """``n`` greetings, ``n`` noise items and ``n`` black-frame items; frames go to ``out_dir/robustness/``."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    frames_dir = Path(out_dir) / "robustness"
    for k in range(n):
        user, reply = GREETINGS[k % len(GREETINGS)]
        yield {"id": f"robustness/greeting_{k}", "video": None, "fps": fps, "start": 0.0, "duration": 0.0,
               "messages": [{"role": "user", "time": 0.0, "content": user},
                            {"role": "assistant", "time": 0.0, "content": reply, "learn": True}],
               "meta": {"robustness": "greeting"}}
    for k in range(n):
        _save_npy(frames_dir / f"noise_{k}.npy",
                  np_rng.integers(0, 256, (NOISE_FRAMES, resolution, resolution, 3), dtype=np.uint8))
        t = (NOISE_FRAMES - 1) / fps
        yield {"id": f"robustness/noise_{k}", "video": f"robustness/noise_{k}.npy", "fps": fps, "start": 0.0,
               "duration": t,
               "messages": [{"role": "stream", "time": 0.0, "num_frames": NOISE_FRAMES, "learn": False},
                            {"role": "user", "time": t, "content": rng.choice(QUESTIONS)},
                            {"role": "assistant", "time": t, "content": NOISE_REPLY, "learn": True}],
               "meta": {"robustness": "noise"}}
    if n:
        _save_npy(frames_dir / "black.npy", np.zeros((1, resolution, resolution, 3), np.uint8))
    for k in range(n):
        yield {"id": f"robustness/black_{k}", "video": "robustness/black.npy", "fps": fps, "start": 0.0,
               "duration": 0.0,
               "messages": [{"role": "stream", "time": 0.0, "num_frames": 1, "learn": False},
                            {"role": "user", "time": 0.0, "content": rng.choice(QUESTIONS)},
                            {"role": "assistant", "time": 0.0, "content": BLACK_REPLY, "learn": True}],
               "meta": {"robustness": "black"}}


# ---- command -------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--seed", type=SEED, default=0, help=f"seed, in {SEED.range}")
    if kind == "augment":
        parser.add_argument("--records", required=True, help="input records (JSONL)")
        parser.add_argument("--p", type=UNIT_INTERVAL, default=1.0,
                            help="probability to augment a record, in [0, 1] (default: 1)")
        parser.add_argument("--keep-original", action="store_true", help="also keep the unaugmented records")
    else:
        parser.add_argument("--n", type=positive_int(100_000), default=10,
                            help="items of each type, in [1, 100000] (default: %(default)s)")
        parser.add_argument("--fps", type=FPS, default=2.0, help=f"frame clock, in {FPS.range} (default: 2)")
        parser.add_argument("--resolution", type=int_range(1, 2048), default=384,
                            help="side of the written frames (pixels), in [1, 2048] (default: %(default)s)")


def convert(args: argparse.Namespace, kind: str) -> Iterator[dict[str, Any]]:
    if kind == "augment":
        records = read_records(args.records)
        return require_records(augment_records(records, seed=args.seed, p=args.p, keep_original=args.keep_original),
                               lambda: f"the records file {args.records!r} holds no record")
    return robustness_records(Path(args.out).parent, n=args.n, seed=args.seed, fps=args.fps,
                              resolution=args.resolution)
