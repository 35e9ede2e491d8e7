"""Where does a model's teacher-forced narration first go wrong? (LM-Correctness counts the correct *prefix*.)

For every learned assistant turn of the world's test streams: is it predicted exactly (argmax at every lm
position)? If not, which kind of word is the first miss: a colour, a shape, an event verb, or another word (the
article of "A red square appears.", a count, a place)? For colour misses it also says whether the predicted colour
was on screen at the narrated frame (a binding error: the wrong object) or absent (a perception error).

    python benchmarks/first_errors.py MODEL DATA_DIR [--cache world_cache_h3] [--max-samples 40]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from livecue.data import world_render
from livecue.data.labels import IGNORE
from livecue.data.records import read_records
from livecue.data.world import WorldConfig, simulate_stream
from livecue.eval.common import to_features
from livecue.eval.narration import make_dataset
from livecue.model.load import load_model

COLOURS, SHAPES = set(world_render.COLOURS), set(world_render.SHAPES)
VERBS = {"appears", "disappears", "moves", "turns", "grows", "shr", "collide"}  # "shrinks" starts with "shr"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("data", type=Path)
    p.add_argument("--cache", default="world_cache_h3", help="feature cache directory inside DATA_DIR")
    p.add_argument("--max-samples", type=int, default=40)
    args = p.parse_args()
    model, tok = load_model(args.model)
    model.eval()
    path = args.data / "world" / "test.jsonl"
    records = read_records(path)[:args.max_samples]
    ds = make_dataset(model, tok, path, max_samples=args.max_samples, feature_cache=args.data / args.cache)
    m = ds.markers
    kinds, colour_misses, turns, perfect = collections.Counter(), collections.Counter(), 0, 0
    for i in range(len(ds)):
        s, meta = ds[i], records[i]["meta"]
        states = simulate_stream(WorldConfig.from_dict(meta["config"]), meta["seed"]).states
        frame_of = {e["text"]: e["frame"] for e in meta["events"]}
        with torch.inference_mode():
            pred = model(s.input_ids[None], frame_features=to_features(model, s.frames)).logits[0].argmax(-1)
        lm = ((s.labels != IGNORE) & (s.input_ids != m.v)).nonzero().flatten().tolist()
        turn: list[int] = []
        for pos in lm:
            turn.append(pos)
            if s.labels[pos].item() != m.eos:
                continue
            turns += 1
            wrong = [q for q in turn if pred[q].item() != s.labels[q].item()]
            text = tok.decode(s.labels[turn].tolist()).split("Assistant:")[-1]
            text = text.replace(tok.decode([m.eos]), "").strip()
            turn = []
            if not wrong:
                perfect += 1
                continue
            gold = tok.decode([s.labels[wrong[0]].item()]).strip().lower()
            guess = tok.decode([pred[wrong[0]].item()]).strip().lower()
            kind = ("colour" if gold in COLOURS else "shape" if gold in SHAPES else
                    "event verb" if gold in VERBS else "other word")
            kinds[kind] += 1
            if kind == "colour" and text in frame_of:
                shown = {o.name.split()[0] for o in states[frame_of[text]]}
                colour_misses["predicted colour on screen" if guess in shown else "predicted colour absent"] += 1
    print(f"{turns} turns, {perfect} exactly right ({perfect / turns:.3f})")
    for kind, n in kinds.most_common():
        print(f"  first miss: {kind}: {n} ({n / turns:.3f})")
    for kind, n in colour_misses.most_common():
        print(f"  narration colour misses, {kind}: {n}")


if __name__ == "__main__":
    main()
