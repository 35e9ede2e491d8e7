"""Reading an answer out of a model's free text: the option letter of a multiple-choice answer, a count, a yes/no,
and a token F1 for open text. Pure Python.

Upstream rules (what the benchmarks' own scripts do) and how these differ:

* OVO-Bench (``utils/OVOBenchScore.py``): correct iff the ground-truth letter is a *substring* of the response
  (``gt in response``), so ``"A or B"`` counts as correct for both A and B and ``"The answer is B"`` is never wrong
  for ``"A"``-free text. StreamingBench (``src/data/count.py``): the response's *first character* must equal the
  letter (``"(B)"`` and ``"The answer is B"`` are wrong; an empty response is skipped, not counted).
  :func:`extract_letter` agrees with both on a bare letter (``"B"``, ``"B."``, ``"B) red"``), and otherwise reads the
  letter robustly (below); an ambiguous or letter-less answer gives None and is scored wrong, never skipped.
* OVO-Bench REC (counting): the digits of the response joined (``re.findall(r"\\d+")``) must equal the count —
  :func:`extract_count` does exactly that (``"3 or 4"`` → ``"34"``, as upstream).
* OVO-Bench SSR/CRR (yes/no): upstream accepts a response equal to ``"Y"``/``"N"`` or containing ``"Yes"``/``"No"``
  (case-sensitive substring: ``"Nothing yet"`` reads as No, ``"yes"`` as neither). :func:`extract_yes_no` reads the
  first word case-insensitively (``yes``/``y``/``no``/``n``), else a unique whole word yes/no anywhere.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

from livecue.eval.textmetrics import normalize_text

_ANSWER_PHRASE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|would be|:)?\s*:?\s*\(?([A-Za-z])\b\)?", re.I)
_LEADING_LABEL = re.compile(r"^\s*\(?([A-Za-z])\s*[).:]")
_BARE = re.compile(r"^\s*\(?\s*([A-Za-z])\s*\)?\s*[.:!]?\s*$")
_TOKEN = re.compile(r"\b([A-Z])\b")
_CONJUNCTIONS = {"or", "and", "nor", "vs", "versus"}


def _is_article(text: str, m: re.Match[str]) -> bool:
    """An ``A``/``I`` token followed by a lower-case word (not a conjunction) is English, not an option letter."""
    if m.group(1) not in "AI":
        return False
    nxt = re.match(r"\s+([a-z]+)", text[m.end():])
    return nxt is not None and nxt.group(1) not in _CONJUNCTIONS


def extract_letter(text: str | None, letters: Sequence[str], options: Sequence[str] = ()) -> str | None:
    """The option letter a free-text answer chooses, or None (ambiguous, or no letter: scored wrong).

    In order, the first rule that applies decides:

    1. the whole answer is a letter: ``"B"``, ``"b"``, ``"(B)"``, ``"B."``;
    2. an answer phrase: ``"The answer is B"``, ``"Answer: (c)"``, ``"option D"`` (a lower-case letter only when
       followed by punctuation or the end, so ``"the answer is a red car"`` is not ``A``);
    3. a leading label: ``"B) red"``, ``"b. red"``, ``"(C): ..."``;
    4. the upper-case single-letter words among ``letters``: one distinct → it; several (``"A or B"``) → None
       (``A``/``I`` followed by a lower-case word are read as English: ``"A red car"``);
    5. the option texts: the answer equals one option's text, or contains exactly one option's text (an option whose
       text lies inside another found option's text is dropped: ``"dark red"`` picks "dark red" over "red").

    Args:
        text: the model's answer.
        letters: the valid letters, ``("A", "B", ...)`` (:attr:`OnlineItem.letters`).
        options: the option texts in letter order (rule 5; may be empty).
    """
    if not text or not text.strip():
        return None
    valid = {x.upper() for x in letters}

    def ok(letter: str) -> str | None:
        return letter.upper() if letter.upper() in valid else None

    if (m := _BARE.match(text)) is not None:
        return ok(m.group(1))
    for m in _ANSWER_PHRASE.finditer(text):
        letter, rest = m.group(1), text[m.end():]
        if letter.isupper() or not rest.strip() or rest[:1] in ".,;:!)":
            if (found := ok(letter)) is not None:
                return found
    if (m := _LEADING_LABEL.match(text)) is not None and (found := ok(m.group(1))) is not None:
        return found
    tokens = {m.group(1) for m in _TOKEN.finditer(text) if m.group(1) in valid and not _is_article(text, m)}
    if len(tokens) == 1:
        return tokens.pop()
    if len(tokens) > 1:
        return None
    return _letter_by_text(text, letters, options)


def _letter_by_text(text: str, letters: Sequence[str], options: Sequence[str]) -> str | None:
    answer = normalize_text(text)
    norm = [normalize_text(o) for o in options]
    for letter, opt in zip(letters, norm):
        if opt and answer == opt:
            return letter.upper()
    found = [(letter, opt) for letter, opt in zip(letters, norm)
             if opt and re.search(rf"(?<!\w){re.escape(opt)}(?!\w)", answer)]
    found = [(letter, opt) for letter, opt in found if not any(opt != o and opt in o for _, o in found)]
    return found[0][0].upper() if len(found) == 1 else None


def extract_count(text: str | None) -> str | None:
    """OVO-Bench REC's reading of a count: all digit runs of the answer joined (``"3 times"`` → ``"3"``; ``"3 or
    4"`` → ``"34"``, as upstream); None when there is no digit."""
    digits = re.findall(r"\d+", text or "")
    return "".join(digits) if digits else None


def extract_yes_no(text: str | None) -> str | None:
    """``"Yes"`` / ``"No"`` read from an answer: its first word (``yes``, ``y``, ``no``, ``n``; any case, trailing
    punctuation ignored), else the one of the whole words yes/no that occurs (both or neither → None)."""
    words = re.findall(r"[A-Za-z]+", text or "")
    if not words:
        return None
    first = words[0].lower()
    if first in ("yes", "y"):
        return "Yes"
    if first in ("no", "n"):
        return "No"
    seen = {w.lower() for w in words} & {"yes", "no"}
    return seen.pop().capitalize() if len(seen) == 1 else None


def token_f1(_question: str, reference: str, answer: str) -> float:
    """SQuAD-style token F1 of ``answer`` against ``reference`` (lower-cased word tokens, multiset overlap); both empty
    → 1.0, one empty → 0.0. Has the judge's signature ``(question, reference, answer) -> float`` (question unused), so
    it is the default content scorer of :func:`livecue.eval.online.scoring.score_proactive`."""
    ref = re.findall(r"\w+", reference.lower())
    ans = re.findall(r"\w+", answer.lower())
    if not ref or not ans:
        return float(not ref and not ans)
    common = sum((collections.Counter(ref) & collections.Counter(ans)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ans), common / len(ref)
    return 2 * p * r / (p + r)


__all__ = ["extract_count", "extract_letter", "extract_yes_no", "token_f1"]
