"""Marker ids from the tokenizer and next-token labels from learned spans (SPEC §3).

Labels are stored *aligned to the predicting position*: ``labels[t]`` is the token position ``t`` must predict
(``-100`` where nothing is learned). A learned span marks target tokens; each target token at ``t`` sets
``labels[t - 1] = input_ids[t]``. Net effect for live1+: the last ``<v>`` of a non-final frame predicts ``,``
(silence), the last ``<v>`` of a segment's final frame predicts ``]\\n`` (speak), and a learned reply is predicted
from ``Assistant`` through eos. For live1 (no interval) the frame's last ``<v>`` predicts eos (streaming EOS). With a
frame suffix (Qwen ``<|vision_end|>``) the suffix token takes the last ``<v>``'s part, and a chat format's speak
marker is its stream suffix (Qwen: ``<|im_end|>`` then ``\\n``).

No token id is hard-coded: every marker comes from the tokenizer and the template, and a marker the decision rule
needs as one token (the silence token, the frame suffix, the reply's end token) raises a clear error when the
tokenizer splits it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from .template import SILENCE, Rendered, Template

IGNORE = -100


def add_frame_placeholder(tokenizer: Any, v_placeholder: str) -> int:
    """Add ``v_placeholder`` to the tokenizer as an additional special token (once); return its id."""
    if v_placeholder not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [v_placeholder]},
                                     replace_extra_special_tokens=False)
    return int(tokenizer.convert_tokens_to_ids(v_placeholder))


@dataclass(frozen=True)
class Markers:
    """The token ids the template, loss and decision rule depend on, read from one tokenizer.

    Attributes:
        v: the ``<v>`` placeholder.
        silence: the token a frame's last token predicts to stay silent: the interval (live1+ ``,``) or the reply's
            end token (live1).
        eos: the reply's end token (LIVE: the tokenizer's eos; a chat format's: its assistant turn's end token).
        speak: the tokens of the speak marker (stream suffix + ``speak_extra``): ``]\\n`` is one token for Llama-3,
            ``]`` + ``\\n`` for GPT-2-style BPEs (then the frame's last token predicts ``]``), ``<|im_end|>`` +
            ``\\n`` for Qwen.
        bos: the tokenizer's bos id, if any.
        frame_end: the frame's last token, whose next token is the decision: the ``<v>`` placeholder, or the
            frame suffix when the template has one. The loss weight α and the metrics' stream positions sit here.
        frame_prefix, frame_suffix: the ids around a frame's placeholders.
        interval: the ids between two frames (the silence token, or none for live1).
        specials: (string, id) of each added token in the template's own text (the stream cursor feeds them as
            ids).
    """

    v: int
    silence: int
    eos: int
    speak: tuple[int, ...]
    bos: int | None
    frame_end: int
    frame_prefix: tuple[int, ...] = ()
    frame_suffix: tuple[int, ...] = ()
    interval: tuple[int, ...] = ()
    specials: tuple[tuple[str, int], ...] = ()

    @property
    def frame_tokens(self) -> tuple[int, ...]:
        """The ids that belong to frames only (placeholder, frame prefix and suffix): never part of a reply."""
        return (self.v, *self.frame_prefix, *self.frame_suffix)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, v_placeholder: str = "<v>", frame_interval: str = ",") -> Markers:
        """The markers of the LIVE format (the tokenizer's eos ends a reply; no frame prefix/suffix)."""
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos token")
        template = Template(bos=tokenizer.bos_token or "", eos=tokenizer.eos_token, v_placeholder=v_placeholder,
                            frame_num_tokens=1, frame_interval=frame_interval)
        return cls.from_template(tokenizer, template)

    @classmethod
    def from_template(cls, tokenizer: Any, template: Template) -> Markers:
        """The markers of ``template`` (any chat format and frame layout) in ``tokenizer``.

        Raises:
            ValueError: the placeholder is missing, or a marker that must be one token (interval, frame suffix, the
                reply's end token) is not, or speaking cannot be told from silence.
        """
        fmt = template.chat_format
        vocab = tokenizer.get_vocab()
        if template.v_placeholder not in vocab:
            raise ValueError(f"tokenizer has no {template.v_placeholder!r} token: call add_frame_placeholder first")
        v = int(vocab[template.v_placeholder])

        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer(text, add_special_tokens=False).input_ids) if text else ()

        eos = encode(fmt.eos)
        if len(eos) != 1:
            raise ValueError(f"the reply's end token {fmt.eos!r} must be a single token of this tokenizer, got ids "
                             f"{list(eos)}")
        prefix, suffix = encode(template.frame_prefix), encode(template.frame_suffix)
        if template.frame_suffix and len(suffix) != 1:
            raise ValueError(f"stream.frame_suffix {template.frame_suffix!r} must be a single token of this tokenizer "
                             f"(the frame's last token, where the model decides), got ids {list(suffix)}")
        frame = prefix + (v,) + suffix
        interval: tuple[int, ...] = ()
        if template.frame_interval:
            interval = _between_frames(tokenizer, template, frame, encode)
            silence = interval[0]
        else:
            silence = eos[0]
        speak_text = fmt.stream_suffix + fmt.speak_extra
        speak = encode(speak_text)
        if not speak:
            raise ValueError(f"tokenizer encodes the speak marker {speak_text!r} to no token")
        if speak[0] == silence:
            raise ValueError(f"the speak marker {speak_text!r} starts with the silence token id {silence}: the "
                             f"template cannot tell speaking from silence with frame_interval "
                             f"{template.frame_interval!r}")
        return cls(v=v, silence=silence, eos=eos[0], speak=speak, bos=tokenizer.bos_token_id,
                   frame_end=suffix[0] if suffix else v, frame_prefix=prefix, frame_suffix=suffix, interval=interval,
                   specials=_specials(tokenizer, (*fmt.pieces, template.frame_interval)))

    def frame(self, k: int) -> list[int]:
        """The ids of one frame of ``k`` placeholders (with the frame prefix and suffix)."""
        return [*self.frame_prefix, *[self.v] * k, *self.frame_suffix]


def _between_frames(tokenizer: Any, template: Template, frame: tuple[int, ...], encode: Any) -> tuple[int, ...]:
    """The interval's one token, checked alone and between two frames (the tokenizer must not merge it into them)."""
    text = template.frame_interval
    alone = encode(text)
    one = template.frame_prefix + template.v_placeholder + template.frame_suffix
    between = encode(one + text + one)
    ok = len(alone) == 1 and between == frame + alone + frame
    if not ok:
        found = between[len(frame):len(between) - len(frame)] if len(between) > 2 * len(frame) else between
        raise ValueError(f"the frame interval (the silence token) {text!r} must be a single token of this "
                         f"tokenizer, got ids {list(alone)} (between frames: {list(found)}); choose another "
                         f"stream.frame_interval")
    return alone


def _specials(tokenizer: Any, pieces: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """The tokenizer's added and special tokens that occur in the template's own text (``pieces``)."""
    tokens = dict(tokenizer.get_added_vocab())
    for token in getattr(tokenizer, "all_special_tokens", []):
        tokens.setdefault(token, int(tokenizer.convert_tokens_to_ids(token)))
    text = "\x00".join(pieces)
    return tuple(sorted((t, int(i)) for t, i in tokens.items() if t and t in text))


@dataclass
class Tokenized:
    """One tokenized conversation: ids, position-aligned labels, its number of frames and the position of each
    reply's end token (the turn boundaries of the SPEC §7 metrics)."""

    input_ids: list[int]
    labels: list[int]
    num_frames: int
    turn_ends: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_conversation(rendered: Rendered, tokenizer: Any, markers: Markers, template: Template) -> Tokenized:
    """Tokenize a rendered conversation and build its labels from the learned spans.

    Raises:
        ValueError: a learned span does not start on a token boundary (the tokenizer merges across it), a reply's
            end token is not one token, or the number of ``<v>`` tokens differs from ``num_frames × K``.
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
        if span.start == span.end:  # live1: the frame's last token predicts the silence token (eos)
            if span.kind != SILENCE:
                raise AssertionError(f"empty span of kind {span.kind}")
            t = bisect.bisect_left(ends, span.start)
            if t >= len(ids) or ends[t] != span.start or ids[t] != markers.frame_end:
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
    turn_ends = []
    for offset in rendered.turn_ends:
        t = bisect.bisect_left(starts, offset)
        if t >= len(ids) or starts[t] != offset or ids[t] != markers.eos:
            raise ValueError(f"the reply's end token at character {offset} of the rendered text is not the token "
                             f"{markers.eos}")
        turn_ends.append(t)
    return Tokenized(input_ids=ids, labels=labels, num_frames=rendered.num_frames, turn_ends=turn_ends)
