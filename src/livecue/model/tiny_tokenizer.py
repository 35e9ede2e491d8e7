"""The packaged tiny tokenizer used by the ``tiny`` preset (tests, benchmarks, examples).

A byte-level BPE with Llama-3's pre-tokenizer regex, so it splits text the way the upstream model's tokenizer does:
``]\\n`` is one token (the "speak" marker of live1+), ``,`` is one token (the silence marker), and any text round
trips. It is trained once, deterministically, on a small corpus of the LIVE template and everyday narration words;
the result is committed as ``assets/tiny_tokenizer/`` so that it never changes with the ``tokenizers`` version.

Regenerate with ``python -m livecue.model.tiny_tokenizer`` (only needed if the corpus below changes).
"""

from __future__ import annotations

from pathlib import Path

from ..config import UPSTREAM_SYSTEM_PROMPT
from ..pretrained import first_line

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_tokenizer"
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
VOCAB_SIZE = 1024

# Llama-3's pre-tokenizer pattern: punctuation runs keep their trailing newlines, so "]\n" is one pre-token.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


def _corpus() -> list[str]:
    words = (
        "the a an and or of to in on at with for from by is are was were you your it its this that these those "
        "what which who where when how many much there here now then next last first after before again just "
        "please concisely narrate video real time use tag C denote camera wearer other letter tags such as X "
        "individuals scene action overall activity format answer no extra text output listing each line number "
        "prefix anticipate actions frames sorry last response wrong cannot see anything input noise seems "
        "red green blue yellow orange purple white black gray pink brown cyan magenta colour color "
        "square circle triangle star diamond cross ring object objects shape shapes small large big tiny "
        "appears disappears moves left right up down changes grows shrinks collides bounces stops turns "
        "picks puts takes opens closes cuts holds looks walks washes hand hands cup box knife table door "
        "one two three four five six seven eight nine ten zero yes not sure doing happened just what".split()
    )
    lines = [UPSTREAM_SYSTEM_PROMPT]
    for i, w in enumerate(words):
        nxt = words[(i * 7 + 3) % len(words)]
        lines.append(f"\nUser: What {w} {nxt}?\nAssistant: The {w} {nxt}.")
        lines.append(f"]\nAssistant: You {w} the {nxt}.<eos>\n[" + ",".join(["v"] * (i % 5 + 1)) + "]\nUser: ")
        lines.append(f"{i}. {w.capitalize()} {nxt}.\n{i + 1}. C {w}s {nxt}.")
    return lines * 4


def build_tiny_tokenizer():
    """Train the tiny tokenizer from scratch (deterministic) and return a ``PreTrainedTokenizerFast``."""
    # tokenizers/transformers load on first use (importing transformers costs seconds), as everywhere in livecue
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[BOS, EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def load_tiny_tokenizer():
    """Load the packaged tiny tokenizer (no network)."""
    from transformers import PreTrainedTokenizerFast  # on first use, as in build_tiny_tokenizer

    if not (ASSET_DIR / "tokenizer.json").exists():
        raise FileNotFoundError(f"the packaged tiny tokenizer is missing from {ASSET_DIR}; reinstall livecue")
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(ASSET_DIR))
    except Exception as e:  # noqa: BLE001 - a damaged install is one line, not a tokenizers traceback
        raise OSError(f"the packaged tiny tokenizer in {str(ASSET_DIR)!r} is damaged ({first_line(e)}); "
                      "reinstall livecue") from None


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer().save_pretrained(str(ASSET_DIR))
    print(f"wrote {ASSET_DIR}")
