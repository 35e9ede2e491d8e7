"""What a judge (:mod:`.judge`) is asked and how its reply is read: the :class:`Rubric` s (:data:`RUBRICS`).

* ``match`` (:data:`MATCH`): does an open answer mean the same as the reference; the judge answers ``Score: N``,
  N from 0 to 5, read as N / 5 (:func:`parse_score`);
* ``proactive`` (:data:`PROACTIVE`): ProactiveVideoQA's judge (its ``pauc/judge_llm_scores_openai.py``): does the
  predicted answer cover the ground truth's key points, 3 mostly / 2 partially / 1 not, the score only; read as
  (N − 1) / 2 (:func:`parse_proactive_score`).

The parsing rules and what an unparsable reply scores are in :mod:`.judge`'s docstring. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MATCH", "MAX_SCORE", "PROACTIVE", "PROACTIVE_VERSION", "PROMPT_VERSION", "RUBRICS", "Rubric",
           "judge_messages", "parse_proactive_score", "parse_score", "rubric_of"]

PROMPT_VERSION = "judge-v1"  # change it whenever the prompt or the parsing changes: cached verdicts are keyed by it
SYSTEM_PROMPT = (
    "You grade answers to questions about a video. You see the question, a reference answer and a candidate answer, "
    "not the video. Judge only whether the candidate answer means the same as the reference answer."
)
USER_PROMPT = (
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {answer}\n\n"
    "Rate how well the candidate answer matches the reference answer in meaning, from 0 (wrong, unrelated or no "
    "answer) to 5 (the same meaning; the wording may differ). Reply with exactly one line: Score: N, where N is an "
    "integer from 0 to 5."
)
MAX_SCORE = 5
PROACTIVE_VERSION = "proactive-v1"  # likewise, for the ProactiveVideoQA rubric
PROACTIVE_SYSTEM = (
    "You evaluate a video question answering system. Rate whether the predicted answer covers the key points of the "
    "ground truth answer, on this scale:\n"
    "- 3: Mostly covered: the predicted answer has all the key information of the ground truth answer, possibly "
    "with small inaccuracies or in other words.\n"
    "- 2: Partially covered: the predicted answer has some correct information, but also significant inaccuracies "
    "or missing key points.\n"
    "- 1: Incorrect: the predicted answer may be related to the ground truth answer, but most of the information is "
    "missing, or it is irrelevant to the question or of very poor quality.\n\n"
    "Output only the score, without any explanation."
)
PROACTIVE_USER = "Question: {question}\nGround Truth Answer: {reference}\nPredicted Answer: {answer}"


@dataclass(frozen=True)
class Rubric:
    """What a judge is asked and how its reply is read.

    Attributes:
        version: names the prompt and the parsing in cache keys (change it whenever either changes).
        system: the system message.
        user: the user message, a template of ``{question}``, ``{reference}`` and ``{answer}``.
        parse: the reply → a score in [0, 1], or None when it gives none.
        unparsable: the score of an unparsable reply; None: no score.
    """

    version: str
    system: str
    user: str
    parse: Callable[[str], float | None]
    unparsable: float | None = 0.0

    def messages(self, question: str, reference: str, answer: str) -> list[dict[str, str]]:
        """The chat messages asked (the three texts stripped)."""
        user = self.user.format(question=question.strip(), reference=reference.strip(), answer=answer.strip())
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


# ---- the prompt and the reply ---------------------------------------------------------------------------------------
def judge_messages(question: str, reference: str, answer: str) -> list[dict[str, str]]:
    """The chat messages of the ``match`` rubric (version :data:`PROMPT_VERSION`)."""
    return MATCH.messages(question, reference, answer)


_SCORE = re.compile(r"score[\s:=*]*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def parse_score(reply: str) -> float | None:
    """The score in [0, 1] a judge's reply gives, or None when it gives none (see the module's scoring rule)."""
    match = _SCORE.search(reply) or _NUMBER.search(reply)
    if match:
        value = float(match.group(1) if match.re is _SCORE else match.group(0))
        return min(max(value, 0.0), MAX_SCORE) / MAX_SCORE
    word = _YES_NO.match(reply)
    if word:
        return 1.0 if word.group(1).lower() == "yes" else 0.0
    return None


def parse_proactive_score(reply: str) -> float | None:
    """The ``proactive`` rubric's reading: N from 1 to 3 (the number after "score", else the first number, clamped)
    as (N − 1) / 2, or None when the reply holds no number."""
    match = _SCORE.search(reply) or _NUMBER.search(reply)
    if not match:
        return None
    value = float(match.group(1) if match.re is _SCORE else match.group(0))
    return (min(max(value, 1.0), 3.0) - 1.0) / 2.0


MATCH = Rubric(PROMPT_VERSION, SYSTEM_PROMPT, USER_PROMPT, parse_score, unparsable=0.0)
PROACTIVE = Rubric(PROACTIVE_VERSION, PROACTIVE_SYSTEM, PROACTIVE_USER, parse_proactive_score, unparsable=None)
RUBRICS = {"match": MATCH, "proactive": PROACTIVE}


def rubric_of(rubric: str | Rubric) -> Rubric:
    """A :class:`Rubric` by name (:data:`RUBRICS`), or itself. Raises ``ValueError`` for an unknown name."""
    if isinstance(rubric, Rubric):
        return rubric
    if rubric not in RUBRICS:
        raise ValueError(f"judge rubric must be one of {', '.join(RUBRICS)}, got {rubric!r}")
    return RUBRICS[rubric]
