"""Label positions on hand-checked examples (SPEC §3), marker ids from the tokenizer."""

import pytest

from livecue.data.labels import IGNORE, Markers, add_frame_placeholder, tokenize_conversation
from livecue.data.template import Template
from livecue.model.tiny_tokenizer import load_tiny_tokenizer

MSGS = [
    {"role": "stream", "num_frames": 3, "learn": True},
    {"role": "assistant", "content": "Hi.", "learn": True},
    {"role": "stream", "num_frames": 2, "learn": 1},
    {"role": "user", "content": "q"},
    {"role": "stream", "num_frames": 1, "learn": False},
]


@pytest.fixture(scope="module")
def tok():
    t = load_tiny_tokenizer()
    add_frame_placeholder(t, "<v>")
    return t


def _run(tok, k, interval, msgs=MSGS):
    tpl = Template(bos=tok.bos_token, eos=tok.eos_token, frame_num_tokens=k, frame_interval=interval)
    markers = Markers.from_tokenizer(tok, "<v>", interval)
    return tokenize_conversation(tpl.render(msgs), tok, markers, tpl), markers


def _learned(tok, t):
    return {i: tok.convert_ids_to_tokens(lab) for i, lab in enumerate(t.labels) if lab != IGNORE}


def test_markers_come_from_the_tokenizer(tok):
    m = Markers.from_tokenizer(tok, "<v>", ",")
    assert m.v == tok.convert_tokens_to_ids("<v>")
    assert m.silence == tok(",", add_special_tokens=False).input_ids[0]
    assert m.eos == tok.eos_token_id and m.bos == tok.bos_token_id
    assert m.speak == tuple(tok("]\n", add_special_tokens=False).input_ids) and len(m.speak) == 1
    assert Markers.from_tokenizer(tok, "<v>", "").silence == tok.eos_token_id  # live1: streaming EOS


def test_add_placeholder_is_idempotent(tok):
    n = len(tok)
    assert add_frame_placeholder(tok, "<v>") == tok.convert_tokens_to_ids("<v>")
    assert len(tok) == n


def test_live1_plus_label_positions(tok):
    # tokens: 0 \n, 1 [, 2-3 <v><v>, 4 ",", 5-6, 7 ",", 8-9, 10 "]\n", 11 Assistant, 12 ":", 13 " H", 14 "i",
    # 15 ".", 16 eos, 17 \n, 18 [, 19-20, 21 ",", 22-23, 24 "]\n", 25 User, ... 31-32 <v><v>, 33 "]"
    t, _ = _run(tok, 2, ",")
    assert _learned(tok, t) == {
        3: ",", 6: ",",           # last <v> of non-final frames: stay silent
        9: "]Ċ",                  # last <v> of the final frame: speak
        10: "Assistant", 11: ":", 12: "ĠH", 13: "i", 14: ".", 15: "<|eos|>",  # the response through eos
        20: ",",                  # learn=1: only the first frame of the second segment
    }
    assert t.num_frames == 6 and t.input_ids.count(tok.convert_tokens_to_ids("<v>")) == 12


def test_live1_label_positions(tok):
    # live1: one <v> per frame, no interval: silence is eos on the frame's <v>
    # tokens: 0 \n, 1 [, 2 3 4 <v>, 5 "]\n", 6 Assistant, 7 ":", 8 " H", 9 "i", 10 ".", 11 eos, 12 \n, 13 [, 14 15 <v>
    t, _ = _run(tok, 1, "")
    assert _learned(tok, t) == {
        2: "<|eos|>", 3: "<|eos|>", 4: "]Ċ",
        5: "Assistant", 6: ":", 7: "ĠH", 8: "i", 9: ".", 10: "<|eos|>",
        14: "<|eos|>",
    }


def test_learn_false_learns_nothing(tok):
    msgs = [{"role": "stream", "num_frames": 4, "learn": False}, {"role": "assistant", "content": "x", "learn": False}]
    t, _ = _run(tok, 2, ",", msgs)
    assert all(lab == IGNORE for lab in t.labels)


def gpt2_style_tokenizer():
    """A byte-level BPE with GPT-2's pre-tokenizer: it splits ']\\n' into ']' and '\\n' (like SmolLM2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(["]\nAssistant: Hello there.\nUser: what?"] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>")
    add_frame_placeholder(fast, "<v>")
    return fast


def test_split_speak_marker_learns_both_tokens():
    tok = gpt2_style_tokenizer()
    m = Markers.from_tokenizer(tok, "<v>", ",")
    assert [tok.convert_ids_to_tokens(i) for i in m.speak] == ["]", "Ċ"]
    t, _ = _run(tok, 1, ",", [{"role": "stream", "num_frames": 2, "learn": True},
                              {"role": "assistant", "content": "Hello", "learn": True}])
    learned = _learned(tok, t)
    v_pos = [i for i, x in enumerate(t.input_ids) if x == m.v]
    assert learned[v_pos[0]] == ","
    assert learned[v_pos[1]] == "]"              # the frame's last <v> predicts the first token of "]\n"
    assert learned[v_pos[1] + 1] == "Ċ"          # ... and "]" predicts "\n"
    assert learned[v_pos[1] + 2] == "Assistant"


def test_interval_must_be_one_token(tok):
    with pytest.raises(ValueError, match=r"frame interval .*'ab, ' must be a single token"):
        Markers.from_tokenizer(tok, "<v>", "ab, ")


def test_missing_placeholder_is_explained():
    tok = load_tiny_tokenizer()
    with pytest.raises(ValueError, match="has no '<w>' token"):
        Markers.from_tokenizer(tok, "<w>", ",")


def test_frame_count_mismatch_raises(tok):
    tpl = Template(bos=tok.bos_token, eos=tok.eos_token, frame_num_tokens=2, frame_interval=",")
    r = tpl.render([{"role": "stream", "num_frames": 2, "learn": True}])
    r.num_frames = 3
    with pytest.raises(ValueError, match="4 '<v>' tokens but 3 frames x 2 tokens = 6"):
        tokenize_conversation(r, tok, Markers.from_tokenizer(tok, "<v>", ","), tpl)
