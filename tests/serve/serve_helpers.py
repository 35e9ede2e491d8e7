"""Helpers shared by the server tests: random frames and a bounded wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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


def start_server(app, ws_max_size: int | None = None) -> tuple[str, Callable[[], None]]:
    """A real uvicorn server for ``app`` on a free loopback port, in a thread; returns ``(url, stop)``."""
    import uvicorn

    from livecue.commands.serve import bind

    sock = bind("127.0.0.1", 0)
    kwargs = {} if ws_max_size is None else {"ws_max_size": ws_max_size}
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", **kwargs))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_until(lambda: srv.started), "the server did not start"

    def stop() -> None:
        srv.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop
