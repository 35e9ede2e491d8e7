"""Pure text and timing metrics: Levenshtein (rapidfuzz), COIN, Procedure, Ego4D LTA (SPEC §7), free-running timing.

COIN (SPEC §7): ``pred = lower(text).rstrip('.')``; correct if it equals the label or if the nearest category by
Levenshtein distance equals the label (ties: the first category in list order, as upstream). Labels and categories
are normalised the same way (stripped, lower-cased, trailing dots removed).

Procedure: the answer's non-blank lines, in order; each line's step is the text after its last ``". "``
(``"2. Cut the onion."`` → ``"cut the onion"``); line i is scored against gold step i; **a missing line counts as
wrong** (upstream's ``zip`` silently dropped them). Accuracy = correct steps / gold steps over the whole set.

Ego4D LTA: each line matching ``(?:\\d+\\.|[^\\s]+\\s\\d+\\.)\\s*(.*)`` gives an action ``lower(text).rstrip('.')``,
mapped to (verb, noun) by its exact ``"verb noun"`` pair or the nearest one by Levenshtein distance (ties: the
lexicographically smallest pair, as upstream); the first Z are kept and a short list is padded with its last action
(an empty one with the taxonomy's most common pair, as upstream). For Z = 1..Z_max::

    ED@Z = mean over samples of  min over the K beams of  edit_distance(pred[:Z], gold[:Z]) / Z
    AUED = trapezoid(ED@1, ..., ED@Z_max; unit spacing) / (Z_max − 1)

for verbs, nouns and actions (the (verb, noun) pair as one symbol). Lower is better.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

LTA_LINE = re.compile(r"(?:\d+\.|[^\s]+\s\d+\.)\s*(.*)")


# ---- Levenshtein ---------------------------------------------------------------------------------------------------
def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Edit distance (insert / delete / substitute, each 1) between two strings or sequences (rapidfuzz).

    Sequences of other symbols (ints, (verb, noun) pairs) are first numbered by equality, so the distance is exact
    whatever their hashes.
    """
    if isinstance(a, str) and isinstance(b, str):
        return Levenshtein.distance(a, b)
    codes: dict[Hashable, int] = {}
    return Levenshtein.distance([codes.setdefault(x, len(codes)) for x in a],
                                [codes.setdefault(x, len(codes)) for x in b])


class NearestMatcher:
    """Levenshtein distances from one query to many candidate strings (rapidfuzz's ``cdist``), and the nearest one.

    Distances are cached per query (LTA maps the same unknown action many times).
    """

    def __init__(self, candidates: Sequence[str]) -> None:
        if not candidates:
            raise ValueError("no candidates to match against")
        self.candidates = list(candidates)
        self._cache: dict[str, np.ndarray] = {}

    def distances(self, query: str) -> np.ndarray:
        """Shape: -> (N,) distances to every candidate."""
        hit = self._cache.get(query)
        if hit is not None:
            return hit
        out = process.cdist([query], self.candidates, scorer=Levenshtein.distance, processor=None,
                            dtype=np.int64)[0]
        if len(self._cache) < 100_000:
            self._cache[query] = out
        return out

    def nearest(self, query: str, ties: str = "first") -> str:
        """The nearest candidate; ``ties="first"`` keeps list order, ``"smallest"`` the lexicographically smallest."""
        d = self.distances(query)
        best = np.flatnonzero(d == d.min())
        if ties == "first":
            return self.candidates[int(best[0])]
        return min(self.candidates[int(k)] for k in best)


# ---- COIN ------------------------------------------------------------------------------------------------------------
def normalize_label(text: str) -> str:
    """SPEC §7: ``lower(text).rstrip('.')`` (after stripping surrounding whitespace)."""
    return text.strip().lower().rstrip(".").strip()


class Categories:
    """A COIN category list (normalised), with nearest-category lookup."""

    def __init__(self, categories: Sequence[str]) -> None:
        names = list(dict.fromkeys(normalize_label(c) for c in categories if normalize_label(c)))
        if not names:
            raise ValueError("the category list is empty")
        self.names = names
        self.matcher = NearestMatcher(names)

    def nearest(self, text: str) -> str:
        return self.matcher.nearest(normalize_label(text), ties="first")

    def __len__(self) -> int:
        return len(self.names)


def coin_correct(pred_text: str, label: str, categories: Categories) -> bool:
    """Correct iff the normalised prediction equals the label or its nearest category equals the label."""
    pred, gold = normalize_label(pred_text), normalize_label(label)
    return pred == gold or categories.nearest(pred) == gold


def procedure_steps(text: str) -> list[str]:
    """The steps of a Procedure answer: per non-blank line, the normalised text after its last ``". "``."""
    return [normalize_label(line.strip().split(". ")[-1]) for line in text.split("\n") if line.strip()]


def procedure_correct(pred_text: str, gold_steps: Sequence[str], categories: Categories) -> list[bool]:
    """Per gold step: the predicted line at that index is right (a missing line is wrong)."""
    pred = procedure_steps(pred_text)
    return [i < len(pred) and coin_correct(pred[i], gold, categories) for i, gold in enumerate(gold_steps)]


# ---- Ego4D LTA -------------------------------------------------------------------------------------------------------
class Taxonomy:
    """Verb and noun lists; maps an action text to (verb index, noun index) as upstream does."""

    def __init__(self, verbs: Sequence[str], nouns: Sequence[str]) -> None:
        if not verbs or not nouns:
            raise ValueError(f"the LTA taxonomy needs verbs and nouns, got {len(verbs)} verbs and {len(nouns)} nouns")
        self.verbs, self.nouns = list(verbs), list(nouns)
        self.actions: dict[str, tuple[int, int]] = {}
        counts: collections.Counter[str] = collections.Counter()
        for i, verb in enumerate(self.verbs):
            for j, noun in enumerate(self.nouns):
                key = f"{verb} {noun}"
                self.actions[key] = (i, j)  # a repeated pair keeps its last indices (upstream's dict)
                counts[key] += 1
        best = max(counts.values())
        self.most_common = next(k for k, c in counts.items() if c == best)
        self._matcher: NearestMatcher | None = None

    def to_ids(self, action: str) -> tuple[int, int]:
        """Exact ``"verb noun"`` pair, else the nearest by Levenshtein (ties: lexicographically smallest)."""
        hit = self.actions.get(action)
        if hit is not None:
            return hit
        if self._matcher is None:
            self._matcher = NearestMatcher(list(self.actions))
        return self.actions[self._matcher.nearest(action, ties="smallest")]

    def parse(self, text: str, z: int) -> list[tuple[int, int]]:
        """Numbered lines -> exactly ``z`` (verb, noun) pairs (truncated or padded, see the module docstring)."""
        ids = [self.to_ids(a) for a in parse_actions(text)][:z]
        if len(ids) < z:
            ids += [ids[-1] if ids else self.to_ids(self.most_common)] * (z - len(ids))
        return ids


def parse_actions(text: str) -> list[str]:
    """The action texts of numbered lines (``"3. Take knife."`` -> ``"take knife"``)."""
    out = []
    for line in text.strip(" \n").split("\n"):
        match = LTA_LINE.search(line)
        if match:
            out.append(match.group(1).lower().rstrip("."))
    return out


def ed_at_z(preds: Sequence[Sequence[Sequence[Hashable]]], golds: Sequence[Sequence[Hashable]], z: int) -> float:
    """Mean over samples of min over beams of ``edit_distance(pred[:z], gold[:z]) / z``.

    Args:
        preds: per sample, K beams, each a sequence of symbols (ints, or (verb, noun) pairs).
        golds: per sample, the gold sequence (at least ``z`` symbols).
        z: the horizon Z.
    """
    if z < 1:
        raise ValueError(f"Z must be >= 1, got {z}")
    if len(preds) != len(golds) or not preds:
        raise ValueError(f"need as many predictions as golds (> 0), got {len(preds)} and {len(golds)}")
    dists = []
    for beams, gold in zip(preds, golds):
        if len(gold) < z or not beams:
            raise ValueError(f"a sample has {len(gold)} gold actions and {len(beams)} beams; Z = {z} needs "
                             f"{z} gold actions and at least one beam")
        dists.append(min(levenshtein(list(b[:z]), list(gold[:z])) / z for b in beams))
    return sum(dists) / len(dists)


def aued(preds: Sequence[Sequence[Sequence[Hashable]]], golds: Sequence[Sequence[Hashable]], z_max: int = 20
         ) -> float:
    """Area under ED@Z for Z = 1..z_max (trapezoid, unit spacing) / (z_max − 1)."""
    if z_max < 2:
        raise ValueError(f"AUED needs z_max >= 2, got {z_max}")
    eds = [ed_at_z(preds, golds, z) for z in range(1, z_max + 1)]
    return sum((eds[k] + eds[k + 1]) / 2 for k in range(len(eds) - 1)) / (z_max - 1)


def lta_scores(preds: Sequence[Sequence[Sequence[tuple[int, int]]]], golds: Sequence[Sequence[tuple[int, int]]],
               z_max: int = 20) -> dict[str, float]:
    """ED@z_max and AUED for verbs, nouns and actions from (verb, noun) pairs."""
    out = {}
    for name, pick in (("verb", lambda p: p[0]), ("noun", lambda p: p[1]), ("action", lambda p: tuple(p))):
        ps = [[[pick(a) for a in beam] for beam in beams] for beams in preds]
        gs = [[pick(a) for a in gold] for gold in golds]
        out[f"{name}_ed@{z_max}"] = ed_at_z(ps, gs, z_max)
        if z_max >= 2:
            out[f"{name}_aued"] = aued(ps, gs, z_max)
    return out


# ---- free-running timing -------------------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """For exact match: lower case, whitespace collapsed, surrounding punctuation and spaces removed."""
    return " ".join(text.lower().split()).strip(" .,!?;:\"'")


def match_times(pred: Sequence[float], ref: Sequence[float], tolerance: float) -> list[tuple[int, int]]:
    """One-to-one matching of predicted to reference times within ``tolerance`` (inclusive).

    Greedy by closeness: candidate pairs are taken in order of ``(|Δt|, reference time, predicted time)``, each
    time used at most once. Returns ``(pred index, ref index)`` pairs sorted by reference index.
    """
    eps = 1e-9
    pairs = sorted((abs(p - r), r, p, i, j) for i, p in enumerate(pred) for j, r in enumerate(ref)
                   if abs(p - r) <= tolerance + eps)
    used_p, used_r, out = set(), set(), []
    for _, _, _, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            out.append((i, j))
    return sorted(out, key=lambda ij: ij[1])


@dataclass
class PRF:
    precision: float
    recall: float
    f1: float


def prf(num_pred: int, num_ref: int, num_matched: int) -> PRF:
    """Precision / recall / F1; an empty side counts as perfect (no false alarms / nothing to find)."""
    p = num_matched / num_pred if num_pred else 1.0
    r = num_matched / num_ref if num_ref else 1.0
    return PRF(p, r, 2 * p * r / (p + r) if p + r else 0.0)


def nearest_time_diffs(pred: Sequence[int], ref: Sequence[int], num_frames: int) -> list[int]:
    """Per reference reply (frame indices, sorted): its timing error in frames, capped.

    Every predicted reply is assigned to its nearest reference (ties: the earlier one); a reference scores the
    smallest |Δ| among its replies, capped at ``cap = max(1, min(gap_next, gap_prev − 1))`` — SPEC §7's look-ahead
    window ``m = min(frames of next turn, N_f − 1)`` with the turn's frames ``gap_prev`` (frames since the previous
    reference, or ``ref + 1`` for the first) and ``gap_next`` (frames to the next reference, or to the stream's end
    for the last), floored at one frame. A reference with no reply (or only farther ones) scores the cap: a miss is
    as bad as the latest reply the window admits, and never free.
    """
    ref = sorted(ref)
    best: list[int | None] = [None] * len(ref)
    for p in pred:
        if not ref:
            break
        k = min(range(len(ref)), key=lambda j: (abs(p - ref[j]), j))
        d = abs(p - ref[k])
        best[k] = d if best[k] is None else min(best[k], d)
    out = []
    for k, r in enumerate(ref):
        gap_prev = r - ref[k - 1] if k else r + 1
        gap_next = ref[k + 1] - r if k + 1 < len(ref) else num_frames - 1 - r
        cap = max(1, min(gap_next, gap_prev - 1))
        out.append(cap if best[k] is None else min(best[k], cap))
    return out
