"""Helpers shared by the server tests: random frames and a bounded wait."""

from __future__ import annotations

import time

import numpy as np


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
