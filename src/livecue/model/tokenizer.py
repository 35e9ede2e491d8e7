"""Tokenizers: loading one (hub id, local directory or a saved checkpoint) and making it a model's.

transformers is imported inside the functions (importing it costs seconds; configs and the CLI's help must not pay).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import LiveConfig
from ..data.labels import add_frame_placeholder
from ..pretrained import hub_error
from . import verify


def load_tokenizer(source: str | Path, *, saved: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained(source)`` with one-line errors.

    Args:
        source: a hub id or a local directory.
        saved: ``source`` is a directory livecue or upstream saved a tokenizer into (a checkpoint): its tokenizer
            files must all be there.
    """
    from transformers import AutoTokenizer  # only here: see the module docstring

    if saved:
        verify.check_tokenizer_dir(Path(source))
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as e:  # noqa: BLE001 - tokenizers/JSON/sentencepiece errors become one line naming the source
        raise hub_error("tokenizer", str(source), e) from None


def prepare_tokenizer(tokenizer: Any, cfg: LiveConfig) -> Any:
    """Make a tokenizer the model's: ``cfg.stream.v_placeholder`` added (when the tokenizer lacks it), eos as the pad
    token when it has none. Returns the same tokenizer."""
    add_frame_placeholder(tokenizer, cfg.stream.v_placeholder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
