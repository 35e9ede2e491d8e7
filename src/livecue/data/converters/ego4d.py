"""Ego4D narrations -> narration-stream records (SPEC §4), plain and refined (second person).

Sources (official formats, both accepted, with or without a ``{"videos": {...}}`` wrapper):

* ``all_narrations_redacted.json``: ``videos[uid]["narrations"] = [{"time", "text", "_annotation_uid"}, ...]``;
  one pass per ``_annotation_uid``, numbered 1, 2, ... in order of their first narration;
* ``narration.json``: ``[uid]["narration_pass_K"]["narrations"] = [{"timestamp_sec", "narration_text", ...}]``.

Optional ``ego4d.json`` (``videos: [{video_uid, duration_sec}]``) gives durations; benchmark split files
(``*_val.json`` / ``*_test_unannotated.json``, lists under ``videos``/``clips``/``annotations`` whose entries carry
``video_uid``) give the val/test uids; train is the rest.

Per pass (upstream ``Ego4DNarrationStream``): texts cleaned (:func:`clean_text`, < 2 words dropped), sorted by time,
each time snapped to the frame index ``k = ceil(t * fps)`` clamped to ``[0, floor(duration * fps)]``. Skip a text
equal to the previous kept one; a text on the previous frame index overwrites the previous reply; otherwise a stream
of ``k - k_last`` frames then the reply. Stop once the clamp (the video end) is reached.

Timing mapping onto livecue records: the record starts at the first narration's frame ``k0`` (``start = k0 / fps``,
exactly upstream's load range ``k0 .. k_last``). Record frame ``j`` is video frame ``k0 + j``. The first narration
gives a 1-frame stream (frame 0, made unlearned) followed by the user instruction and the first reply, both at
record time 0. A later narration on frame ``k`` gives ``stream(time=(k_prev + 1 - k0) / fps, num_frames=k - k_prev)``
whose last frame is ``k``, then ``assistant(time=(k - k0) / fps)``: the reply follows exactly the frame its narration
snapped to. ``duration`` is the record's span ``(frames - 1) / fps``; the video's length goes to ``meta``. Records
are cut before the first stream that would pass ``--max-num-frames`` (:func:`livecue.data.records.truncate`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ...argtypes import FPS, SEED, positive_int
from ...pretrained import resolve
from ..records import truncate
from .common import Tally, is_number, read_json

log = logging.getLogger(__name__)

KINDS = {
    "ego4d-narration": "Ego4D narrations -> real-time narration streams (one record per video and annotation pass)",
    "ego4d-refined": "Ego4D narrations rewritten to second person by a local instruct LLM -> narration streams",
}
INSTRUCTION = ("Please concisely narrate the video in real time. Use the tag 'C' to denote the camera wearer, and "
               "other letter tags, such as 'X', to denote other individuals in the scene.")
REFINED_INSTRUCTIONS = (
    "Please narrate the video in real time in second person.",
    "Describe what I am doing in real time, addressing me as 'you'.",
    "Narrate my actions as they happen, speaking to me in the second person.",
    "Tell me concisely what I am doing while the video plays.",
    "As the video streams, briefly describe my actions to me.",
    "Keep me updated in real time about what I am doing. Be concise.",
    "Give a short running commentary on what you see me do.",
    "Please describe my activity in real time with short sentences.",
    "Watch the video and tell me what I do, step by step, as it happens.",
    "Concisely narrate my actions in the video in real time, using 'you'.",
)
FAILED = "Not sure what you are doing."
TAGS = ("#C", "#c", "@c", "#O", "#o", "#Unsure", "#unsure", "#")
FEW_SHOT = (
    ("C looks around.", "You look around."),
    ("C picks up a knife from the table.", "You pick up a knife from the table."),
    ("A man X watches the phone.", "A man watches the phone."),
    ("C plays a piano, and a woman O comes to him.", "You play a piano, and a woman comes to you."),
    ("Man A approaches C.", "A man approaches you."),
    ("C hands the cup to X.", "You hand the cup to a person."),
)

Narration = tuple[float, str]  # (time in seconds, cleaned text)


def clean_text(src: str) -> str | None:
    """SPEC §4 cleaning: drop the tags, collapse spaces, strip ``.,\\n `` at both ends, capitalise the first word
    (``str.capitalize``, as upstream), add ``.``. Returns None for texts of fewer than 2 words.

    Upstream strips before collapsing; the results are the same except for tabs/CRs next to the ends, where upstream
    would keep stray punctuation (``"C picks ,\\t"`` -> ``"C picks , ."``; here ``"C picks."``)."""
    words = _words(src)
    if not words:
        return None
    words[0] = words[0].capitalize()
    text = " ".join(words) + "."
    return text if len(words) >= 2 else None


def _words(src: str) -> list[str]:
    """The words of a narration once its tags and end punctuation are removed (see :func:`clean_text`)."""
    for tag in TAGS:
        src = src.replace(tag, "")
    return " ".join(src.split()).strip(".,\n ").split()


# ---- loading -------------------------------------------------------------------------------------------------------
def _load_json(path: str | os.PathLike) -> Any:
    return read_json(path, "annotation file")


def _clean_items(items: Iterable[dict[str, Any]], where: str,
                 tally: Tally | None = None) -> list[tuple[float, str, str | None]]:
    """Cleaned ``(time, text, annotation uid)`` sorted by time; what is dropped or clamped is counted in ``tally``."""
    tally = tally if tally is not None else Tally()
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            tally.add("narrations that are not objects (skipped)")
            continue
        time = item.get("time", item.get("timestamp_sec"))
        text = item.get("text", item.get("narration_text"))
        if not is_number(time):
            log.debug("%s, narration %d: no numeric time/timestamp_sec: skipped", where, n)
            tally.add("narrations without a numeric time (skipped)")
            continue
        cleaned = clean_text(text) if isinstance(text, str) else None
        if cleaned is None:
            one_word = isinstance(text, str) and len(_words(text)) == 1
            tally.add("narrations with a one-word text (skipped, as upstream)" if one_word
                      else "narrations without text (skipped)")
            continue
        if time < 0:
            tally.add("narrations with a negative time (clamped to frame 0)")
        out.append((float(time), cleaned, item.get("_annotation_uid", item.get("annotation_uid"))))
    return sorted(out, key=lambda x: x[0])  # stable: ties keep file order


def load_narrations(path: str | os.PathLike) -> dict[str, list[tuple[int, str | None, list[Narration]]]]:
    """``video_uid -> [(pass number, annotation uid, [(time, cleaned text), ...] sorted by time), ...]``.

    Narrations without text, without a numeric time or with one word are skipped and those with a negative time
    clamped to frame 0 (as upstream); each kind is counted and reported as one warning naming the file."""
    data = _load_json(path)
    videos = data.get("videos", data) if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f"{path}: expected a dict of videos keyed by video_uid (optionally under 'videos')")
    out: dict[str, list[tuple[int, str | None, list[Narration]]]] = {}
    tally = Tally()
    for uid, video in videos.items():
        passes: list[tuple[int, str | None, list[Narration]]] = []
        if not isinstance(video, dict):
            raise ValueError(f"{path}: video {uid!r} must be an object")
        if isinstance(video.get("narrations"), list):  # all_narrations_redacted.json: group by annotation uid
            groups: dict[Any, list[Narration]] = {}
            for time, text, ann in _clean_items(video["narrations"], f"{path}: video {uid!r}", tally):
                groups.setdefault(ann, []).append((time, text))
            passes = [(k, ann, g) for k, (ann, g) in enumerate(groups.items(), 1)]
        else:  # narration.json: narration_pass_K
            for key in sorted(video, key=lambda s: (len(s), s)):
                m = re.fullmatch(r"narration_pass_(\d+)", key)
                if m and isinstance(video[key], dict):
                    narrations = video[key].get("narrations") or []
                    if not isinstance(narrations, list):
                        raise ValueError(f"{path}: video {uid!r}, {key}: 'narrations' must be a list")
                    items = _clean_items(narrations, f"{path}: video {uid!r}, {key}", tally)
                    anns = {a for _, _, a in items if a is not None}
                    passes.append((int(m.group(1)), anns.pop() if len(anns) == 1 else None,
                                   [(t, x) for t, x, _ in items]))
        out[uid] = [p for p in passes if p[2]]
    tally.warn(log, f"{path}")
    return out


def load_durations(path: str | os.PathLike) -> dict[str, float]:
    """Video durations from ``ego4d.json`` (``videos: [{video_uid, duration_sec}]``) or ``{uid: seconds}`` /
    ``{uid: {"duration": seconds}}``."""
    data = _load_json(path)

    def seconds(value: Any, where: str) -> float:
        if not is_number(value) or value < 0:
            raise ValueError(f"{path}: {where}: the duration must be a finite number of seconds >= 0, got {value!r}")
        return float(value)

    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        return {v["video_uid"]: seconds(v["duration_sec"], f"videos[{i}]") for i, v in enumerate(data["videos"])
                if isinstance(v, dict) and "video_uid" in v and v.get("duration_sec") is not None}
    if isinstance(data, dict):
        return {uid: seconds(v.get("duration") if isinstance(v, dict) else v, repr(uid)) for uid, v in data.items()}
    raise ValueError(f"{path}: expected ego4d.json metadata ('videos': [{{video_uid, duration_sec}}])")


def split_video_uids(paths: Sequence[str | os.PathLike]) -> set[str]:
    """All ``video_uid`` of the entries listed under ``videos``/``clips``/``annotations`` of benchmark files (or a
    plain JSON list of uids)."""
    uids: set[str] = set()
    for path in paths:
        data = _load_json(path)
        if isinstance(data, list):
            lists = [data]
        elif isinstance(data, dict):
            lists = [data[k] for k in ("videos", "clips", "annotations") if isinstance(data.get(k), list)]
        else:
            lists = []
        if not lists:
            raise ValueError(f"{path}: no 'videos', 'clips' or 'annotations' list with video_uid entries")
        for entries in lists:
            for e in entries:
                if isinstance(e, str):
                    uids.add(e)
                elif isinstance(e, dict) and isinstance(e.get("video_uid"), str):
                    uids.add(e["video_uid"])
    return uids


# ---- streams -------------------------------------------------------------------------------------------------------
def narration_messages(narrations: Sequence[Narration], fps: float, duration: float | None,
                       instruction: str) -> tuple[int, list[dict[str, Any]]]:
    """One pass -> (first frame index ``k0``, record messages); see the module docstring for the timing."""
    kmax = math.floor(duration * fps + 1e-6) if duration is not None else None

    def frame(t: float) -> int:
        k = max(math.ceil(round(t * fps, 9)), 0)  # round: float noise like 2.0000000000000004 stays frame 2
        return min(k, kmax) if kmax is not None else k

    k0 = frame(narrations[0][0])
    body: list[dict[str, Any]] = []
    last_k, last_text = k0 - 1, None
    for t, text in narrations:
        if kmax is not None and last_k >= kmax:
            break
        if text == last_text:
            continue
        k = frame(t)
        if k == last_k:  # same frame: the later narration is closer, it replaces the previous reply
            body[-1]["content"] = text
        else:
            body.append({"role": "stream", "time": (last_k + 1 - k0) / fps, "num_frames": k - last_k, "learn": True})
            body.append({"role": "assistant", "time": (k - k0) / fps, "content": text, "learn": True})
        last_k, last_text = k, text
    body[0]["learn"] = False
    return k0, body[:1] + [{"role": "user", "time": 0.0, "content": instruction}] + body[1:]


def narration_record(uid: str, pass_no: int, ann: str | None, narrations: Sequence[Narration], *, fps: float,
                     duration: float | None, instruction: str, max_num_frames: int, video_dir: str = "",
                     prefix: str = "ego4d") -> dict[str, Any]:
    """The record of one (video, annotation pass)."""
    k0, messages = narration_messages(narrations, fps, duration, instruction)
    frames = sum(m["num_frames"] for m in messages if m["role"] == "stream")
    record = {"id": f"{prefix}/{uid}/pass{pass_no}",
              "video": os.path.join(video_dir, f"{uid}.mp4") if video_dir else f"{uid}.mp4",
              "fps": fps, "start": k0 / fps, "duration": (frames - 1) / fps, "messages": messages,
              "meta": {"video_uid": uid, "pass": pass_no, "annotation_uid": ann, "video_duration": duration}}
    return truncate(record, max_num_frames)


# ---- refinement ----------------------------------------------------------------------------------------------------
class Rewriter(Protocol):
    """Rewrites narrations to second person; None marks a failure."""

    def __call__(self, texts: list[str]) -> list[str | None]: ...


def rewrite_prompt(text: str) -> str:
    """The few-shot user prompt for one narration."""
    shots = "\n".join(f"[{a}] -> [{b}]" for a, b in FEW_SHOT)
    return ("Rewrite the narration so that it speaks to the camera wearer C as 'you'. The uppercase letters "
            "(C, X, O, A, ...) tag persons: remove them, keep the meaning, make the text clear and concise. "
            f"Examples:\n{shots}\n\nNow rewrite [{text}] -> ? Put the answer in [].")


def parse_rewrite(output: str) -> str | None:
    """The text before the first ``]`` of the continuation of ``[text] -> [``; None when missing or empty."""
    if "]" not in output:
        return None
    text = " ".join(output[:output.index("]")].split())
    return text or None


class HFRewriter:
    """A local transformers instruct LM as a :class:`Rewriter` (greedy, batched, left-padded)."""

    def __init__(self, model_path: str, *, device: str | None = None, max_new_tokens: int = 64) -> None:
        # torch and transformers load with the rewriter: converting from a cache never pays for them
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        self.device = device or (str(accelerator) if accelerator is not None else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype="auto").to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def prompt(self, text: str) -> str:
        chat = [{"role": "user", "content": rewrite_prompt(text)}]
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + f"[{text}] -> ["

    def __call__(self, texts: list[str]) -> list[str | None]:
        enc = self.tokenizer([self.prompt(t) for t in texts], return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        with self.torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        decoded = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [parse_rewrite(d) for d in decoded]


def _save_cache(path: Path, cache: dict[str, str | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(cache, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def refine_texts(texts: Iterable[str], rewriter: Rewriter | Callable[[list[str]], list[str | None]], *,
                 cache: str | os.PathLike | None = None, batch_size: int = 16) -> dict[str, str]:
    """``text -> second-person text`` for every distinct text; failures become ``FAILED``. With ``cache`` (a JSON
    file ``{text: rewrite or null}``) known texts skip the LM and every finished batch is saved (atomically)."""
    cache_path = Path(cache) if cache else None
    known: dict[str, str | None] = _load_json(cache_path) if cache_path and cache_path.is_file() else {}
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    if todo:
        log.info("rewriting %d narrations (%d cached)", len(todo), len(known))
    for i in range(0, len(todo), batch_size):
        batch = todo[i:i + batch_size]
        results = list(rewriter(batch))
        if len(results) != len(batch):
            raise ValueError(f"the rewriter returned {len(results)} texts for {len(batch)}")
        for src, dst in zip(batch, results):
            dst = " ".join(dst.split()) if isinstance(dst, str) else None
            if not dst:
                log.warning("could not rewrite %r: using %r", src, FAILED)
            known[src] = dst or None
        if cache_path:
            _save_cache(cache_path, known)
    return {t: known[t] or FAILED for t in known}


# ---- command -------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--narrations", required=True,
                        help="all_narrations_redacted.json (or narration.json) of Ego4D v2")
    parser.add_argument("--durations", default=None, help="ego4d.json video metadata (duration_sec per video_uid); "
                                                          "without it a video ends at its last narration")
    parser.add_argument("--val-split", action="append", default=[], metavar="FILE",
                        help="benchmark val annotation JSON (e.g. nlq_val.json, fho_lta_val.json); repeatable")
    parser.add_argument("--test-split", action="append", default=[], metavar="FILE",
                        help="benchmark test annotation JSON (e.g. nlq_test_unannotated.json); excluded from train")
    parser.add_argument("--split", choices=["train", "val", "test"], default="train")
    parser.add_argument("--fps", type=FPS, default=2.0, help=f"frame clock, in {FPS.range} (default: %(default)s)")
    parser.add_argument("--max-num-frames", type=positive_int(), default=1200,
                        help="cut before the first stream passing this many frames (live1+: 1200, live1: 7200)")
    parser.add_argument("--video-dir", default="", help="prefix of the records' video paths ({video_uid}.mp4)")
    if kind == "ego4d-refined":
        parser.add_argument("--rewriter", default="smollm2-135m-instruct",
                            help="local instruct LM directory or livecue alias (default: %(default)s)")
        parser.add_argument("--cache", default=None, help="JSON cache of rewrites; reruns skip the LM")
        parser.add_argument("--batch-size", type=positive_int(1024), default=16,
                            help="rewrites per batch, in [1, 1024]")
        parser.add_argument("--max-new-tokens", type=positive_int(4096), default=64,
                            help="rewrite length cap, in [1, 4096]")
        parser.add_argument("--device", default=None,
                            help="torch device of the rewriter (default: the accelerator if any, else cpu)")
        parser.add_argument("--seed", type=SEED, default=0,
                            help=f"seed of the per-record instruction choice, in {SEED.range}")


def select_videos(uids: Iterable[str], split: str, val: set[str], test: set[str]) -> list[str]:
    """Upstream split: val = uids in val files, test = in test files but not val, train = the rest."""
    if split == "val":
        return [u for u in uids if u in val]
    if split == "test":
        return [u for u in uids if u in test and u not in val]
    return [u for u in uids if u not in val and u not in test]


def convert(args: argparse.Namespace, kind: str) -> Iterator[dict[str, Any]]:
    """The records of ``kind``; fails with the reason when there are none."""
    if args.split != "train" and not getattr(args, f"{args.split}_split"):
        raise ValueError(f"--split {args.split} needs --{args.split}-split FILE (benchmark annotation files)")
    videos = load_narrations(args.narrations)
    durations = load_durations(args.durations) if args.durations else {}
    val, test = split_video_uids(args.val_split), split_video_uids(args.test_split)
    if not val and not test:
        log.warning("no --val-split/--test-split files: every video counts as %s", args.split)
    uids = select_videos(videos, args.split, val, test)
    log.info("%s: %d of %d videos in split %s", kind, len(uids), len(videos), args.split)
    if not any(videos[u] for u in uids):
        usable = sum(1 for passes in videos.values() if passes)
        raise ValueError(f"no records: {len(videos)} videos in {args.narrations}, {usable} with usable narrations "
                         f"(a numeric time and a text of at least 2 words), {len(uids)} in split {args.split}; none "
                         "has both")
    refined = kind == "ego4d-refined"
    prefix = "ego4d-refined" if refined else "ego4d"
    mapping: dict[str, str] = {}
    if refined:
        rewriter = args.rewriter
        if isinstance(rewriter, str):
            rewriter = HFRewriter(resolve(rewriter), device=args.device, max_new_tokens=args.max_new_tokens)
        texts = (x for u in uids for _, _, ns in videos[u] for _, x in ns)
        mapping = refine_texts(texts, rewriter, cache=args.cache, batch_size=args.batch_size)
    for uid in uids:
        if uid not in durations and args.durations:
            log.warning("no duration for video %s: it ends at its last narration", uid)
        for pass_no, ann, narrations in videos[uid]:
            rid = f"{prefix}/{uid}/pass{pass_no}"
            if refined:
                narrations = [(t, mapping[x]) for t, x in narrations]
                instruction = random.Random(f"{args.seed}/{rid}").choice(REFINED_INSTRUCTIONS)
            else:
                instruction = INSTRUCTION
            yield narration_record(uid, pass_no, ann, narrations, fps=args.fps, duration=durations.get(uid),
                                   instruction=instruction, max_num_frames=args.max_num_frames,
                                   video_dir=args.video_dir, prefix=prefix)
