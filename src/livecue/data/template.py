"""The LIVE chat template (SPEC §2, upstream-exact) and the learned character spans (SPEC §3).

A conversation is a list of messages (plain dicts, as stored in JSONL records)::

    {"role": "system",    "content": "..."}
    {"role": "user",      "content": "..."}
    {"role": "assistant", "content": "...", "learn": True}
    {"role": "stream",    "num_frames": 5, "learn": True | False | k}

Rendering (``<bos>``/``<eos>`` are the tokenizer's own strings)::

    system     -> <bos> + content + "\\n"
    user       -> "\\nUser: " + content
    assistant  -> "\\nAssistant: " + content + <eos>
    stream(n)  -> "\\n[" + interval.join([<v> * K] * n) + "]"       (n = 0 renders nothing)

Learned spans (character ranges whose *tokens are targets*, kind in parentheses):

* each learned frame that is followed by another frame of its segment: the interval string after it (``silence``);
  with an empty interval (live1) the span is empty and the frame's last ``<v>`` is trained to predict eos;
* the last frame of a learned segment, when the segment is followed by a message: ``]\\n`` (``speak``);
  a trailing stream (nothing follows) has no decision to learn on its last frame;
* each learned assistant turn: ``Assistant: `` + content + eos (``response``).

``learn = k`` learns only the first k frames of the segment (the last one only if k = n).

A live stream walks the same template one forward at a time: :class:`StreamCursor` says which ids to feed next
(start, frame, interval, query, reply prompt, the eos that closes a turn), so that the ids fed through the KV cache
are exactly the rendered conversation, tokenized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "stream")
USER_PREFIX = "\nUser: "
ASSISTANT_PREFIX = "\nAssistant: "
STREAM_OPEN = "\n["
STREAM_CLOSE = "]"
SPEAK = "]\n"
GENERATION_PROMPT = "\nAssistant:"
STREAM_PROMPT = "\n["
STREAM_GENERATION_PROMPT = "]\nAssistant:"

SILENCE, SPEAK_KIND, RESPONSE = "silence", "speak", "response"


@dataclass(frozen=True)
class LearnSpan:
    """A character range ``[start, end)`` of the rendered text whose tokens are training targets.

    An empty span (``start == end``, kind ``silence``) marks a live1 frame boundary: the token ending at ``start``
    (the frame's last ``<v>``) is trained to predict eos.
    """

    start: int
    end: int
    kind: str
    message: int  # index of the message the span belongs to


@dataclass
class Rendered:
    """A rendered conversation: the text, its learned spans and its frame count."""

    text: str
    spans: list[LearnSpan] = field(default_factory=list)
    num_frames: int = 0


@dataclass(frozen=True)
class Template:
    """The LIVE template for one tokenizer and one frame layout.

    Attributes:
        bos, eos: the tokenizer's own bos/eos strings.
        v_placeholder: the frame-token placeholder (``<v>``).
        frame_num_tokens: K, placeholders per frame.
        frame_interval: the string between frames (``,`` for live1+, empty for live1).
    """

    bos: str
    eos: str
    v_placeholder: str = "<v>"
    frame_num_tokens: int = 10
    frame_interval: str = ","

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any) -> Template:
        """From a :class:`~livecue.config.LiveConfig` and a tokenizer (bos/eos strings are the tokenizer's)."""
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos token; the LIVE template needs one")
        return cls(bos=tokenizer.bos_token or "", eos=tokenizer.eos_token, v_placeholder=cfg.stream.v_placeholder,
                   frame_num_tokens=cfg.frame_num_tokens, frame_interval=cfg.stream.frame_interval)

    # ---- pieces ---------------------------------------------------------------------------------------------------
    @property
    def frame(self) -> str:
        """One frame: K placeholders."""
        return self.v_placeholder * self.frame_num_tokens

    def frames(self, n: int) -> str:
        """n frames joined by the interval (no brackets)."""
        return self.frame_interval.join([self.frame] * n)

    def system(self, content: str) -> str:
        return self.bos + content + "\n"

    def stream_start(self, system_prompt: str) -> str:
        """What the engine feeds first: ``<bos>SYS\\n\\n[`` (an empty system prompt still gets bos)."""
        return self.system(system_prompt) + STREAM_PROMPT

    def user_turn(self, text: str, *, in_stream: bool = True) -> str:
        """Close the open stream (if any) and add a user turn: ``]\\nUser: text``."""
        return (STREAM_CLOSE if in_stream else "") + USER_PREFIX + text

    def query_prompt(self, query: str, *, in_stream: bool = True) -> str:
        """Close the open stream (if any), ask, and open the assistant turn: ``]\\nUser: q\\nAssistant:``."""
        return self.user_turn(query, in_stream=in_stream) + GENERATION_PROMPT

    # ---- rendering ------------------------------------------------------------------------------------------------
    def render(self, messages: Iterable[dict[str, Any]], *, add_generation_prompt: bool = False,
               add_stream_prompt: bool = False, add_stream_generation_prompt: bool = False) -> Rendered:
        """Render ``messages`` to the upstream text and its learned spans.

        ``add_stream_generation_prompt`` (``]\nAssistant:``) closes a stream left open by the caller, as upstream's
        template does; after a rendered stream message (which already ends with ``]``) use ``add_generation_prompt``.
        """
        messages = list(messages)
        if sum((add_generation_prompt, add_stream_prompt, add_stream_generation_prompt)) > 1:
            raise ValueError("choose at most one of add_generation_prompt, add_stream_prompt, "
                             "add_stream_generation_prompt")
        parts: list[str] = []
        spans: list[LearnSpan] = []
        pos = 0
        total_frames = 0
        pending_speak: tuple[int, int] | None = None  # (offset of "]", message index) of a learned last frame

        for i, msg in enumerate(messages):
            role = _role(msg, i)
            if role != "stream" and pending_speak is not None:
                start, owner = pending_speak  # the next message starts with "\n": "]\n" is the speak marker
                spans.append(LearnSpan(start, start + len(SPEAK), SPEAK_KIND, owner))
            if role != "stream" or _num_frames(msg, i) > 0:
                pending_speak = None
            if role == "system":
                if i != 0:
                    raise ValueError(f"message {i}: a system message must come first")
                piece = self.system(_content(msg, i))
            elif role == "user":
                piece = USER_PREFIX + _content(msg, i)
            elif role == "assistant":
                content = _content(msg, i)
                piece = ASSISTANT_PREFIX + content + self.eos
                if msg.get("learn", False):
                    spans.append(LearnSpan(pos + 1, pos + len(piece), RESPONSE, i))  # "Assistant: ..." + eos
            else:
                n = _num_frames(msg, i)
                if n == 0:
                    continue
                piece = STREAM_OPEN + self.frames(n) + STREAM_CLOSE
                learned = _learned_frames(msg, n, i)
                frame_len = len(self.frame) + len(self.frame_interval)
                for f in range(min(learned, n - 1)):  # non-final frames: the interval after them
                    end_of_frame = pos + len(STREAM_OPEN) + f * frame_len + len(self.frame)
                    spans.append(LearnSpan(end_of_frame, end_of_frame + len(self.frame_interval), SILENCE, i))
                if learned == n:
                    pending_speak = (pos + len(piece) - len(STREAM_CLOSE), i)
                total_frames += n
            parts.append(piece)
            pos += len(piece)

        suffix = ""
        if add_generation_prompt:
            suffix = GENERATION_PROMPT
        elif add_stream_prompt:
            suffix = STREAM_PROMPT
        elif add_stream_generation_prompt:
            suffix = STREAM_GENERATION_PROMPT
        if pending_speak is not None and add_generation_prompt:
            start, owner = pending_speak
            spans.append(LearnSpan(start, start + len(SPEAK), SPEAK_KIND, owner))
        text = "".join(parts) + suffix
        return Rendered(text=text, spans=sorted(spans, key=lambda s: (s.start, s.end)), num_frames=total_frames)


class StreamCursor:
    """Where a live stream stands in the template, and the ids to feed next (SPEC §6). Pure: no model, no torch.

    Template text is held back ("pending") until the next forward, so that adjacent pieces (``SYS\\n`` and ``\\n[``,
    ``]`` and ``\\nUser: ...``) are encoded together, as in the rendered conversation. Each method returns the ids of
    one forward (or queues text for the next one)::

        start       <bos>SYS\\n                       pending until the first forward
        frame()     pending + "\\n[" | "," + <v>*K    "\\n[" opens the stream; the interval separates frames
        reply()     pending + "]\\nAssistant:"        the model speaks after a frame
        query(q)    pending + "]\\nUser: q\\nAssistant:" (no "]" when no stream is open)
        instruction(q)   queues "]\\nUser: q"; the next frame reopens the stream ("\\n[")
        (reply tokens)   fed one by one by the engine as it decodes them
        end_turn(reply, capped)   queues eos (after the reply's last token, unfed, when the cap stopped it)

    Args:
        template: the :class:`Template` of the model.
        encode: text -> token ids (special-token strings in user text must stay plain text).
        system_prompt: the system message.
        bos, eos, v: the tokenizer's bos id (None: none), eos id and ``<v>`` id.
    """

    def __init__(self, template: Template, encode: Callable[[str], list[int]], system_prompt: str, *,
                 bos: int | None, eos: int, v: int) -> None:
        self.template = template
        self.encode = encode
        self.eos = eos
        self.frame_ids = [v] * template.frame_num_tokens
        self.pending_ids: list[int] = [bos] if template.bos and bos is not None else []
        self.pending_text = system_prompt + "\n"
        self.in_stream = False    # "[" is open: frames may follow with the interval between them
        self.after_frame = False  # the last thing fed was a frame

    def frame(self) -> list[int]:
        """The ids of the next frame: what is pending, the stream opening or the interval, ``K`` placeholders."""
        if not self.in_stream:
            self.pending_text += STREAM_PROMPT
        elif self.after_frame:
            self.pending_text += self.template.frame_interval
        self.in_stream = self.after_frame = True
        return self._take() + self.frame_ids

    def reply(self) -> list[int]:
        """The ids that close the stream and open the assistant turn after a frame: ``]\\nAssistant:``."""
        return self._open_turn(STREAM_GENERATION_PROMPT)

    def query(self, text: str) -> list[int]:
        """The ids that ask ``text`` and open the assistant turn: ``]\\nUser: text\\nAssistant:``."""
        return self._open_turn(self.template.query_prompt(text, in_stream=self.in_stream))

    def instruction(self, text: str) -> None:
        """A user turn the model reads and does not answer: fed with the next frame, which reopens the stream."""
        self.pending_text += self.template.user_turn(text, in_stream=self.in_stream)
        self.in_stream = self.after_frame = False

    def end_turn(self, reply: list[int], capped: bool) -> None:
        """Close the assistant turn with eos, fed with whatever comes next (``...reply<eos>\\n[``). When the cap
        stopped the reply, its last token was decoded but never fed: it goes first, then eos."""
        self.pending_ids = (reply[-1:] if capped else []) + [self.eos]
        self.pending_text = ""
        self.in_stream = self.after_frame = False

    def _open_turn(self, prompt: str) -> list[int]:
        self.pending_text += prompt
        self.in_stream = self.after_frame = False  # the prompt closed the stream
        return self._take()

    def _take(self) -> list[int]:
        ids = self.pending_ids + self.encode(self.pending_text)
        self.pending_ids, self.pending_text = [], ""
        return ids


def _role(msg: dict[str, Any], i: int) -> str:
    if not isinstance(msg, dict):
        raise ValueError(f"message {i} must be a mapping, got {type(msg).__name__}")
    role = msg.get("role")
    if role not in ROLES:
        raise ValueError(f"message {i}: role must be one of {ROLES}, got {role!r}")
    return role


def _content(msg: dict[str, Any], i: int) -> str:
    content = msg.get("content")
    if not isinstance(content, str):
        raise ValueError(f"message {i} ({msg.get('role')}): content must be a string, got {content!r}")
    return content


def _num_frames(msg: dict[str, Any], i: int) -> int:
    n = msg.get("num_frames")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"message {i} (stream): num_frames must be a non-negative integer, got {n!r}")
    return n


def _learned_frames(msg: dict[str, Any], n: int, i: int) -> int:
    learn = msg.get("learn", False)
    if isinstance(learn, bool):
        return n if learn else 0
    if isinstance(learn, int) and learn >= 0:
        return min(learn, n)
    raise ValueError(f"message {i} (stream): learn must be true, false or a frame count >= 0, got {learn!r}")
