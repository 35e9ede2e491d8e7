"""The LIVE template (SPEC §2) in any chat format, and the learned character spans (SPEC §3).

A conversation is a list of messages (plain dicts, as stored in JSONL records)::

    {"role": "system",    "content": "..."}
    {"role": "user",      "content": "..."}
    {"role": "assistant", "content": "...", "learn": True}
    {"role": "stream",    "num_frames": 5, "learn": True | False | k}

Rendering goes through the template's :class:`~livecue.data.chat_format.ChatFormat`; a frame is ``frame_prefix +
<v> * K + frame_suffix``. Upstream-exact LIVE (``<bos>``/``<eos>`` are the tokenizer's own strings) and a chat
format cut out of the tokenizer's template (Qwen style shown)::

                   LIVE                                      chat format (Qwen style)
    system     -> <bos> + content + "\\n"                    "<|im_start|>system\\n" + content + "<|im_end|>\\n"
    user       -> "\\nUser: " + content                      "<|im_start|>user\\n" + content + "<|im_end|>\\n"
    assistant  -> "\\nAssistant: " + content + <eos>         "<|im_start|>assistant\\n" + content + "<|im_end|>\\n"
    stream(n)  -> "\\n[" + interval.join([frame] * n) + "]"  "<|im_start|>user\\n" + ... + "<|im_end|>\\n"

(a stream of n = 0 frames renders nothing; a chat format's stream segment is a user turn of frames).

Learned spans (character ranges whose *tokens are targets*, kind in parentheses):

* each learned frame that is followed by another frame of its segment: the interval string after it (``silence``);
  with an empty interval (live1) the span is empty and the frame's last token is trained to predict eos;
* the last frame of a learned segment, when the segment is followed by a message: the stream suffix and
  ``speak_extra`` (``speak``: LIVE ``]\\n``, Qwen ``<|im_end|>\\n``); a trailing stream (nothing follows) has no
  decision to learn on its last frame;
* each learned assistant turn: the assistant prefix (without the ``speak_extra`` the speak span took) + content + the
  reply's end token (``response``: LIVE ``Assistant: ...<eos>``, Qwen ``<|im_start|>assistant\\n...<|im_end|>``).

The decision is read at the frame's last token (``frame_end``: the last ``<v>``, or the one-token ``frame_suffix``).
``learn = k`` learns only the first k frames of the segment (the last one only if k = n).

A live stream walks the same template one forward at a time: :class:`StreamCursor` says which ids to feed next
(start, frame, interval, query, reply prompt, the end token that closes a turn), so that the ids fed through the KV
cache are exactly the rendered conversation, tokenized.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .chat_format import ChatFormat

ROLES = ("system", "user", "assistant", "stream")
# the pieces of the LIVE format (ChatFormat.live)
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
    (the frame's last token) is trained to predict eos.
    """

    start: int
    end: int
    kind: str
    message: int  # index of the message the span belongs to


@dataclass
class Rendered:
    """A rendered conversation: the text, its learned spans, its frame count and where each reply's end token
    starts (character offsets: the turn boundaries of the SPEC §7 metrics)."""

    text: str
    spans: list[LearnSpan] = field(default_factory=list)
    num_frames: int = 0
    turn_ends: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Template:
    """The LIVE template for one tokenizer and one frame layout.

    Attributes:
        bos, eos: the tokenizer's bos string and the reply's end token string (the LIVE format: the tokenizer's
            bos/eos; a chat format's ``eos`` is its own end token).
        v_placeholder: the frame-token placeholder (``<v>``).
        frame_num_tokens: K, placeholders per frame.
        frame_interval: the string between frames (``,`` for live1+, empty for live1).
        frame_prefix, frame_suffix: the strings around each frame's placeholders (empty for LIVE).
        chat: the chat format (None: :meth:`ChatFormat.live` with ``bos``/``eos``; set after construction).
    """

    bos: str
    eos: str
    v_placeholder: str = "<v>"
    frame_num_tokens: int = 10
    frame_interval: str = ","
    frame_prefix: str = ""
    frame_suffix: str = ""
    chat: ChatFormat | None = None

    def __post_init__(self) -> None:
        if self.chat is None:
            object.__setattr__(self, "chat", ChatFormat.live(self.bos, self.eos))
        elif self.chat.eos != self.eos:
            raise ValueError(f"template eos {self.eos!r} differs from its chat format's end token {self.chat.eos!r}")

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any) -> Template:
        """From a :class:`~livecue.config.LiveConfig` and a tokenizer: ``stream.chat_format`` ``live`` takes the
        tokenizer's bos/eos strings, ``template`` cuts the format out of the tokenizer's chat template."""
        stream = cfg.stream
        layout = dict(v_placeholder=stream.v_placeholder, frame_num_tokens=cfg.frame_num_tokens,
                      frame_interval=stream.frame_interval, frame_prefix=stream.frame_prefix,
                      frame_suffix=stream.frame_suffix)
        if stream.chat_format == "template":
            chat = ChatFormat.from_chat_template(tokenizer)
            return cls(bos=tokenizer.bos_token or "", eos=chat.eos, chat=chat, **layout)
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos token; the LIVE template needs one")
        return cls(bos=tokenizer.bos_token or "", eos=tokenizer.eos_token, **layout)

    # ---- pieces ---------------------------------------------------------------------------------------------------
    @property
    def chat_format(self) -> ChatFormat:
        """The chat format (never None after construction)."""
        assert self.chat is not None
        return self.chat

    @property
    def frame(self) -> str:
        """One frame: the frame prefix, K placeholders, the frame suffix."""
        return self.frame_prefix + self.v_placeholder * self.frame_num_tokens + self.frame_suffix

    def frames(self, n: int) -> str:
        """n frames joined by the interval (no brackets)."""
        return self.frame_interval.join([self.frame] * n)

    def system(self, content: str) -> str:
        """The system message (LIVE: ``<bos>content\\n``)."""
        return self.chat_format.system_prefix + content + self.chat_format.system_suffix

    def stream_start(self, system_prompt: str) -> str:
        """What the engine feeds first: ``<bos>SYS\\n\\n[`` (an empty system prompt still gets bos)."""
        fmt = self.chat_format
        return fmt.bos + self.system(system_prompt) + fmt.opening("stream", "system")

    def user_turn(self, text: str, *, in_stream: bool = True, previous: str | None = None) -> str:
        """Close the open stream (if any) and add a user turn: ``]\\nUser: text``. ``previous``: the role before
        it when no stream is open (it matters only after a system message that opens a user turn)."""
        fmt = self.chat_format
        close = fmt.stream_suffix if in_stream else ""
        return close + fmt.opening("user", "stream" if in_stream else previous) + text + fmt.user_suffix

    def query_prompt(self, query: str, *, in_stream: bool = True, previous: str | None = None) -> str:
        """Close the open stream (if any), ask, and open the assistant turn: ``]\\nUser: q\\nAssistant:``."""
        return (self.user_turn(query, in_stream=in_stream, previous=previous)
                + self.chat_format.opening("generation", "user"))

    # ---- rendering ------------------------------------------------------------------------------------------------
    def render(self, messages: Iterable[dict[str, Any]], *, add_generation_prompt: bool = False,
               add_stream_prompt: bool = False, add_stream_generation_prompt: bool = False) -> Rendered:
        """Render ``messages`` to the format's text and its learned spans.

        ``add_stream_generation_prompt`` (LIVE ``]\\nAssistant:``) closes a stream left open by the caller, as
        upstream's template does; after a rendered stream message (which is already closed) use
        ``add_generation_prompt``.
        """
        messages = list(messages)
        if sum((add_generation_prompt, add_stream_prompt, add_stream_generation_prompt)) > 1:
            raise ValueError("choose at most one of add_generation_prompt, add_stream_prompt, "
                             "add_stream_generation_prompt")
        fmt = self.chat_format
        parts = [fmt.bos]
        pos = len(fmt.bos)
        out = Rendered(text="")
        previous: str | None = None
        pending_speak: tuple[int, int] | None = None  # (offset of the stream suffix, message index)

        for i, msg in enumerate(messages):
            role = _role(msg, i)
            if role != "stream" and pending_speak is not None:
                out.spans.append(self._speak_span(*pending_speak))
            if role != "stream" or _num_frames(msg, i) > 0:
                pending_speak = None
            if role == "system":
                if i != 0:
                    raise ValueError(f"message {i}: a system message must come first")
                piece = self.system(_content(msg, i))
            elif role == "stream":
                n = _num_frames(msg, i)
                if n == 0:
                    continue
                opening = fmt.opening("stream", previous)
                piece = opening + self.frames(n) + fmt.stream_suffix
                learned = _learned_frames(msg, n, i)
                step = len(self.frame) + len(self.frame_interval)
                for f in range(min(learned, n - 1)):  # non-final frames: the interval after them
                    end_of_frame = pos + len(opening) + f * step + len(self.frame)
                    out.spans.append(LearnSpan(end_of_frame, end_of_frame + len(self.frame_interval), SILENCE, i))
                if learned == n:
                    pending_speak = (pos + len(piece) - len(fmt.stream_suffix), i)
                out.num_frames += n
            else:
                content = _content(msg, i)
                opening = fmt.opening(role, previous)
                if role == "user":
                    piece = opening + content + fmt.user_suffix
                else:
                    piece = opening + content + fmt.assistant_suffix
                    end_token = pos + len(opening) + len(content)
                    out.turn_ends.append(end_token)
                    if msg.get("learn", False):  # the prefix without what the speak span took, content, end token
                        start = pos + len(opening) - len(fmt.assistant_prefix) + len(fmt.speak_extra)
                        out.spans.append(LearnSpan(start, end_token + len(fmt.eos), RESPONSE, i))
            parts.append(piece)
            pos += len(piece)
            previous = role

        if add_generation_prompt:
            parts.append(fmt.opening("generation", previous))
            if pending_speak is not None:
                out.spans.append(self._speak_span(*pending_speak))
        elif add_stream_prompt:
            parts.append(fmt.opening("stream", previous))
        elif add_stream_generation_prompt:
            parts.append(fmt.stream_suffix + fmt.generation_prompt)
        out.text = "".join(parts)
        out.spans.sort(key=lambda s: (s.start, s.end))
        return out

    def _speak_span(self, start: int, message: int) -> LearnSpan:
        """The speak span: the stream suffix and the ``speak_extra`` that the next turn starts with."""
        fmt = self.chat_format
        return LearnSpan(start, start + len(fmt.stream_suffix) + len(fmt.speak_extra), SPEAK_KIND, message)


class TemplateIds(Protocol):
    """The ids a :class:`StreamCursor` feeds besides encoded text (:class:`~livecue.data.labels.Markers`)."""

    eos: int
    specials: tuple[tuple[str, int], ...]

    def frame(self, k: int) -> list[int]: ...


class StreamCursor:
    """Where a live stream stands in the template, and the ids to feed next (SPEC §6). Pure: no model, no torch.

    Template text is held back ("pending") until the next forward, so that adjacent pieces (``SYS\\n`` and ``\\n[``,
    ``]`` and ``\\nUser: ...``) are encoded together, as in the rendered conversation. Each method returns the ids of
    one forward (or queues text for the next one); LIVE pieces shown::

        start       <bos>SYS\\n                       pending until the first forward
        frame()     pending + "\\n[" | "," + frame    "\\n[" opens the stream; the interval separates frames
        reply()     pending + "]\\nAssistant:"        the model speaks after a frame
        query(q)    pending + "]\\nUser: q\\nAssistant:" (no "]" when no stream is open)
        instruction(q)   queues "]\\nUser: q"; the next frame reopens the stream ("\\n[")
        (reply tokens)   fed one by one by the engine as it decodes them
        end_turn(reply, capped)   queues the end token and the rest of the assistant suffix (after the reply's last
                         token, unfed, when the cap stopped it)

    Template text is encoded with its special tokens (``<|im_start|>``...) as their ids; user and system text never
    is (``encode`` keeps special-token strings in it plain text).

    Args:
        template: the :class:`Template` of the model.
        encode: text -> token ids (special-token strings in user text must stay plain text).
        system_prompt: the system message.
        markers: the tokenizer's ids (:class:`~livecue.data.labels.Markers`): the end token, the frame's ids and the
            special tokens of the format's text. Any format.
        bos, eos, v: instead of ``markers``, for the LIVE format without frame prefix/suffix only: the tokenizer's
            bos id (None: none), eos id and ``<v>`` id.
    """

    def __init__(self, template: Template, encode: Callable[[str], list[int]], system_prompt: str, *,
                 markers: TemplateIds | None = None, bos: int | None = None, eos: int | None = None,
                 v: int | None = None) -> None:
        fmt = template.chat_format
        specials: dict[str, tuple[int, ...]]
        if markers is not None:
            eos, frame_ids = markers.eos, markers.frame(template.frame_num_tokens)
            specials = {text: (i,) for text, i in markers.specials}
        else:
            if eos is None or v is None:
                raise TypeError("StreamCursor needs markers=, or the bos, eos and v ids of a LIVE template")
            if fmt != ChatFormat.live(template.bos, template.eos) or template.frame_prefix or template.frame_suffix:
                raise ValueError("a chat format or frame prefix/suffix needs the tokenizer's markers: pass markers=")
            frame_ids = [v] * template.frame_num_tokens
            specials = {template.eos: (eos,)}
            if template.bos:
                specials[template.bos] = () if bos is None else (bos,)
        self.template = template
        self.encode = encode
        self.eos = eos
        self.frame_ids = list(frame_ids)
        self._specials = {text: ids for text, ids in specials.items() if text}
        keys = sorted(self._specials, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, keys)) + ")") if keys else None
        self.pending_ids: list[int] = []
        self._pending: list[tuple[str, bool]] = []  # (text, is template text)
        self._add(fmt.bos + fmt.system_prefix)
        self._add(system_prompt, template=False)
        self._add(fmt.system_suffix)
        self.previous = "system"  # the role of the last turn written
        self.in_stream = False    # a stream segment is open: frames may follow with the interval between them
        self.after_frame = False  # the last thing fed was a frame

    @property
    def pending_text(self) -> str:
        """The text queued for the next forward."""
        return "".join(text for text, _ in self._pending)

    def frame(self) -> list[int]:
        """The ids of the next frame: what is pending, the stream opening or the interval, the frame's ids."""
        if not self.in_stream:
            self._add(self.template.chat_format.opening("stream", self.previous))
        elif self.after_frame:
            self._add(self.template.frame_interval)
        self.in_stream = self.after_frame = True
        self.previous = "stream"
        return self._take() + self.frame_ids

    def reply(self) -> list[int]:
        """The ids that close the stream and open the assistant turn after a frame: ``]\\nAssistant:``."""
        self._close_stream()
        return self._generation()

    def query(self, text: str) -> list[int]:
        """The ids that ask ``text`` and open the assistant turn: ``]\\nUser: text\\nAssistant:``."""
        self._user(text)
        return self._generation()

    def instruction(self, text: str) -> None:
        """A user turn the model reads and does not answer: fed with the next frame, which reopens the stream."""
        self._user(text)

    def end_turn(self, reply: list[int], capped: bool) -> None:
        """Close the assistant turn with its end token, fed with whatever comes next (LIVE ``...reply<eos>\\n[``).
        When the cap stopped the reply, its last token was decoded but never fed: it goes first, then the end
        token."""
        fmt = self.template.chat_format
        self.pending_ids = (reply[-1:] if capped else []) + [self.eos]
        self._pending = []
        self._add(fmt.assistant_suffix[len(fmt.eos):])
        self.previous = "assistant"
        self.in_stream = self.after_frame = False

    def _close_stream(self) -> None:
        if self.in_stream:
            self._add(self.template.chat_format.stream_suffix)
        self.in_stream = self.after_frame = False

    def _user(self, text: str) -> None:
        fmt = self.template.chat_format
        self._close_stream()
        self._add(fmt.opening("user", self.previous))
        self._add(text, template=False)
        self._add(fmt.user_suffix)
        self.previous = "user"

    def _generation(self) -> list[int]:
        self._add(self.template.chat_format.opening("generation", self.previous))
        self.previous = "assistant"
        return self._take()

    def _add(self, text: str, *, template: bool = True) -> None:
        if text:
            self._pending.append((text, template))

    def _take(self) -> list[int]:
        """The pending ids and text as ids: special tokens of template text by their ids, every run of text between
        them encoded at once (as the tokenizer splits a rendered conversation)."""
        ids, run = list(self.pending_ids), []
        for text, template in self._pending:
            pieces = self._split.split(text) if template and self._split is not None else [text]
            for k, piece in enumerate(pieces):
                if k % 2:  # a special token of the format
                    ids += self.encode("".join(run)) if run else []
                    ids += self._specials[piece]
                    run = []
                elif piece:
                    run.append(piece)
        ids += self.encode("".join(run)) if run else []
        self.pending_ids, self._pending = [], []
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
