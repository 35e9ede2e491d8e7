"""How a conversation is written: the text around each role's turns (SPEC §2, generalised to any chat template).

A :class:`ChatFormat` holds, for each role, the text that opens and closes its turn. The LIVE template renders a
conversation through it (:mod:`livecue.data.template`). Two sources:

* :meth:`ChatFormat.live` — the upstream-exact LIVE text (``<bos>SYS\\n``, ``\\nUser: q``, ``\\nAssistant: a<eos>``,
  frames in ``\\n[...]``); every golden LIVE string is rendered through it unchanged.
* :meth:`ChatFormat.from_chat_template` — cut out of a tokenizer's own chat template, so that a pretrained VLM sees
  its own format: sentinel conversations are rendered with ``apply_chat_template(..., tokenize=False)`` and the
  text between the sentinels gives each role's prefix and suffix. A stream segment is then a user turn of frames,
  and the reply's end token is the first token of the assistant turn's suffix (``<|im_end|>``, ``<end_of_turn>``,
  ``<end_of_utterance>``...).

Derivation rules (documented choices):

* The conversation start (``bos``) is the tokenizer's bos string when the template begins with it, else empty.
* A template that adds a default system prompt when none is given never gets the chance: livecue always renders the
  system message it is given (the dataset and the engine add ``stream.system_prompt``), and none when there is none.
* A template without a system role (Gemma style: the system text opens the first user turn, followed by a
  separator) gives ``system_in_user``: the system message is written as the start of a user turn, and the user or
  stream turn that follows continues that turn instead of opening its own; an assistant turn that follows closes it
  first.
* The generation prompt is what the template appends with ``add_generation_prompt=True`` after a user turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

# sentinel contents: no whitespace (templates may trim), no markup, distinct from every role name
_SYSTEM, _USER1, _ASSISTANT, _USER2 = "LCSENTSYSTEM", "LCSENTUSERONE", "LCSENTASSISTANT", "LCSENTUSERTWO"


@dataclass(frozen=True, kw_only=True)
class ChatFormat:
    """The text around each role's turns. A turn is ``prefix + content + suffix``; a stream segment is
    ``stream_prefix + frames + stream_suffix``.

    Attributes:
        eos: the reply's end token string: the model ends a reply by predicting it (the first token of
            ``assistant_suffix``).
        bos: text that starts every conversation (chat formats; LIVE writes the tokenizer's bos as
            ``system_prefix`` instead, so that a conversation without a system message has none, as upstream).
        system_prefix, system_suffix: around the system message.
        user_prefix, user_suffix: around a user message.
        assistant_prefix, assistant_suffix: around a reply; the suffix starts with ``eos``.
        stream_prefix, stream_suffix: around a stream segment (LIVE ``\\n[`` / ``]``; chat: the user turn's).
        speak_extra: the text after ``stream_suffix`` that the "speak" decision also learns (LIVE ``\\n``: the speak
            marker is ``]\\n``); every turn that can follow a stream starts with it.
        generation_prompt: what opens the reply the model writes (LIVE ``\\nAssistant:``; chat: the template's).
        system_in_user: the template has no system role: the system text starts a user turn (module docstring).
    """

    eos: str
    bos: str = ""
    system_prefix: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    stream_prefix: str = ""
    stream_suffix: str = ""
    speak_extra: str = ""
    generation_prompt: str = ""
    system_in_user: bool = False

    def __post_init__(self) -> None:
        if not self.eos or not self.assistant_suffix.startswith(self.eos):
            raise ValueError(f"the assistant suffix {self.assistant_suffix!r} must start with the reply's end token "
                             f"{self.eos!r}")
        for name in ("user_prefix", "assistant_prefix", "generation_prompt"):
            if not getattr(self, name).startswith(self.speak_extra):
                raise ValueError(f"{name} {getattr(self, name)!r} must start with speak_extra {self.speak_extra!r}")

    @classmethod
    def live(cls, bos: str, eos: str) -> ChatFormat:
        """The upstream-exact LIVE format (SPEC §2) with the tokenizer's bos/eos strings (bos may be empty)."""
        return cls(eos=eos, system_prefix=bos, system_suffix="\n", user_prefix="\nUser: ",
                   assistant_prefix="\nAssistant: ", assistant_suffix=eos, stream_prefix="\n[", stream_suffix="]",
                   speak_extra="\n", generation_prompt="\nAssistant:")

    @classmethod
    def from_chat_template(cls, tokenizer: Any) -> ChatFormat:
        """Cut the format out of ``tokenizer``'s chat template (rules in the module docstring).

        Raises:
            ValueError: naming the tokenizer, when it has no chat template or the template cannot be cut into role
                prefixes and suffixes.
        """
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        render = _Renderer(tokenizer, name)
        full = render([("system", _SYSTEM), ("user", _USER1), ("assistant", _ASSISTANT), ("user", _USER2)], True)
        s, u1, a1, u2 = _find(full, (_SYSTEM, _USER1, _ASSISTANT, _USER2), name)
        cut = _Cutter(name)
        user_suffix = cut.after(render([("system", _SYSTEM), ("user", _USER1)], False), full[:u1.end], "user turn")
        assistant_suffix = cut.after(render([("system", _SYSTEM), ("user", _USER1), ("assistant", _ASSISTANT)],
                                            False), full[:a1.end], "assistant turn")
        assistant_prefix = cut.less(full[u1.end:a1.start], user_suffix, "assistant turn")
        user_prefix = cut.less(full[a1.end:u2.start], assistant_suffix, "user turn")
        generation_prompt = cut.less(full[u2.end:], user_suffix, "generation prompt")
        if not user_prefix or not user_suffix or not assistant_prefix or not generation_prompt:
            raise cut.error(f"every user and assistant turn must be marked (user {user_prefix!r} ... "
                            f"{user_suffix!r}, assistant {assistant_prefix!r}, generation prompt "
                            f"{generation_prompt!r})")
        head = full[:s.start]
        bos_token = getattr(tokenizer, "bos_token", None) or ""
        bos = bos_token if bos_token and head.startswith(bos_token) else ""
        system_prefix, between = head[len(bos):], full[s.end:u1.start]
        if between.endswith(user_prefix):
            system_suffix, system_in_user = between[:len(between) - len(user_prefix)], False
        elif system_prefix == user_prefix:  # no system role: the system text opens the first user turn
            system_suffix, system_in_user = between, True
        else:
            raise cut.error(f"the system turn {head!r} ... {between!r} neither precedes nor opens a user turn")
        if not (assistant_prefix.startswith(generation_prompt) or generation_prompt.startswith(assistant_prefix)):
            # training renders the assistant prefix, streaming feeds the generation prompt: they must agree
            raise cut.error(f"its generation prompt {generation_prompt!r} and the opening of an assistant turn "
                            f"{assistant_prefix!r} differ: a model trained on one would be prompted with the other")
        fmt = cls(eos=_end_token(tokenizer, assistant_suffix, cut), bos=bos, system_prefix=system_prefix,
                  system_suffix=system_suffix, user_prefix=user_prefix, user_suffix=user_suffix,
                  assistant_prefix=assistant_prefix, assistant_suffix=assistant_suffix, stream_prefix=user_prefix,
                  stream_suffix=user_suffix, generation_prompt=generation_prompt, system_in_user=system_in_user)
        expected = (bos + fmt.system_prefix + _SYSTEM + fmt.system_suffix + fmt.opening("user", "system") + _USER1
                    + user_suffix + assistant_prefix + _ASSISTANT + assistant_suffix + user_prefix + _USER2
                    + user_suffix + generation_prompt)
        if expected != full:
            raise cut.error(f"the derived format renders {expected!r}, the template {full!r}")
        return fmt

    # ---- pieces -----------------------------------------------------------------------------------------------------
    def opening(self, role: str, previous: str | None) -> str:
        """The text that opens a ``role`` turn ("user", "assistant", "stream" or "generation": the reply the model
        writes) after a ``previous`` one (a role, or None at the start)."""
        prefix = {"user": self.user_prefix, "assistant": self.assistant_prefix, "stream": self.stream_prefix,
                  "generation": self.generation_prompt}[role]
        if previous == "system" and self.system_in_user:
            return "" if role in ("user", "stream") else self.user_suffix + prefix
        return prefix

    @property
    def pieces(self) -> tuple[str, ...]:
        """Every text the format writes itself (special-token strings in them are template tokens)."""
        return (self.bos, self.system_prefix, self.system_suffix, self.user_prefix, self.user_suffix,
                self.assistant_prefix, self.assistant_suffix, self.stream_prefix, self.stream_suffix,
                self.speak_extra, self.generation_prompt)


class _Renderer:
    """Renders sentinel conversations with the tokenizer's chat template, string contents first, then typed lists
    (``[{"type": "text", "text": ...}]``, which templates written for processors iterate over)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        if not getattr(tokenizer, "chat_template", None) or not hasattr(tokenizer, "apply_chat_template"):
            raise ValueError(f"tokenizer {name!r} has no chat template: stream.chat_format 'template' needs one")
        self.tokenizer, self.name = tokenizer, name
        self.typed: bool | None = None  # content style that renders the sentinels, once found

    def __call__(self, turns: Sequence[tuple[str, str]], generation: bool) -> str:
        problems = []
        for typed in ([self.typed] if self.typed is not None else [False, True]):
            messages = [{"role": r, "content": [{"type": "text", "text": c}] if typed else c} for r, c in turns]
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            except Exception as e:  # noqa: BLE001 - a template's own error (jinja, raise_exception) becomes one line
                problems.append(f"{type(e).__name__}: {e}")
                continue
            if all(c in text for _, c in turns):
                self.typed = typed
                return text
            problems.append(f"rendered {text!r} without the message texts")
        raise ValueError(f"the chat template of tokenizer {self.name!r} cannot render a system/user/assistant "
                         f"conversation: {'; '.join(problems)}")


class _Span(NamedTuple):
    start: int
    end: int


def _find(text: str, sentinels: Sequence[str], name: str) -> list[_Span]:
    out, pos = [], 0
    for sentinel in sentinels:
        at = text.find(sentinel, pos)
        if at < 0:
            raise ValueError(f"the chat template of tokenizer {name!r} reorders or drops messages: {text!r}")
        out.append(_Span(at, at + len(sentinel)))
        pos = at + len(sentinel)
    return out


class _Cutter:
    """Cuts one rendering against another; every failure is one ValueError naming the tokenizer."""

    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, why: str) -> ValueError:
        return ValueError(f"the chat template of tokenizer {self.name!r} cannot be cut into role prefixes and "
                          f"suffixes: {why}")

    def after(self, text: str, head: str, what: str) -> str:
        """What ``text`` adds after ``head`` (the suffix of the turn ``head`` ends with)."""
        if not text.startswith(head):
            raise self.error(f"a conversation ending with a {what} renders {text!r}, not a continuation of {head!r}")
        return text[len(head):]

    def less(self, text: str, prefix: str, what: str) -> str:
        """``text`` without its leading ``prefix`` (what opens the next turn)."""
        if not text.startswith(prefix):
            raise self.error(f"the text before the {what}, {text!r}, does not start with {prefix!r}")
        return text[len(prefix):]


def _end_token(tokenizer: Any, assistant_suffix: str, cut: _Cutter) -> str:
    """The first token of the assistant suffix (the reply's end token), as a string the suffix starts with."""
    ids = tokenizer(assistant_suffix, add_special_tokens=False).input_ids if assistant_suffix else []
    token = tokenizer.convert_ids_to_tokens(ids[0]) if ids else ""
    if not token or not assistant_suffix.startswith(token):
        raise cut.error(f"the assistant turn ends with {assistant_suffix!r}, which does not start with one end token "
                        f"(tokens {tokenizer.convert_ids_to_tokens(ids) if ids else []})")
    return token
