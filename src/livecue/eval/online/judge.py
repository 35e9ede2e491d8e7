"""A pluggable judge for open answers: how well a model's answer matches the reference, as a score in [0, 1].

Every judge asks an instruction-following LM a fixed prompt, a :class:`~.rubrics.Rubric` (:mod:`.rubrics`, re-exported
here), and reads its reply by that rubric:

* ``match`` (:data:`MATCH`, the default; :func:`judge_messages`, :func:`parse_score`): does an open answer mean the
  same as the reference (OVO-Bench / StreamingBench open questions, content checks);
* ``proactive`` (:data:`PROACTIVE`, :func:`parse_proactive_score`): ProactiveVideoQA's judge (upstream
  ``pauc/judge_llm_scores_openai.py``, ``create_openai_batch_input`` / ``process_openai_batch_output``): the
  question, the ground-truth answer and the predicted answer; does the prediction cover the ground truth's key
  points: 3 mostly, 2 partially, 1 not (incorrect, missing most of it, irrelevant or very poor); the score only.
  Upstream's PAUC uses N − 1 ∈ {0, 1, 2} over a maximum of 2; here (N − 1) / 2 ∈ {0, 0.5, 1}, the same ratio.

The judges:

* :class:`OpenAIJudge`: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...), over
  the standard library's HTTP client. The base URL comes from the argument, else ``$LIVECUE_JUDGE_BASE_URL``, else
  ``$OPENAI_BASE_URL``, else OpenAI's. The key comes ONLY from the environment (``$OPENAI_API_KEY`` by default;
  none is sent when it is unset, for local servers); it never appears in logs, errors or caches.
* :class:`LocalJudge`: a local Hugging Face causal LM with a chat template (a directory, a hub id, or the offline
  alias ``smollm2-135m-instruct``), greedy decoding.
* :class:`CachedJudge`: wraps any judge with a JSONL cache, so that a rerun (or a resumed run) asks nothing.
* :func:`judge_from_spec`: ``openai:MODEL[@BASE_URL]``, ``local:MODEL_OR_DIR`` or ``none`` (the ``--judge`` option).

Scoring rule of ``match`` (:func:`parse_score`): the judge answers ``Score: N`` with N from 0 to 5; the score is
N / 5. A reply in another shape is read leniently: the number after "score", else the first number anywhere (clamped
to [0, 5]), else a leading-word "yes" (1) / "no" (0). Of ``proactive`` (:func:`parse_proactive_score`): the number
after "score", else the first number, clamped to [1, 3] (upstream reads the reply's first character as a digit,
unclamped). A reply with none of these is **unparsable**: it is logged as a warning, counted
(:attr:`ChatJudge.unparsable`) and recorded in the cache with ``"parsed": false`` (delete those lines to ask again);
under ``match`` it scores 0, under ``proactive`` it gives no score (None: PAUC drops that reply, as upstream records
no score for a judge output it cannot read). An empty answer scores 0 without asking the judge.

A judge's :meth:`~ChatJudge.judge` asks by ``match``; ``grade(question, reference, answer, rubric)`` by any rubric
(:class:`ChatJudge`, :class:`CachedJudge`; :mod:`.scoring` uses it for PAUC when the judge has it).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ...pretrained import first_line, hub_error, resolve
from .rubrics import (  # noqa: F401 - re-exported: the rubrics are part of the judge's interface
    MATCH,
    MAX_SCORE,
    PROACTIVE,
    PROACTIVE_VERSION,
    PROMPT_VERSION,
    RUBRICS,
    Rubric,
    judge_messages,
    parse_proactive_score,
    parse_score,
    rubric_of,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BASE_URL_ENVS = ("LIVECUE_JUDGE_BASE_URL", "OPENAI_BASE_URL")
SPEC_FORMS = "openai:MODEL[@BASE_URL], local:MODEL_OR_DIR or none"


class JudgeError(RuntimeError):
    """The judge could not be asked (endpoint unreachable, HTTP error, malformed response): one line, no key."""


@runtime_checkable
class Judge(Protocol):
    """Scores an answer against a reference. ``name`` identifies the judge (kind, model, endpoint; never a key):
    cached verdicts are keyed by it."""

    name: str

    def judge(self, question: str, reference: str, answer: str) -> float:
        """A score in [0, 1]: 1 when ``answer`` means the same as ``reference`` for ``question``."""
        ...


@dataclass(frozen=True)
class Verdict:
    """A judge's reply and what it was read as: ``score`` in [0, 1], or None (an unparsable reply under a rubric
    that gives no score for it); ``parsed`` False when the reply was unparsable."""

    score: float | None
    reply: str
    parsed: bool = True


class ChatJudge:
    """What every LM judge shares: the prompt, the parsing, the unparsable count. A subclass sets ``name`` and
    implements :meth:`complete` (messages in, reply text out)."""

    name = "chat"

    def __init__(self) -> None:
        self.unparsable = 0  # replies that gave no score (each scored 0)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The LM's reply to ``messages``."""
        raise NotImplementedError

    def verdict(self, question: str, reference: str, answer: str, rubric: str | Rubric = "match") -> Verdict:
        """Ask the LM by ``rubric`` (unless ``answer`` is empty) and read its reply."""
        if not answer.strip():
            return Verdict(0.0, "")
        rub = rubric_of(rubric)
        reply = self.complete(rub.messages(question, reference, answer))
        score = rub.parse(reply)
        if score is None:
            self.unparsable += 1
            log.warning("judge %s: unparsable reply %r %s", self.name, reply[:80],
                        "gives no score" if rub.unparsable is None else f"scored {rub.unparsable:g}")
            return Verdict(rub.unparsable, reply, parsed=False)
        return Verdict(score, reply)

    def grade(self, question: str, reference: str, answer: str, rubric: str | Rubric = "match") -> float | None:
        """The score by ``rubric`` in [0, 1], or None (an unparsable reply under a rubric that gives it none)."""
        return self.verdict(question, reference, answer, rubric).score

    def judge(self, question: str, reference: str, answer: str) -> float:
        """A score in [0, 1] by ``match`` (see :class:`Judge`)."""
        return self.grade(question, reference, answer) or 0.0


# ---- an OpenAI-compatible endpoint ----------------------------------------------------------------------------------
def _redacted(url: str) -> str:
    """``url`` without user:password (it names the endpoint in errors and cache keys)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class OpenAIJudge(ChatJudge):
    """A judge behind an OpenAI-compatible ``POST {base_url}/chat/completions``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``; default ``$LIVECUE_JUDGE_BASE_URL``, ``$OPENAI_BASE_URL``, then
            OpenAI's.
        model: the model name the endpoint serves.
        api_key_env: the environment variable holding the key (read at each request; unset: no key is sent).
        timeout: seconds for one request (connect and read).
        max_retries: extra attempts after a network error, a timeout, HTTP 429 or 5xx (other errors fail at once).
        backoff: seconds before the first retry, doubled after each.
        max_tokens: the reply cap (None: not sent); temperature: None: not sent (for models that reject it).
    """

    def __init__(self, base_url: str | None = None, model: str = "gpt-4o-mini", api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 30.0, max_retries: int = 3, backoff: float = 1.0, max_tokens: int | None = 16,
                 temperature: float | None = 0.0) -> None:
        super().__init__()
        base = base_url or next((os.environ[e] for e in BASE_URL_ENVS if os.environ.get(e)), DEFAULT_BASE_URL)
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"judge base URL must start with http:// or https://, got {_redacted(base)!r}")
        if not model:
            raise ValueError("judge model name is empty")
        if not timeout > 0 or max_retries < 0 or backoff < 0:
            raise ValueError(f"judge timeout must be > 0 and max_retries, backoff >= 0, got timeout={timeout}, "
                             f"max_retries={max_retries}, backoff={backoff}")
        self.url = base.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.timeout, self.max_retries = model, api_key_env, timeout, max_retries
        self.backoff, self.max_tokens, self.temperature = backoff, max_tokens, temperature
        self.endpoint = _redacted(self.url)
        self.name = f"openai:{model}@{_redacted(base.rstrip('/'))}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        """POST the messages, retrying transient failures; the reply's text ("" when the message has none)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        key = os.environ.get(self.api_key_env) or ""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                break
            except urllib.error.HTTPError as e:
                reason = f"HTTP {e.code}: {self._body_error(e, key)}"
                if e.code in (401, 403):
                    reason += f" (is ${self.api_key_env} set to a valid key?)"
                if e.code != 429 and e.code < 500:
                    raise JudgeError(f"judge endpoint {self.endpoint} failed: {reason}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                cause = getattr(e, "reason", None) or e
                reason = (f"no reply within {self.timeout:g} s" if isinstance(cause, TimeoutError)
                          else first_line(cause if isinstance(cause, BaseException) else ValueError(cause)))
                reason = reason.replace(key, "***") if key else reason
            if attempt + 1 < attempts:
                log.info("judge endpoint %s: %s; retry %d/%d", self.endpoint, reason, attempt + 1, self.max_retries)
                time.sleep(self.backoff * 2**attempt)
        else:
            raise JudgeError(f"judge endpoint {self.endpoint} failed after {attempts} attempt(s): {reason}")
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge endpoint {self.endpoint} sent a malformed chat-completions response: "
                             f"{payload[:100]!r}") from None
        return content if isinstance(content, str) else ""

    @staticmethod
    def _body_error(e: urllib.error.HTTPError, key: str) -> str:
        """The error message of an HTTP error's body (first line, short, the key masked), else its reason."""
        try:
            text = e.read().decode(errors="replace")
            parsed = json.loads(text)
            message = parsed.get("error", {}).get("message") if isinstance(parsed, dict) else None
            text = message if isinstance(message, str) else text
        except (ValueError, OSError, AttributeError):
            pass
        line = first_line(ValueError(text)) if text.strip() else str(e.reason)
        return (line.replace(key, "***") if key else line)[:200]


# ---- a local Hugging Face LM ----------------------------------------------------------------------------------------
class LocalJudge(ChatJudge):
    """A judge run locally: an instruct causal LM (its tokenizer's chat template renders the prompt), greedy.

    Args:
        model_id_or_dir: a directory, a hub id, or a livecue offline alias (``smollm2-135m-instruct``).
        device: torch device (default: the accelerator torch reports, else CPU).
        max_new_tokens: the reply cap.

    The model loads at the first question (or :meth:`load`): a run that never asks one never pays for it.
    """

    def __init__(self, model_id_or_dir: str, device: str | None = None, max_new_tokens: int = 8) -> None:
        super().__init__()
        if not model_id_or_dir:
            raise ValueError("local judge model is empty: give a directory or a hub id")
        path = Path(model_id_or_dir)
        self.source = str(path.resolve()) if path.is_dir() else model_id_or_dir
        self.device, self.max_new_tokens = device, max_new_tokens
        self.name = f"local:{self.source}"
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        """Load the tokenizer and the model (one-line errors)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            path = resolve(self.source)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        except ImportError:
            raise
        except Exception as e:  # noqa: BLE001 - one line for a missing directory, an unknown or offline hub id
            raise hub_error("judge model", self.source, e) from None
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"local judge {self.source!r}: its tokenizer has no chat template (use an instruct "
                             "model)")
        if self.device is None:
            accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
            self.device = str(accelerator) if accelerator is not None else "cpu"
        self.tokenizer, self.model = tokenizer, model.eval().to(self.device)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """Greedy reply of the local LM."""
        import torch

        if self.model is None:
            self.load()
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=pad)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


# ---- the cache ------------------------------------------------------------------------------------------------------
def cache_key(judge_name: str, question: str, reference: str, answer: str, version: str = PROMPT_VERSION) -> str:
    """The cache key of one verdict: a SHA-256 of the judge, the rubric's version and the three texts."""
    blob = json.dumps([judge_name, version, question, reference, answer], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CachedJudge:
    """A judge whose verdicts are kept in a JSONL file: the same (judge, rubric version, question, reference, answer)
    is asked once, across runs, resumed runs and the processes of a sharded run.

    Each verdict is one line ``{"key", "judge", "prompt", "score", "parsed", "reply"}`` appended in one write, so a
    killed run leaves at most one truncated last line: it is skipped (and terminated before the next append). Lines
    other processes append are read before each miss. Nothing secret is written (the key never reaches a judge's
    ``name``).

    Attributes:
        hits, misses: cache hits and questions asked by this instance.
    """

    def __init__(self, judge: Judge, path: str | Path) -> None:
        self.inner, self.path = judge, Path(path)
        self.name = judge.name
        self.hits = self.misses = 0
        self.entries: dict[str, float | None] = {}
        self._offset = 0
        self._refresh()

    def _refresh(self) -> None:
        """Read the complete lines appended since the last read (a partial last line is left for later)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
                score = entry["score"]
                self.entries[entry["key"]] = None if score is None else float(score)
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    log.warning("judge cache %s: skipped a malformed line (%d bytes)", self.path, len(line))
        self._offset += end

    def _append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self.path.open("ab") as f:
            if f.tell() > 0:  # a killed writer's partial last line gets its own line, then is skipped on reading
                with self.path.open("rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        line = "\n" + line
            f.write(line.encode())

    def grade(self, question: str, reference: str, answer: str, rubric: str | Rubric = "match") -> float | None:
        """The cached score by ``rubric``, else the inner judge's (then cached). An inner judge without rubrics
        (only ``judge``) is asked its own way."""
        rub = rubric_of(rubric)
        key = cache_key(self.name, question, reference, answer, rub.version)
        if key not in self.entries:
            self._refresh()
        if key in self.entries:
            self.hits += 1
            return self.entries[key]
        self.misses += 1
        ask = getattr(self.inner, "verdict", None)
        verdict = ask(question, reference, answer, rub) if ask else Verdict(
            self.inner.judge(question, reference, answer), "")
        self._append({"key": key, "judge": self.name, "prompt": rub.version, "score": verdict.score,
                      "parsed": verdict.parsed, "reply": verdict.reply[:200]})
        self.entries[key] = verdict.score
        return verdict.score

    def judge(self, question: str, reference: str, answer: str) -> float:
        """The cached score by ``match``, else the inner judge's (then cached)."""
        return self.grade(question, reference, answer) or 0.0


# ---- the command line -----------------------------------------------------------------------------------------------
def judge_from_spec(spec: str, cache: str | Path | None = None, device: str | None = None) -> Judge | None:
    """The judge a ``--judge`` value names: ``openai:MODEL[@BASE_URL]``, ``local:MODEL_OR_DIR`` or ``none`` (None).

    Args:
        spec: the value.
        cache: a JSONL file to cache verdicts in (the judge is wrapped in a :class:`CachedJudge`).
        device: the local judge's torch device.

    Raises:
        ValueError: one line, for a malformed value.
    """
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "none" and not sep:
        return None
    if not sep or kind not in ("openai", "local"):
        raise ValueError(f"--judge must be {SPEC_FORMS}, got {spec!r}")
    if kind == "local":
        if not rest:
            raise ValueError(f"--judge local: needs a model directory or hub id (local:MODEL_OR_DIR), got {spec!r}")
        judge: Judge = LocalJudge(rest, device=device)
    else:
        model, at, base_url = rest.partition("@")
        if not model:
            raise ValueError(f"--judge openai: needs a model name (openai:MODEL[@BASE_URL]), got {spec!r}")
        if at and not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--judge openai:MODEL@BASE_URL: the base URL must start with http:// or https://, "
                             f"got {_redacted(base_url)!r}")
        judge = OpenAIJudge(base_url or None, model=model)
    return CachedJudge(judge, cache) if cache is not None else judge
