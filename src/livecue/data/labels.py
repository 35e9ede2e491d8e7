"""Marker ids from the tokenizer and next-token labels from learned spans (SPEC §3).

Labels are stored *aligned to the predicting position*: ``labels[t]`` is the token position ``t`` must predict
(``-100`` where nothing is learned). A learned span marks target tokens; each target token at ``t`` sets
``labels[t - 1] = input_ids[t]``. Net effect for live1+: the last ``<v>`` of a non-final frame predicts ``,``
(silence), the last ``<v>`` of a segment's final frame predicts ``]\\n`` (speak), and a learned reply is predicted
from ``Assistant`` through eos. For live1 (no interval) the frame's last ``<v>`` predicts eos (streaming EOS).

No token id is hard-coded: every marker comes from the tokenizer, and a marker the decision rule needs as one
token (the silence token) raises a clear error when the tokenizer splits it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from .template import SILENCE, SPEAK, Rendered, Template

IGNORE = -100


def add_frame_placeholder(tokenizer: Any, v_placeholder: str) -> int:
    """Add ``v_placeholder`` to the tokenizer as an additional special token (once); return its id."""
    if v_placeholder not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [v_placeholder]},
                                     replace_extra_special_tokens=False)
    return int(tokenizer.convert_tokens_to_ids(v_placeholder))


@dataclass(frozen=True)
class Markers:
    """The token ids the LIVE template, loss and decision rule depend on, read from one tokenizer.

    Attributes:
        v: the ``<v>`` placeholder.
        silence: the token a frame's last ``<v>`` predicts to stay silent: the interval (live1+ ``,``) or eos (live1).
        eos: ends a reply.
        speak: the tokens of ``]\\n`` ("speak now"); one token for Llama-3, ``]`` + ``\\n`` for GPT-2-style BPEs
            (then the frame's last ``<v>`` predicts ``]``).
        bos: the tokenizer's bos id, if any.
    """

    v: int
    silence: int
    eos: int
    speak: tuple[int, ...]
    bos: int | None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, v_placeholder: str = "<v>", frame_interval: str = ",") -> Markers:
        vocab = tokenizer.get_vocab()
        if v_placeholder not in vocab:
            raise ValueError(f"tokenizer has no {v_placeholder!r} token: call add_frame_placeholder first")
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos token")
        eos = int(tokenizer.eos_token_id)
        v = int(vocab[v_placeholder])
        if frame_interval:
            silence = _single_token(tokenizer, frame_interval, "frame interval (the silence token)", v_placeholder)
        else:
            silence = eos
        speak = tuple(tokenizer(SPEAK, add_special_tokens=False).input_ids)
        if not speak:
            raise ValueError("tokenizer encodes the speak marker ']\\n' to no token")
        if speak[0] == silence:
            raise ValueError(f"the speak marker ']\\n' starts with the silence token id {silence}: the template "
                             f"cannot tell speaking from silence with frame_interval {frame_interval!r}")
        return cls(v=v, silence=silence, eos=eos, speak=speak, bos=tokenizer.bos_token_id)


def _single_token(tokenizer: Any, text: str, what: str, v_placeholder: str) -> int:
    alone = tokenizer(text, add_special_tokens=False).input_ids
    between = tokenizer(v_placeholder + text + v_placeholder, add_special_tokens=False).input_ids[1:-1]
    if len(alone) != 1 or between != alone:
        raise ValueError(f"the {what} {text!r} must be a single token of this tokenizer, got ids {alone} "
                         f"(between frames: {between}); choose another stream.frame_interval")
    return int(alone[0])


@dataclass
class Tokenized:
    """One tokenized conversation: ids, position-aligned labels and the number of frames it holds."""

    input_ids: list[int]
    labels: list[int]
    num_frames: int

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_conversation(rendered: Rendered, tokenizer: Any, markers: Markers, template: Template) -> Tokenized:
    """Tokenize a rendered conversation and build its labels from the learned spans.

    Raises:
        ValueError: a learned span does not start on a token boundary (the tokenizer merges across it), or the
            number of ``<v>`` tokens differs from ``num_frames × K``.
    """
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    n_v = sum(1 for i in ids if i == markers.v)
    expected = rendered.num_frames * template.frame_num_tokens
    if n_v != expected:
        raise ValueError(f"the text holds {n_v} {template.v_placeholder!r} tokens but {rendered.num_frames} frames "
                         f"x {template.frame_num_tokens} tokens = {expected} were rendered")
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    labels = [IGNORE] * len(ids)
    for span in rendered.spans:
        if span.start == span.end:  # live1: the frame's last <v> predicts the silence token (eos)
            if span.kind != SILENCE:
                raise AssertionError(f"empty span of kind {span.kind}")
            t = bisect.bisect_left(ends, span.start)
            if t >= len(ids) or ends[t] != span.start or ids[t] != markers.v:
                raise ValueError(f"no frame token ends at character {span.start} of the rendered text")
            labels[t] = markers.silence
            continue
        first = bisect.bisect_left(starts, span.start)
        if first >= len(ids) or starts[first] != span.start:
            raise ValueError(f"the tokenizer merges across a learned boundary at character {span.start} "
                             f"({rendered.text[max(0, span.start - 8):span.start + 8]!r}): labels would be ambiguous")
        t = first
        while t < len(ids) and starts[t] < span.end:
            if t > 0:
                labels[t - 1] = ids[t]
            t += 1
    return Tokenized(input_ids=ids, labels=labels, num_frames=rendered.num_frames)
