"""Chat formats cut out of each VLM family's chat template: golden strings, label positions, markers and the stream
cursor, on family-like fixture tokenizers (tests/data/chat_families.py)."""

import pytest
import torch
from chat_families import FAMILIES, family_template, family_tokenizer

from livecue.config import preset
from livecue.data.chat_format import ChatFormat
from livecue.data.dataset import StreamDataset, collate
from livecue.data.labels import IGNORE, Markers, add_frame_placeholder, tokenize_conversation
from livecue.data.template import StreamCursor, Template
from livecue.model.tiny_tokenizer import load_tiny_tokenizer

NAMES = list(FAMILIES)
QWEN_F = "<|vision_start|>" + "<|image_pad|>" * 2 + "<|vision_end|>"
LLAVA_F = "<image>" * 2
SMOL_F = "<fake_token_around_image><global-img>" + "<image>" * 2 + "<fake_token_around_image>"
GEMMA_F = "<start_of_image>" + "<image_soft_token>" * 2 + "<end_of_image>"

MSGS = [
    {"role": "system", "content": "S"},
    {"role": "stream", "num_frames": 1, "learn": False},
    {"role": "user", "content": "Go."},
    {"role": "stream", "num_frames": 2, "learn": True},
    {"role": "assistant", "content": "Hi.", "learn": True},
    {"role": "stream", "num_frames": 2, "learn": 1},
]


def chatml(frame):
    return ("<|im_start|>system\nS<|im_end|>\n"
            "<|im_start|>user\n" + frame + "<|im_end|>\n"
            "<|im_start|>user\nGo.<|im_end|>\n"
            "<|im_start|>user\n" + frame + "," + frame + "<|im_end|>\n"
            "<|im_start|>assistant\nHi.<|im_end|>\n"
            "<|im_start|>user\n" + frame + "," + frame + "<|im_end|>\n")


GOLDEN = {
    "qwen2_5_vl": chatml(QWEN_F),
    "qwen3_vl": chatml(QWEN_F),
    "llava_onevision": chatml(LLAVA_F),
    "smolvlm": ("<|im_start|>System: S<end_of_utterance>\n"
                "User: " + SMOL_F + "<end_of_utterance>\n"
                "User: Go.<end_of_utterance>\n"
                "User: " + SMOL_F + "," + SMOL_F + "<end_of_utterance>\n"
                "Assistant: Hi.<end_of_utterance>\n"
                "User: " + SMOL_F + "," + SMOL_F + "<end_of_utterance>\n"),
    "gemma3": ("<bos><start_of_turn>user\nS\n\n" + GEMMA_F + "<end_of_turn>\n"  # no system role: S opens the turn
               "<start_of_turn>user\nGo.<end_of_turn>\n"
               "<start_of_turn>user\n" + GEMMA_F + "," + GEMMA_F + "<end_of_turn>\n"
               "<start_of_turn>model\nHi.<end_of_turn>\n"
               "<start_of_turn>user\n" + GEMMA_F + "," + GEMMA_F + "<end_of_turn>\n"),
}

# learned positions in order: (input token, target token)
CHATML_LABELS = [
    ("<|vision_end|>", ","),            # frame 1 of the learned segment: stay silent
    ("<|vision_end|>", "<|im_end|>"),   # its last frame: speak (the stream turn's end)
    ("<|im_end|>", "Ċ"),                # ... the rest of the speak marker
    ("Ċ", "<|im_start|>"), ("<|im_start|>", "a"), ("a", "ssistant"), ("ssistant", "Ċ"),  # the reply's turn opening
    ("Ċ", "H"), ("H", "i"), ("i", "."), (".", "<|im_end|>"),                            # content and end token
    ("<|vision_end|>", ","),            # learn=1: the first frame of the last segment
]
LABELS = {
    "qwen2_5_vl": CHATML_LABELS,
    "qwen3_vl": CHATML_LABELS,
    "llava_onevision": [("<image>" if x == "<|vision_end|>" else x, y) for x, y in CHATML_LABELS],
    "smolvlm": [("<fake_token_around_image>", ","), ("<fake_token_around_image>", "<end_of_utterance>"),
                ("<end_of_utterance>", "Ċ"), ("Ċ", "Assistant"), ("Assistant", ":"), (":", "ĠH"), ("ĠH", "i"),
                ("i", "."), (".", "<end_of_utterance>"), ("<fake_token_around_image>", ",")],
    "gemma3": [("<end_of_image>", ","), ("<end_of_image>", "<end_of_turn>"), ("<end_of_turn>", "Ċ"),
               ("Ċ", "<start_of_turn>"), ("<start_of_turn>", "m"), ("m", "o"), ("o", "d"), ("d", "el"), ("el", "Ċ"),
               ("Ċ", "H"), ("H", "i"), ("i", "."), (".", "<end_of_turn>"), ("<end_of_image>", ",")],
}

CHATML_FORMAT = dict(eos="<|im_end|>", bos="", system_prefix="<|im_start|>system\n", system_suffix="<|im_end|>\n",
                     user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n",
                     assistant_prefix="<|im_start|>assistant\n", assistant_suffix="<|im_end|>\n",
                     stream_prefix="<|im_start|>user\n", stream_suffix="<|im_end|>\n",
                     generation_prompt="<|im_start|>assistant\n")
FORMATS = {
    "qwen2_5_vl": ChatFormat(**CHATML_FORMAT),  # its default system prompt never shows: livecue always gives one
    "qwen3_vl": ChatFormat(**CHATML_FORMAT),
    "llava_onevision": ChatFormat(**CHATML_FORMAT),  # typed contents only: rendered with [{"type": "text", ...}]
    "smolvlm": ChatFormat(eos="<end_of_utterance>", bos="<|im_start|>", system_prefix="System: ",
                          system_suffix="<end_of_utterance>\n", user_prefix="User: ",
                          user_suffix="<end_of_utterance>\n",
                          assistant_prefix="Assistant: ", assistant_suffix="<end_of_utterance>\n",
                          stream_prefix="User: ", stream_suffix="<end_of_utterance>\n",
                          generation_prompt="Assistant:"),
    "gemma3": ChatFormat(eos="<end_of_turn>", bos="<bos>", system_prefix="<start_of_turn>user\n", system_suffix="\n\n",
                         user_prefix="<start_of_turn>user\n", user_suffix="<end_of_turn>\n",
                         assistant_prefix="<start_of_turn>model\n", assistant_suffix="<end_of_turn>\n",
                         stream_prefix="<start_of_turn>user\n", stream_suffix="<end_of_turn>\n",
                         generation_prompt="<start_of_turn>model\n", system_in_user=True),
}


@pytest.fixture(scope="module", params=NAMES)
def family(request):
    tok = family_tokenizer(request.param)
    tpl, markers = family_template(request.param, tok)
    return request.param, tok, tpl, markers


def test_format_is_cut_out_of_the_chat_template(family):
    name, tok, tpl, _ = family
    assert ChatFormat.from_chat_template(tok) == tpl.chat == FORMATS[name]


def test_golden_rendering(family):
    name, _, tpl, _ = family
    assert tpl.render(MSGS).text == GOLDEN[name]


def test_golden_label_positions(family):
    name, tok, tpl, markers = family
    t = tokenize_conversation(tpl.render(MSGS), tok, markers, tpl)
    learned = [(i, tok.convert_ids_to_tokens(t.input_ids[i]), tok.convert_ids_to_tokens(y))
               for i, y in enumerate(t.labels) if y != IGNORE]
    assert [(x, y) for _, x, y in learned] == LABELS[name]
    # the decisions sit on the frame's last token: each frame_end of a learned frame, and nowhere else
    decided = [i for i, _, y in learned if t.input_ids[i] == markers.frame_end]
    assert [t.labels[i] for i in decided] == [markers.silence, markers.speak[0], markers.silence]
    assert [tok.convert_ids_to_tokens(t.input_ids[i]) for i in t.turn_ends] == [FORMATS[name].eos]
    assert t.input_ids.count(markers.v) == 5 * tpl.frame_num_tokens and t.num_frames == 5


def test_markers_come_from_the_family(family):
    name, tok, tpl, m = family
    fam = FAMILIES[name]
    ids = tok.convert_tokens_to_ids
    assert m.v == ids(fam.v_placeholder)
    assert m.frame_end == (ids(fam.frame_suffix) if fam.frame_suffix else m.v)
    assert m.eos == ids(FORMATS[name].eos) and m.silence == tok(",", add_special_tokens=False).input_ids[0]
    assert m.speak == tuple(tok(FORMATS[name].stream_suffix, add_special_tokens=False).input_ids)
    assert m.frame(2) == tok(tpl.frame, add_special_tokens=False).input_ids
    assert m.interval == (m.silence,)


def test_gemma_eos_is_not_the_reply_end():
    """Gemma's tokenizer eos (<eos>) is not what ends a turn: the reply's end token is <end_of_turn>."""
    tok = family_tokenizer("gemma3")
    _, m = family_template("gemma3", tok)
    assert m.eos == tok.convert_tokens_to_ids("<end_of_turn>") != tok.eos_token_id


def test_dataset_sample_in_a_chat_format(family):
    """A record through StreamDataset: labels as above, the frames, and the replies' end tokens (the end token
    also closes the system and user turns, which are no turn boundaries)."""
    name, tok, tpl, markers = family
    record = {"id": "r", "fps": 2.0, "messages": MSGS[1:]}
    ds = StreamDataset([record], tok, tpl, frames=lambda r: torch.zeros(5, 3, 4, 4, dtype=torch.uint8),
                       system_prompt="S")
    s = ds[0]
    assert ds.markers == markers and s.input_ids.tolist() == tok(GOLDEN[name], add_special_tokens=False).input_ids
    assert [int(s.input_ids[i]) for i in s.turn_ends] == [markers.eos] and s.input_ids.tolist().count(markers.eos) > 1
    batch = collate([s, s], tok.pad_token_id)
    assert batch["frames"].shape[0] == 10 and (batch["labels"][0] == s.labels).all()


# ---- the stream cursor walks the same format -----------------------------------------------------------------------
def _encode(tok):
    """The engine's text encoder: special-token strings in the text stay plain text."""
    return lambda text: tok(text, add_special_tokens=False, split_special_tokens=True).input_ids


def _reply(tok, fmt, content):
    """A reply's ids as the model writes them after the generation prompt."""
    gap = fmt.assistant_prefix[len(fmt.generation_prompt):] if fmt.assistant_prefix.startswith(
        fmt.generation_prompt) else ""
    return _encode(tok)(gap + content)


def _walk(tok, tpl, markers):
    """Feed a stream through the cursor (frames, replies capped or ended, a query, an instruction): the ids fed, and
    the rendered conversation tokenized (the stream still open)."""
    fmt = tpl.chat
    cursor = StreamCursor(tpl, _encode(tok), "S", markers=markers)
    fed = [cursor.frame(), cursor.frame(), cursor.reply()]
    reply = _reply(tok, fmt, "Hi.")
    fed += [[i] for i in reply[:-1]]  # the cap stopped it: the last token is fed with the end token
    cursor.end_turn(reply, capped=True)
    fed.append(cursor.query("q?"))
    answer = _reply(tok, fmt, "A.")
    fed += [[i] for i in answer]
    cursor.end_turn(answer, capped=False)
    fed += [cursor.frame(), cursor.query("and?")]
    late = _reply(tok, fmt, "B")
    fed += [[i] for i in late[:-1]]
    cursor.end_turn(late, capped=True)
    fed.append(cursor.frame())
    cursor.instruction("Go.")
    fed += [cursor.frame(), cursor.frame()]
    said = lambda content: {"role": "assistant", "content": content}  # noqa: E731
    text = tpl.render([{"role": "system", "content": "S"}, {"role": "stream", "num_frames": 2}, said("Hi."),
                       {"role": "user", "content": "q?"}, said("A."), {"role": "stream", "num_frames": 1},
                       {"role": "user", "content": "and?"}, said("B"), {"role": "stream", "num_frames": 1},
                       {"role": "user", "content": "Go."}, {"role": "stream", "num_frames": 2}]).text
    assert text.endswith(fmt.stream_suffix)
    open_stream = text[:len(text) - len(fmt.stream_suffix)]
    return [i for ids in fed for i in ids], tok(open_stream, add_special_tokens=False).input_ids


def test_cursor_ids_are_the_rendered_conversation(family):
    _, tok, tpl, markers = family
    fed, rendered = _walk(tok, tpl, markers)
    assert fed == rendered


def test_live_cursor_with_markers_is_the_rendered_conversation():
    """The LIVE format through the same path (markers=, as the engine does): bos and eos fed as ids."""
    tok = load_tiny_tokenizer()
    add_frame_placeholder(tok, "<v>")
    tpl = Template(bos=tok.bos_token, eos=tok.eos_token, frame_num_tokens=3, frame_interval=",")
    fed, rendered = _walk(tok, tpl, Markers.from_template(tok, tpl))
    assert fed == rendered and fed[0] == tok.bos_token_id


def test_cursor_query_before_any_frame(family):
    _, tok, tpl, markers = family
    cursor = StreamCursor(tpl, _encode(tok), "S", markers=markers)
    fed = cursor.query("q?")
    answer = _reply(tok, tpl.chat, "A.")
    fed += answer
    cursor.end_turn(answer, capped=False)
    fed += cursor.frame()
    text = tpl.render([{"role": "system", "content": "S"}, {"role": "user", "content": "q?"},
                       {"role": "assistant", "content": "A."}, {"role": "stream", "num_frames": 1}]).text
    assert fed == tok(text[:len(text) - len(tpl.chat.stream_suffix)], add_special_tokens=False).input_ids


def test_cursor_keeps_user_text_plain(family):
    _, tok, tpl, markers = family
    cursor = StreamCursor(tpl, _encode(tok), "S", markers=markers)
    cursor.frame()
    ids = cursor.query(tpl.chat.eos)  # a user who types the end token's string does not end the turn
    assert ids.count(markers.eos) == tpl.chat.stream_suffix.count(tpl.chat.eos) + tpl.chat.user_suffix.count(
        tpl.chat.eos)


def test_cursor_needs_markers_for_a_chat_format(family):
    _, tok, tpl, markers = family
    with pytest.raises(ValueError, match="pass markers="):
        StreamCursor(tpl, _encode(tok), "S", bos=markers.bos, eos=markers.eos, v=markers.v)


# ---- the config picks the format -----------------------------------------------------------------------------------
def test_from_config_picks_the_format():
    tok = family_tokenizer("qwen2_5_vl")
    cfg = preset("tiny", ["stream.chat_format=template", "stream.v_placeholder=<|image_pad|>",
                          "stream.frame_prefix=<|vision_start|>", "stream.frame_suffix=<|vision_end|>"])
    tpl = Template.from_config(cfg, tok)
    assert tpl.chat == FORMATS["qwen2_5_vl"] and tpl.eos == "<|im_end|>"
    assert tpl.frame == "<|vision_start|>" + "<|image_pad|>" * cfg.frame_num_tokens + "<|vision_end|>"
    live = Template.from_config(preset("tiny"), tok)  # the default: upstream LIVE text with the tokenizer's eos
    assert live.chat == ChatFormat.live("", "<|im_end|>") and live.render(MSGS[:2]).text.startswith("S\n\n[")


@pytest.mark.parametrize("key,value,match", [
    ("chat_format", "chatml", "stream.chat_format must be one of live, template"),
    ("frame_suffix", "<v>x", "stream.frame_suffix '<v>x' must not contain the placeholder"),
])
def test_config_checks_the_new_fields(key, value, match):
    with pytest.raises(ValueError, match=match):
        preset("tiny", [f"stream.{key}={value}"])


# ---- errors --------------------------------------------------------------------------------------------------------
def _with_template(jinja):
    tok = family_tokenizer("qwen2_5_vl")
    tok.chat_template = jinja
    return tok


@pytest.mark.parametrize("jinja,match", [
    (None, "has no chat template"),
    ("{% for m in messages if m['role'] != 'system' %}{{ m['content'] }}{% endfor %}",
     "cannot render a system/user/assistant conversation"),
    ("{% for m in messages %}[{{ loop.index }}] {{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
     "{% if add_generation_prompt %}assistant: {% endif %}", "neither precedes nor opens a user turn"),
    ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}",
     "every user and assistant turn must be marked"),
    ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
     "{% if add_generation_prompt %}assistant:{% endif %}", "does not start with one end token"),
    ("{% for m in messages %}<|im_start|>{{ m['role'] }} \n{{ m['content'] }}<|im_end|>\n{% endfor %}"
     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", "generation prompt .* differ"),
])
def test_a_template_that_cannot_be_cut_is_one_error_naming_the_tokenizer(jinja, match):
    with pytest.raises(ValueError, match=f"tiny-qwen2_5_vl.*{match}|{match}.*tiny-qwen2_5_vl"):
        ChatFormat.from_chat_template(_with_template(jinja))


def test_frame_suffix_must_be_one_token():
    tok = family_tokenizer("qwen2_5_vl")
    chat = ChatFormat.from_chat_template(tok)
    tpl = Template(bos="", eos=chat.eos, v_placeholder="<|image_pad|>", frame_suffix="<|vision_end|>end", chat=chat)
    with pytest.raises(ValueError, match=r"frame_suffix '<\|vision_end\|>end' must be a single token"):
        Markers.from_template(tok, tpl)


def test_chat_format_needs_an_interval():
    """Without an interval silence would be the end token, which is also how the stream turn ends (speak)."""
    tok = family_tokenizer("qwen2_5_vl")
    chat = ChatFormat.from_chat_template(tok)
    tpl = Template(bos="", eos=chat.eos, v_placeholder="<|image_pad|>", frame_interval="", chat=chat)
    with pytest.raises(ValueError, match="cannot tell speaking from silence"):
        Markers.from_template(tok, tpl)


def test_live_format_pieces():
    """The LIVE format as a ChatFormat: the upstream strings (SPEC §2)."""
    fmt = ChatFormat.live("<s>", "</s>")
    assert (fmt.system_prefix, fmt.system_suffix, fmt.user_prefix, fmt.assistant_prefix, fmt.assistant_suffix) == \
        ("<s>", "\n", "\nUser: ", "\nAssistant: ", "</s>")
    assert (fmt.stream_prefix, fmt.stream_suffix, fmt.speak_extra, fmt.generation_prompt) == \
        ("\n[", "]", "\n", "\nAssistant:")
    assert Template(bos="<s>", eos="</s>").chat == fmt
    with pytest.raises(ValueError, match="must start with the reply's end token"):
        ChatFormat(eos="<e>", assistant_suffix="\n<e>")
