import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """The tiny preset model and tokenizer (random init, seed 0), float32 on CPU."""
    from livecue.config import preset
    from livecue.model.build import build_model

    return build_model(preset("tiny"))
