"""Token streaming for the server: the engine's ``session(on_token=...)`` hook calls back after each decoded reply
token; :class:`TextDeltas` turns the growing token list into the new visible text (``reply_delta`` events).
"""

from __future__ import annotations

from collections.abc import Callable


class TextDeltas:
    """Incremental detokenisation: the new visible text each time a reply grows by a token.

    Byte-level BPE can end a prefix in the middle of a UTF-8 character (decoded as U+FFFD): that text is held back
    until the character completes. Surrounding whitespace is held back too, so the deltas of a reply add up to the
    final event's (stripped) text.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.sent = ""

    def push(self, ids: list[int]) -> str:
        """The text to send for the reply ``ids`` so far ("" when nothing new is visible yet)."""
        visible = self._decode(ids).strip()
        while visible.endswith("\ufffd"):
            visible = visible[:-1].rstrip()
        if not visible.startswith(self.sent) or len(visible) == len(self.sent):
            return ""
        delta = visible[len(self.sent):]
        self.sent = visible
        return delta
