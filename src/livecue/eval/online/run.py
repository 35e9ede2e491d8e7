"""Running the online-video benchmarks' items (:mod:`.items`) through the :class:`StreamEngine` in push mode, resumably.

Each item gets a fresh engine session fed its video at the model's fps (:func:`~livecue.inference.sources.open_source`,
as ``livecue watch`` reads a file):

* ``mc``: the frames up to ``ask_time``, the question with its options (:func:`mc_prompt`) asked at ``ask_time``;
  the first :class:`~livecue.inference.events.Answer` is the response (the stream stops right after ``ask_time``);
* ``forward`` and ``proactive``: the question is given at ``ask_time`` as an *instruction* (the model reads it and
  keeps watching, no forced answer) and every ``Reply`` / ``Answer`` from ``ask_time`` on is collected as
  ``(t, text)``: the model decides when to speak. The stream stops at ``end_time`` (or the video's end).

An item's later user ``turns`` (ProactiveVideoQA's subtitles) are given the same way at their times, up to where the
stream stops.

The response is scored by :func:`~.scoring.score_item`. One JSON line per item is appended to ``OUT/items.jsonl`` as
soon as it is done (id, benchmark, task, protocol, ask time, the answers, the score fields; or ``error`` with one line
naming the problem: a missing or unreadable video, an item its scorer rejects). A rerun with ``resume`` skips the
items already scored there (a killed run continues where it stopped; a truncated last line is dropped; items that
errored are tried again). The summary of all scores (:func:`~.scoring.summarize`) goes to ``OUT/results.json``, a
table per sub-task to ``OUT/results.md``, and the timing plots (answer times against the ground-truth windows,
:mod:`.plots`) to ``OUT/timing/<benchmark>_<task>.png`` (with matplotlib, the ``[eval]`` extra).

Sharded (:class:`Shard`): launched as ``accelerate launch --multi_gpu --num_processes N -m livecue.cli eval --task
...`` on GPUs or ``torchrun --standalone --nproc_per_node N -m livecue.cli eval ...`` on CPUs, process ``r`` of ``n``
runs items ``r, r + n, ...`` and appends to its own ``OUT/items.rank<r>.jsonl``; a process skips every item scored in
any ``items*.jsonl`` there (so a run resumes under another process count); after all processes finish, the main
process merges the files into ``OUT/items.jsonl`` (in item order, a scored record preferred to an error, the
per-process files removed) and writes the summary and plots. The merged file is what one process would have written:
the same records in the same order (a test runs 2 processes against 1).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from livecue.data.video import VideoError
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply
from livecue.inference.options import StreamOptions
from livecue.inference.sources import SourceError, open_source

from .items import OnlineItem, Response
from .plots import plot_timing
from .scoring import ItemScore, JudgeLike, WindowScore, score_item, summarize

ITEMS_FILE = "items.jsonl"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
TIMING_DIR = "timing"
_EPS = 1e-9

__all__ = ["ITEMS_FILE", "RESULTS_JSON", "RESULTS_MD", "TIMING_DIR", "Shard", "format_markdown", "mc_prompt",
           "merge_records", "read_done", "run_item", "run_items"]


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's share of a sharded run (module docstring).

    Attributes:
        rank: this process's index, in ``[0, world)``; rank 0 is the main process (it merges and summarizes).
        world: the number of processes.
        barrier: waits until every process has reached it (accelerate's ``wait_for_everyone``); None: one process.
    """

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.world, int) and self.world >= 1):
            raise ValueError(f"shard world size must be an integer >= 1, got {self.world!r}")
        if not (isinstance(self.rank, int) and 0 <= self.rank < self.world):
            raise ValueError(f"shard rank must be in [0, {self.world}), got {self.rank!r}")

    @property
    def main(self) -> bool:
        """Whether this is the process that merges the shards and writes the summary."""
        return self.rank == 0

    @property
    def file(self) -> str:
        """The file this process appends its records to: ``items.jsonl`` alone, ``items.rank<r>.jsonl`` sharded."""
        return ITEMS_FILE if self.world == 1 else f"items.rank{self.rank}.jsonl"

    def wait(self) -> None:
        """Wait for every process (nothing to wait for alone)."""
        if self.barrier is not None:
            self.barrier()


def mc_prompt(item: OnlineItem) -> str:
    """The text asked for an ``mc`` item: the question, then ``A. ...`` per option and the instruction to answer with
    the letter, as the benchmarks prompt (an open question: the question alone)."""
    if not item.options:
        return item.question
    lines = [item.question, *(f"{letter}. {opt}" for letter, opt in zip(item.letters, item.options))]
    return "\n".join([*lines, "Answer with the option's letter."])


def run_item(engine: StreamEngine, item: OnlineItem, fps: float) -> Response:
    """Stream ``item``'s video through a fresh session of ``engine`` by its protocol (module docstring). The item's
    later user ``turns`` (ProactiveVideoQA's subtitles) that fall within the stream are given at their times as
    messages the model reads without replying (``add_query(..., answer=False)``), as upstream feeds them.

    Raises:
        SourceError: the video cannot be opened or read (one line naming it).
    """
    if not Path(item.video).exists():
        raise SourceError(f"video not found: {item.video}")
    mc = item.protocol == "mc"
    session = engine.session()
    session.add_query(mc_prompt(item) if mc else item.question, at=item.ask_time, answer=mc)
    stop = item.ask_time if mc else item.end_time
    for t, text in item.turns:
        if stop is None or t <= stop + _EPS:
            session.add_query(text, at=t, answer=False)
    answers: list[tuple[float, str]] = []

    def collect(events: Iterable[Any]) -> None:
        for e in events:
            if mc and isinstance(e, Answer) and not answers:
                answers.append((float(e.t), e.text))
            elif not mc and isinstance(e, (Reply, Answer)) and e.t >= item.ask_time - _EPS:
                answers.append((float(e.t), e.text))

    try:
        with open_source(item.video, fps) as source:
            for t, frame in source:
                if stop is not None and t > stop + _EPS:
                    break
                collect(session.push_frame(frame, t))
                if mc and answers:
                    break
    except VideoError as e:
        raise SourceError(f"{item.video}: {' '.join(str(e).split())}") from None
    collect(session.finish())
    return Response(item.id, tuple(answers))


def _score_to_json(score: ItemScore) -> dict[str, Any]:
    return dataclasses.asdict(score)


def _score_from_json(d: dict[str, Any]) -> ItemScore:
    d = dict(d)
    d["windows"] = tuple(WindowScore(**w) for w in d.get("windows", ()))
    return ItemScore(**d)


def read_done(path: Path, *, repair: bool = True) -> dict[str, dict[str, Any]]:
    """The records of ``items.jsonl`` by item id (a later line for an id replaces an earlier one). A truncated last
    line (a killed run) is dropped and, with ``repair`` (the file this process appends to), cut from the file, so
    appending goes on cleanly; without ``repair`` (another process's file, maybe being written) the file is only read.

    Raises:
        ValueError: a malformed line other than the last (naming the file and line).
    """
    if not path.is_file():
        return {}
    raw = path.read_text(encoding="utf-8")
    *lines, tail = raw.split("\n")  # tail: what follows the last newline ("" when the file ends with one)
    done: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(lines, 1):
        if line.strip():
            rec = _record(line)
            if rec is None:
                raise ValueError(f"{path}: line {n} is not an item record; remove it or the file to rerun")
            done[rec["id"]] = rec
    if tail.strip():
        rec = _record(tail)
        if rec is None:  # cut short by a kill (or being written): drop it
            if repair:
                path.write_text(raw[:len(raw) - len(tail)], encoding="utf-8")
        else:  # complete but without its newline: add one before appending
            if repair:
                path.write_text(raw + "\n", encoding="utf-8")
            done[rec["id"]] = rec
    return done


def _item_files(out: Path) -> list[Path]:
    """The record files of ``out``: ``items.jsonl`` first, then the per-process files by rank."""
    ranked = sorted(out.glob("items.rank*.jsonl"), key=lambda f: (len(f.name), f.name))
    return [f for f in (out / ITEMS_FILE, *ranked) if f.is_file()]


def _better(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether ``new`` replaces ``old`` for one item: a scored record over an error, else the later one."""
    return old is None or "score" in new or "score" not in old


def merge_records(out_dir: str | Path, order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Merge every record file of ``out_dir`` (``items.jsonl`` and the per-process ``items.rank<r>.jsonl``) into
    ``items.jsonl``: one record per item (a scored record preferred to an error; among equals the later), the ids of
    ``order`` first in that order, then the others as found; the per-process files are removed. Written atomically
    (a kill during the merge leaves the old files). Returns the records by id, in file order."""
    out = Path(out_dir)
    records: dict[str, dict[str, Any]] = {}
    files = _item_files(out)
    for f in files:
        for key, rec in read_done(f, repair=False).items():
            if _better(records.get(key), rec):
                records[key] = rec
    first = [k for k in order if k in records]
    chosen = set(first)
    merged = {k: records[k] for k in [*first, *(k for k in records if k not in chosen)]}
    tmp = out / (ITEMS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged.values()), encoding="utf-8")
    os.replace(tmp, out / ITEMS_FILE)
    for f in files:
        if f.name != ITEMS_FILE:
            f.unlink()
    return merged


def _record(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None


def run_items(model: Any, tokenizer: Any, items: list[OnlineItem], *, out_dir: str | Path, fps: float | None = None,
              judge: JudgeLike | None = None, resume: bool = True,
              progress: Callable[[int, int], None] | None = None, max_items: int | None = None,
              options: StreamOptions | None = None, shard: Shard | None = None) -> dict[str, Any]:
    """Run and score ``items`` (module docstring), writing ``items.jsonl``, ``results.json`` and ``results.md``.

    Args:
        model / tokenizer: a :class:`~livecue.model.live.LiveModel` and its tokenizer.
        items: the loaded items (:func:`~.formats.load_items`), the same list in every process of a sharded run.
        out_dir: where the files go (created).
        fps: frames per second fed (default: the model's ``stream.fps``).
        judge: scores open answers (``judge(question, reference, answer) -> [0, 1]`` or a
            :class:`~.judge.Judge`); required when an ``mc`` item has no options.
        resume: skip the items already scored in ``out_dir`` (False: start afresh; this process's file and, on the
            main process, ``items.jsonl`` are removed first).
        progress: called ``progress(done, total)`` after each of this process's items.
        max_items: run only the first N items (the summary covers the items scored so far).
        options: the sessions' stream options (threshold, max_reply_tokens, ...; default: the model's).
        shard: this process's share (:class:`Shard`; default: one process runs everything).

    Returns:
        ``{"summary", "items", "scored", "errors", "ran", "resumed", "files", "main"}`` and, on the main process,
        ``"plots"`` (the timing PNGs written; without matplotlib none, and ``"plots_skipped"`` says why): ``summary`` is
        :func:`~.scoring.summarize` of every score in the merged file, ``errors`` ``[{"id", "task", "error"}]``,
        ``ran`` the items run now and ``resumed`` those taken from earlier records (both this process's). On a
        process other than the main one ``summary`` is None and ``scored`` / ``errors`` cover its own items.

    Raises:
        ValueError: ``max_items`` < 1, bad ``fps``, open questions without a judge, a malformed ``items.jsonl``.
    """
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items!r}")
    fps = float(model.cfg.stream.fps if fps is None else fps)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    shard = shard or Shard()
    todo = list(items)[:max_items]
    mine = todo[shard.rank::shard.world]
    open_items = [it.id for it in todo if it.protocol == "mc" and not it.options]
    if open_items and judge is None:
        raise ValueError(f"{len(open_items)} open question(s) (e.g. {open_items[0]!r}) need a judge to score them: "
                         "pass --judge")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / shard.file
    if not resume:  # each process removes its own file; the main one also items.jsonl and files of other ranks
        stale = [path]
        if shard.main:
            stale += [f for f in _item_files(out) if f.name not in {f"items.rank{r}.jsonl" for r in range(shard.world)}]
        for f in stale:
            f.unlink(missing_ok=True)
        done: set[str] = set()
    else:
        # every record file counts; only this process's own is repaired (a killed run's last line cut before appending)
        done = {k for f in _item_files(out) for k, v in read_done(f, repair=f == path).items() if "score" in v}
    engine = StreamEngine(model, tokenizer, options)
    ran = resumed = 0
    own: dict[str, dict[str, Any]] = {}
    with path.open("a", encoding="utf-8") as f:
        for n, item in enumerate(mine, 1):
            if item.id in done:
                resumed += 1
            else:
                own[item.id] = rec = _run_one(engine, item, fps, judge)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                ran += 1
            if progress is not None:
                progress(n, len(mine))
    shard.wait()
    files = {k: str(out / k) for k in (ITEMS_FILE, RESULTS_JSON, RESULTS_MD)}
    if not shard.main:
        errors = [{"id": i, "task": r.get("task"), "error": r["error"]} for i, r in own.items() if "error" in r]
        return {"summary": None, "items": len(mine), "scored": len(own) - len(errors) + resumed, "errors": errors,
                "ran": ran, "resumed": resumed, "files": files, "main": False}
    records = merge_records(out, [it.id for it in todo])
    wanted = {it.id for it in todo}
    scores = [_score_from_json(r["score"]) for i, r in records.items() if i in wanted and "score" in r]
    errors = [{"id": i, "task": r.get("task"), "error": r["error"]} for i, r in records.items()
              if i in wanted and "error" in r]
    summary = summarize(scores)
    result = {"summary": summary, "items": len(todo), "scored": len(scores), "errors": errors, "ran": ran,
              "resumed": resumed, "files": files, "main": True}
    saved = {k: v for k, v in result.items() if k not in ("files", "main", "ran", "resumed")}
    (out / RESULTS_JSON).write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / RESULTS_MD).write_text(format_markdown(summary, errors), encoding="utf-8")
    try:  # matplotlib: the [eval] extra
        result["plots"] = [str(f) for f in plot_timing({i: records[i] for i in records if i in wanted},
                                                        out / TIMING_DIR)]
    except ImportError as e:
        result["plots"], result["plots_skipped"] = [], str(e)
    return result


def _run_one(engine: StreamEngine, item: OnlineItem, fps: float, judge: JudgeLike | None) -> dict[str, Any]:
    """The ``items.jsonl`` record of one item: its answers and score, or the one-line error of its video."""
    base = {"id": item.id, "benchmark": item.benchmark, "task": item.task, "protocol": item.protocol,
            "ask_time": item.ask_time}
    try:
        response = run_item(engine, item, fps)
    except SourceError as e:
        return {**base, "error": " ".join(str(e).split())}
    answers = [list(a) for a in response.answers]
    try:
        score = score_item(item, response, judge)
    except ValueError as e:  # an item its scorer cannot score (e.g. no ground-truth windows): reported, not fatal
        return {**base, "answers": answers, "error": "cannot score: " + " ".join(str(e).split())}
    return {**base, "answers": answers, "score": _score_to_json(score)}


def format_markdown(summary: dict[str, dict], errors: Sequence[dict[str, Any]] = ()) -> str:
    """Per benchmark: its overall score and a table per sub-task (scores ×100), then the groups; errors listed."""
    out: list[str] = []
    for bench, s in summary.items():
        out += [f"## {bench}", "", f"overall: {100 * s['overall']:.1f} ({s['rule']})", "",
                "| task | items | units | correct | score |", "|---|---:|---:|---:|---:|"]
        for task, v in s["tasks"].items():
            out.append(f"| {task} | {v['items']} | {v['units']} | {v['correct']} | {100 * v['score']:.1f} |")
        out += ["", "| group | items | score |", "|---|---:|---:|"]
        out += [f"| {g} | {v['items']} | {100 * v['score']:.1f} |" for g, v in s["groups"].items()]
        out.append("")
    if not summary:
        out += ["no item scored", ""]
    if errors:
        out += [f"## errors ({len(errors)})", "", *(f"- {e['id']}: {e['error']}" for e in errors), ""]
    return "\n".join(out)
