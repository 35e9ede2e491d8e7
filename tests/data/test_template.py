"""Golden strings of the upstream LIVE template (SPEC §2) and its learned spans (SPEC §3)."""

import pytest

from livecue.config import UPSTREAM_SYSTEM_PROMPT
from livecue.data import template as T
from livecue.data.template import StreamCursor, Template

V10 = "<v>" * 10
INSTR = ("Please concisely narrate the video in real time. Use the tag 'C' to denote the camera wearer, and other "
         "letter tags, such as 'X', to denote other individuals in the scene.")


@pytest.fixture
def plus():
    return Template(bos="<|begin_of_text|>", eos="<|eot_id|>", frame_num_tokens=10, frame_interval=",")


@pytest.fixture
def one():
    return Template(bos="<|begin_of_text|>", eos="<|eot_id|>", frame_num_tokens=1, frame_interval="")


def narration(k=3):
    return [
        {"role": "system", "content": UPSTREAM_SYSTEM_PROMPT},
        {"role": "stream", "num_frames": 1, "learn": False},
        {"role": "user", "content": INSTR},
        {"role": "assistant", "content": "You look around.", "learn": True},
        {"role": "stream", "num_frames": k, "learn": True},
        {"role": "assistant", "content": "You pick up the cup.", "learn": True},
        {"role": "stream", "num_frames": 2, "learn": True},
    ]


def test_narration_example_live1_plus(plus):
    text = plus.render(narration()).text
    assert text == (
        "<|begin_of_text|>" + UPSTREAM_SYSTEM_PROMPT + "\n"
        "\n[" + V10 + "]"
        "\nUser: " + INSTR +
        "\nAssistant: You look around.<|eot_id|>"
        "\n[" + V10 + "," + V10 + "," + V10 + "]"
        "\nAssistant: You pick up the cup.<|eot_id|>"
        "\n[" + V10 + "," + V10 + "]"
    )


def test_narration_example_live1(one):
    text = one.render(narration()).text
    assert text == (
        "<|begin_of_text|>" + UPSTREAM_SYSTEM_PROMPT + "\n"
        "\n[<v>]"
        "\nUser: " + INSTR +
        "\nAssistant: You look around.<|eot_id|>"
        "\n[<v><v><v>]"
        "\nAssistant: You pick up the cup.<|eot_id|>"
        "\n[<v><v>]"
    )


@pytest.mark.parametrize("kw,suffix", [
    ({"add_generation_prompt": True}, "\nAssistant:"),
    ({"add_stream_prompt": True}, "\n["),
    ({"add_stream_generation_prompt": True}, "]\nAssistant:"),
])
def test_prompt_suffixes(plus, one, kw, suffix):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    for tpl in (plus, one):
        assert tpl.render(msgs, **kw).text == "<|begin_of_text|>S\n\nUser: hi" + suffix


def test_suffix_constants_and_engine_pieces(plus):
    prompts = (T.GENERATION_PROMPT, T.STREAM_PROMPT, T.STREAM_GENERATION_PROMPT)
    assert prompts == ("\nAssistant:", "\n[", "]\nAssistant:")
    assert plus.stream_start("SYS") == "<|begin_of_text|>SYS\n\n["
    assert plus.query_prompt("what?") == "]\nUser: what?\nAssistant:"
    assert plus.query_prompt("what?", in_stream=False) == "\nUser: what?\nAssistant:"


def test_only_one_suffix(plus):
    with pytest.raises(ValueError, match="at most one"):
        plus.render([], add_generation_prompt=True, add_stream_prompt=True)


def test_zero_frame_stream_renders_nothing(plus):
    msgs = [{"role": "user", "content": "a"}, {"role": "stream", "num_frames": 0, "learn": True},
            {"role": "assistant", "content": "b", "learn": False}]
    r = plus.render(msgs)
    assert r.text == "\nUser: a\nAssistant: b<|eot_id|>"
    assert r.spans == [] and r.num_frames == 0


def _spans(tpl, msgs):
    r = tpl.render(msgs)
    return r, [(r.text[s.start:s.end], s.kind, s.message) for s in r.spans]


def test_learn_spans_live1_plus(plus):
    msgs = [{"role": "system", "content": "S"},
            {"role": "stream", "num_frames": 3, "learn": True},
            {"role": "assistant", "content": "Hi.", "learn": True},
            {"role": "stream", "num_frames": 2, "learn": 1},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "A.", "learn": False},
            {"role": "stream", "num_frames": 2, "learn": False}]
    r, spans = _spans(plus, msgs)
    assert spans == [(",", "silence", 1), (",", "silence", 1), ("]\n", "speak", 1),
                     ("Assistant: Hi.<|eot_id|>", "response", 2), (",", "silence", 3)]
    # the silence spans are exactly the intervals that follow frame 0 and frame 1
    first = r.text.index("[") + 1
    assert r.spans[0].start == first + len(V10) and r.spans[1].start == first + 2 * len(V10) + 1


def test_learn_spans_live1(one):
    msgs = [{"role": "stream", "num_frames": 3, "learn": True},
            {"role": "assistant", "content": "Hi.", "learn": True}]
    r, spans = _spans(one, msgs)
    # live1: empty silence spans sit right after the first two frames; the last frame speaks
    assert spans == [("", "silence", 0), ("", "silence", 0), ("]\n", "speak", 0),
                     ("Assistant: Hi.<|eot_id|>", "response", 1)]
    assert [s.start for s in r.spans[:2]] == [len("\n[<v>"), len("\n[<v><v>")]


def test_learn_int_equal_to_frames_speaks(plus):
    msgs = [{"role": "stream", "num_frames": 2, "learn": 2}, {"role": "user", "content": "q"}]
    _, spans = _spans(plus, msgs)
    assert [s[1] for s in spans] == ["silence", "speak"]


def test_trailing_stream_has_no_speak(plus):
    msgs = [{"role": "stream", "num_frames": 3, "learn": True}]
    _, spans = _spans(plus, msgs)
    assert [s[1] for s in spans] == ["silence", "silence"]
    # ... unless the generation prompt follows it
    r = plus.render(msgs, add_generation_prompt=True)
    assert r.text.endswith("]\nAssistant:") and [s.kind for s in r.spans][-1] == "speak"


@pytest.mark.parametrize("bad,match", [
    ({"role": "robot", "content": "x"}, "role must be one of"),
    ({"role": "user"}, "content must be a string"),
    ({"role": "stream", "num_frames": -1}, "num_frames must be a non-negative integer"),
    ({"role": "stream", "num_frames": 2, "learn": "yes"}, "learn must be"),
    ("hello", "must be a mapping"),
])
def test_malformed_messages_name_the_value(plus, bad, match):
    with pytest.raises(ValueError, match=match):
        plus.render([{"role": "user", "content": "ok"}, bad])


def test_system_must_come_first(plus):
    with pytest.raises(ValueError, match="system message must come first"):
        plus.render([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])


# ---- the stream cursor ----------------------------------------------------------------------------------------------
BOS, EOS, V = -1, -2, -3  # the ids of a character-level "tokenizer": every other character is its code point


def _cursor(tpl, system="S"):
    def text(ids):
        return "".join({BOS: tpl.bos, EOS: tpl.eos, V: tpl.v_placeholder}.get(i) or chr(i) for i in ids)

    encode = lambda s: [ord(c) for c in s]  # noqa: E731
    return StreamCursor(tpl, encode, system, bos=BOS, eos=EOS, v=V), encode, text


@pytest.mark.parametrize("name", ["plus", "one"])
def test_stream_cursor_walks_the_rendered_template(name, request):
    """Fed in order, the cursor's ids spell the rendered conversation: each piece in the forward it belongs to."""
    tpl = request.getfixturevalue(name)
    cursor, encode, text = _cursor(tpl)
    frame = tpl.frame
    fed = [cursor.frame(), cursor.frame()]
    assert [text(ids) for ids in fed] == [tpl.bos + "S\n\n[" + frame, tpl.frame_interval + frame]
    fed.append(cursor.reply())
    assert text(fed[-1]) == "]\nAssistant:"
    reply = encode(" Hi.")
    fed += [[i] for i in reply[:-1]]  # the cap stopped the reply: its last token was never fed
    cursor.end_turn(reply, capped=True)
    fed.append(cursor.query("q?"))
    assert text(fed[-1]) == ".<eos>\nUser: q?\nAssistant:".replace("<eos>", tpl.eos)  # no stream open: no "]"
    answer = encode(" A.")
    fed += [[i] for i in answer]  # eos ended the answer: every token was fed
    cursor.end_turn(answer, capped=False)
    fed.append(cursor.frame())
    assert text(fed[-1]) == tpl.eos + "\n[" + frame
    fed.append(cursor.query("and?"))
    assert text(fed[-1]) == "]\nUser: and?\nAssistant:"
    fed.append(encode(" "))
    cursor.end_turn(encode(" B"), capped=True)
    fed.append(cursor.frame())
    cursor.instruction("Go.")
    assert cursor.pending_text == "]\nUser: Go."  # read with the next frame
    fed += [cursor.frame(), cursor.frame()]
    said = lambda content: {"role": "assistant", "content": content}  # noqa: E731
    rendered = tpl.render([{"role": "system", "content": "S"}, {"role": "stream", "num_frames": 2}, said("Hi."),
                           {"role": "user", "content": "q?"}, said("A."), {"role": "stream", "num_frames": 1},
                           {"role": "user", "content": "and?"}, said("B"), {"role": "stream", "num_frames": 1},
                           {"role": "user", "content": "Go."}, {"role": "stream", "num_frames": 2}]).text
    assert text([i for ids in fed for i in ids]) == rendered[:-1]  # the stream is still open


def test_stream_cursor_without_bos():
    tpl = Template(bos="", eos="</s>", frame_num_tokens=2, frame_interval=",")
    cursor, _, text = _cursor(tpl, system="")
    assert text(cursor.frame()) == "\n\n[<v><v>"


def test_template_needs_no_torch():
    """The template and its cursor are pure: text and token ids in, ids out."""
    import subprocess
    import sys

    code = "import sys, livecue.data.template; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
