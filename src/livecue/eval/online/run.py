"""Running the online-video benchmarks' items (:mod:`.items`) through the :class:`StreamEngine` in push mode, resumably.

Each item gets a fresh engine session fed its video at the model's fps (:func:`~livecue.inference.sources.open_source`,
as ``livecue watch`` reads a file):

* ``mc``: the frames up to ``ask_time``, the question with its options (:func:`mc_prompt`) asked at ``ask_time``;
  the first :class:`~livecue.inference.events.Answer` is the response (the stream stops right after ``ask_time``);
* ``forward`` and ``proactive``: the question is given at ``ask_time`` as an *instruction* (the model reads it and
  keeps watching, no forced answer) and every ``Reply`` / ``Answer`` from ``ask_time`` on is collected as
  ``(t, text)``: the model decides when to speak. The stream stops at ``end_time`` (or the video's end).

The response is scored by :func:`~.scoring.score_item`. One JSON line per item is appended to ``OUT/items.jsonl`` as
soon as it is done (id, benchmark, task, protocol, the answers, the score fields; or ``error`` with one line naming
the problem: a missing or unreadable video, an item its scorer rejects). A rerun with ``resume`` skips the items
already scored there (a killed run continues where it stopped; a truncated last line is dropped; items that errored
are tried again). The summary of all
scores (:func:`~.scoring.summarize`) goes to ``OUT/results.json`` and a table per sub-task to ``OUT/results.md``.

Not here yet: sharding across processes, timing plots.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from livecue.data.video import VideoError
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply
from livecue.inference.options import StreamOptions
from livecue.inference.sources import SourceError, open_source

from .items import OnlineItem, Response
from .scoring import ItemScore, JudgeLike, WindowScore, score_item, summarize

ITEMS_FILE = "items.jsonl"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
_EPS = 1e-9

__all__ = ["ITEMS_FILE", "RESULTS_JSON", "RESULTS_MD", "format_markdown", "mc_prompt", "read_done", "run_item",
           "run_items"]


def mc_prompt(item: OnlineItem) -> str:
    """The text asked for an ``mc`` item: the question, then ``A. ...`` per option and the instruction to answer with
    the letter, as the benchmarks prompt (an open question: the question alone)."""
    if not item.options:
        return item.question
    lines = [item.question, *(f"{letter}. {opt}" for letter, opt in zip(item.letters, item.options))]
    return "\n".join([*lines, "Answer with the option's letter."])


def run_item(engine: StreamEngine, item: OnlineItem, fps: float) -> Response:
    """Stream ``item``'s video through a fresh session of ``engine`` by its protocol (module docstring).

    Raises:
        SourceError: the video cannot be opened or read (one line naming it).
    """
    if not Path(item.video).exists():
        raise SourceError(f"video not found: {item.video}")
    mc = item.protocol == "mc"
    session = engine.session()
    session.add_query(mc_prompt(item) if mc else item.question, at=item.ask_time, answer=mc)
    stop = item.ask_time if mc else item.end_time
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


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """The records of ``items.jsonl`` by item id (a later line for an id replaces an earlier one). A truncated last
    line (a killed run) is dropped and cut from the file, so appending goes on cleanly.

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
        if rec is None:  # cut short by a kill: drop it
            path.write_text(raw[:len(raw) - len(tail)], encoding="utf-8")
        else:  # complete but without its newline: add one before appending
            path.write_text(raw + "\n", encoding="utf-8")
            done[rec["id"]] = rec
    return done


def _record(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None


def run_items(model: Any, tokenizer: Any, items: list[OnlineItem], *, out_dir: str | Path, fps: float | None = None,
              judge: JudgeLike | None = None, resume: bool = True,
              progress: Callable[[int, int], None] | None = None, max_items: int | None = None,
              options: StreamOptions | None = None) -> dict[str, Any]:
    """Run and score ``items`` (module docstring), writing ``items.jsonl``, ``results.json`` and ``results.md``.

    Args:
        model / tokenizer: a :class:`~livecue.model.live.LiveModel` and its tokenizer.
        items: the loaded items (:func:`~.formats.load_items`).
        out_dir: where the files go (created).
        fps: frames per second fed (default: the model's ``stream.fps``).
        judge: scores open answers (``judge(question, reference, answer) -> [0, 1]`` or a
            :class:`~.judge.Judge`); required when an ``mc`` item has no options.
        resume: skip the items already scored in ``out_dir/items.jsonl`` (False: start that file afresh).
        progress: called ``progress(done, total)`` after each item.
        max_items: run only the first N items (the summary covers the items scored so far).
        options: the sessions' stream options (threshold, max_reply_tokens, ...; default: the model's).

    Returns:
        ``{"summary", "items", "scored", "errors", "ran", "resumed", "files"}``: ``summary`` is
        :func:`~.scoring.summarize` of every score in the file, ``errors`` ``[{"id", "task", "error"}]``, ``ran``
        the items run now and ``resumed`` those taken from the file.

    Raises:
        ValueError: ``max_items`` < 1, bad ``fps``, open questions without a judge, a malformed ``items.jsonl``.
    """
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items!r}")
    fps = float(model.cfg.stream.fps if fps is None else fps)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    todo = list(items)[:max_items]
    open_items = [it.id for it in todo if it.protocol == "mc" and not it.options]
    if open_items and judge is None:
        raise ValueError(f"{len(open_items)} open question(s) (e.g. {open_items[0]!r}) need a judge to score them: "
                         "pass --judge")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ITEMS_FILE
    if not resume and path.exists():
        path.unlink()
    done = {k: v for k, v in read_done(path).items() if "score" in v}
    engine = StreamEngine(model, tokenizer, options)
    ran = resumed = 0
    with path.open("a", encoding="utf-8") as f:
        for n, item in enumerate(todo, 1):
            if item.id in done:
                resumed += 1
            else:
                rec = _run_one(engine, item, fps, judge)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                if "score" in rec:
                    done[item.id] = rec
                ran += 1
            if progress is not None:
                progress(n, len(todo))
    records = read_done(path)
    wanted = {it.id for it in todo}
    scores = [_score_from_json(r["score"]) for i, r in records.items() if i in wanted and "score" in r]
    errors = [{"id": i, "task": r.get("task"), "error": r["error"]} for i, r in records.items()
              if i in wanted and "error" in r]
    summary = summarize(scores)
    result = {"summary": summary, "items": len(todo), "scored": len(scores), "errors": errors, "ran": ran,
              "resumed": resumed, "files": {k: str(out / k) for k in (ITEMS_FILE, RESULTS_JSON, RESULTS_MD)}}
    (out / RESULTS_JSON).write_text(json.dumps({k: v for k, v in result.items() if k != "files"}, indent=1,
                                               ensure_ascii=False), encoding="utf-8")
    (out / RESULTS_MD).write_text(format_markdown(summary, errors), encoding="utf-8")
    return result


def _run_one(engine: StreamEngine, item: OnlineItem, fps: float, judge: JudgeLike | None) -> dict[str, Any]:
    """The ``items.jsonl`` record of one item: its answers and score, or the one-line error of its video."""
    base = {"id": item.id, "benchmark": item.benchmark, "task": item.task, "protocol": item.protocol}
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
