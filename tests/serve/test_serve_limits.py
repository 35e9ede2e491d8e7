"""livecue serve's limits: docs/protocol.md equals the code, every start option is checked before the model loads,
events are strict JSON, and what a connection holds for a client that does not read is bounded. No model, no
network: fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest

from livecue import cli
from livecue.serve.protocol import Limits, ServerLimits, dumps_event

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def docs_table(heading: str) -> dict[str, str]:
    """``{limit: default}`` of the first table after the paragraph starting with ``heading`` in docs/protocol.md."""
    text = DOCS.read_text()
    section = text[text.index(heading):]
    rows: dict[str, str] = {}
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def parse_default(text: str):
    first = text.split()[0]
    return None if first == "none" else json.loads(first)


@pytest.mark.parametrize("heading, limits", [("Per connection (", Limits()), ("Server-wide (", ServerLimits())])
def test_the_docs_limits_tables_equal_the_code(heading, limits):
    rows = docs_table(heading)
    fields = {f.name for f in dataclasses.fields(limits)}
    assert set(rows) == fields, f"documented {sorted(set(rows) - fields)}, undocumented {sorted(fields - set(rows))}"
    for name, text in rows.items():
        expected = getattr(limits, name)
        assert parse_default(text) == expected and type(parse_default(text)) is type(expected), (name, text)


def test_serve_option_defaults_are_the_documented_limits():
    from livecue.commands.serve import build_parser, limits_from_args, message_bytes

    limits, server = limits_from_args(build_parser().parse_args([]))
    assert limits == Limits() and server == ServerLimits()
    assert message_bytes(Limits().max_frame_bytes) == Limits().max_message_bytes
    custom, _ = limits_from_args(build_parser().parse_args(["--max-frame-bytes", str(8 * 2**20), "--max-rate", "5"]))
    assert custom.max_message_bytes >= 8 * 2**20 * 4 / 3 and custom.max_burst == 10


BAD_OPTIONS = [
    (["--fps", "nan"], 2, "--fps"), (["--fps", "0"], 2, "--fps"), (["--fps", "31"], 2, "--fps"),
    (["--max-rate", "inf"], 2, "--max-rate"), (["--max-rate", "-1"], 2, "--max-rate"),
    (["--max-pixels", "-1"], 2, "--max-pixels"), (["--max-pixels", "1e9"], 2, "--max-pixels"),
    (["--port", "65536"], 2, "--port"), (["--port", "-1"], 2, "--port"), (["--port", "http"], 2, "--port"),
    (["--queue-size", "0"], 2, "--queue-size"), (["--max-sessions", "0"], 2, "--max-sessions"),
    (["--max-frame-bytes", "0"], 2, "--max-frame-bytes"), (["--max-session-frames", "0"], 2, "--max-session-frames"),
    (["--max-context-tokens", "0"], 2, "--max-context-tokens"), (["--temperature", "nan"], 2, "--temperature"),
    (["--top-p", "0"], 2, "--top-p"), (["--top-p", "1.5"], 2, "--top-p"), (["--threads", "0"], 2, "--threads"),
    (["--open-timeout", "inf"], 2, "--open-timeout"), (["--idle-timeout", "0"], 2, "--idle-timeout"),
    (["--header-timeout", "nan"], 2, "--header-timeout"), (["--max-connections", "0"], 2, "--max-connections"),
    (["--max-sockets", "-5"], 2, "--max-sockets"), (["--decode-threads", "0"], 2, "--decode-threads"),
    (["--max-pending-queries", "0"], 2, "--max-pending-queries"), (["--query-token-rate", "0"], 2,
                                                                   "--query-token-rate"),
    (["--max-query-tokens", "-1"], 2, "--max-query-tokens"),
    (["--max-message-bytes", "1000"], 1, "--max-message-bytes"), (["--memory", "sink:0"], 2, "--memory"),
    (["--memory", "lots"], 2, "--memory"), (["--memory", "unbounded", "--max-context-tokens", "9"], 1, "--memory"),
    (["--max-reply-tokens", "513"], 2, "--max-reply-tokens must be at most 512"), (["--threshold", "2"], 2,
                                                                                   "--threshold"),
    (["--system", " "], 2, "--system"), (["--repetition-penalty", "0"], 2, "--repetition-penalty"),
    (["--allow-origin", "evil.example"], 1, "--allow-origin"),
    (["--allow-origin", "http://a.example/path"], 1, "--allow-origin"), (["--token", " "], 1, "--token"),
    (["--host", "0.0.0.0"], 1, "refusing to listen on '0.0.0.0' without a token"),
]


@pytest.mark.parametrize("argv, code, words", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_bad_serve_options_are_refused_naming_the_option(argv, code, words, capsys, monkeypatch):
    """Every start option is checked before the model loads: exit 2 (argparse) or 1, one line naming the option."""
    import livecue.commands.serve as serve

    monkeypatch.setattr(serve, "load_from_args", lambda *a: pytest.fail("the model was loaded"))
    try:
        rc = cli.main(["serve", *argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert rc == code and len(lines) == 1 and words in lines[0] and "Traceback" not in err, (rc, err)
    assert lines[0].startswith("livecue serve: error:")


def test_events_are_strict_json():
    text = dumps_event({"type": "silence", "t": 1.0, "p_silence": float("nan"), "x": [float("inf"), 2.0]})
    assert json.loads(text) == {"type": "silence", "t": 1.0, "p_silence": None, "x": [None, 2.0]}
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize("kwargs, words", [
    ({"max_rate": float("inf")}, "max_rate"), ({"idle_timeout": float("nan")}, "idle_timeout"),
    ({"max_pending_queries": 0}, "max_pending_queries"), ({"max_message_bytes": 100, "max_frame_bytes": 100},
                                                          "must hold a binary frame"),
])
def test_limits_refuse_bad_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Limits(**kwargs)
    with pytest.raises(ValueError, match="header_timeout"):
        ServerLimits(header_timeout=float("inf"))


def test_a_client_that_does_not_read_is_disconnected_at_the_outbox_bound():
    """Events waiting for a client that never reads are bounded in bytes: past the bound the connection closes and
    its session is dropped."""
    from livecue.serve import connection as conn_mod

    class FakeScheduler:
        closed: list = []

        def close(self, session, graceful=True):
            self.closed.append((session, graceful))

    async def run() -> tuple:
        c = conn_mod.Connection(ws=None, scheduler=FakeScheduler(), limits=Limits(), model_name="m")
        c.session = "s"
        big = {"type": "reply", "t": 0.0, "text": "x" * 100_000}
        for _ in range(200):
            c.send(big)
        return c.finished, c.outbox.qsize(), c.outbox_bytes, FakeScheduler.closed

    finished, queued, size, closed = asyncio.run(run())
    assert finished and size <= conn_mod.MAX_OUTBOX_BYTES and queued < 100 and closed == [("s", False)]
