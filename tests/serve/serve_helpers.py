"""Helpers shared by the server tests: random frames and a bounded wait."""

from __future__ import annotations

import time

import numpy as np
import pytest


def frames(n: int, seed: int = 0, shape=(48, 64)) -> list[np.ndarray]:
    """``n`` random ``(H, W, 3)`` uint8 frames."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def wait_until(predicate, timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds have passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread, as `livecue serve` uses on 2 cores (competing threads slow every step tenfold). A test
    module takes it with ``from serve_helpers import one_torch_thread  # noqa: F401`` (autouse: applied to every
    test of that module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
