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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a whole test module, restored afterwards: tiny models and `livecue serve` run
    fastest so on 2 cores (competing threads slow every step). A module takes it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
