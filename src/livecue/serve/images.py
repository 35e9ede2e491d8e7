"""JPEG/PNG/WebP frames <-> ``(H, W, 3)`` uint8 RGB arrays with PyAV (no Pillow/OpenCV).

The server decodes only what it recognises by its magic bytes (JPEG, PNG, WebP), with that demuxer named
explicitly: bytes from the network are never probed against every format FFmpeg knows (some, such as playlists,
would open other URLs). The pixel limit is checked on every size the header bytes declare
(:mod:`livecue.serve.imagesize`) **before** any decoder sees them, so a tiny file that declares a huge picture costs
nothing; and at most ``workers`` images are decoded at once across the server (:class:`DecodePool`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np

from .imagesize import check_declared_size, image_kind
from .protocol import ProtocolError

log = logging.getLogger(__name__)

_DEMUXERS = {"jpeg": "jpeg_pipe", "png": "png_pipe", "webp": "webp_pipe"}


def image_format(data: bytes) -> str:
    """The FFmpeg demuxer for image bytes, from their magic bytes; ProtocolError if not JPEG/PNG/WebP."""
    return _DEMUXERS[image_kind(data)]


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode one JPEG/PNG/WebP image to an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ProtocolError: ``bad_image`` for bytes that are not a decodable image, ``too_many_pixels`` when
            width × height exceeds ``max_pixels`` (checked on the header bytes before decoding).
    """
    fmt = image_format(data)
    check_declared_size(data, max_pixels)  # before any decoder allocates
    import av

    try:
        with av.open(io.BytesIO(data), format=fmt) as container:
            if not container.streams.video:
                raise ProtocolError("bad_image", "the image has no picture")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            _check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels)
            frame = next(container.decode(stream), None)
            if frame is None:
                raise ProtocolError("bad_image", f"no picture could be decoded from the {fmt[:-5].upper()} bytes")
            _check_pixels(frame.width, frame.height, max_pixels)
            return frame.to_ndarray(format="rgb24")
    except ProtocolError:
        raise
    except (av.FFmpegError, ValueError, OSError, StopIteration) as e:
        raise ProtocolError("bad_image", f"cannot decode the {fmt[:-5].upper()} image: "
                                         f"{' '.join(str(e).split()) or type(e).__name__}") from None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ProtocolError("too_many_pixels", f"frame is {width}x{height} = {width * height} pixels; the limit is "
                                               f"{max_pixels}")


class DecodePool:
    """At most ``workers`` image decodes at once across the whole server, off the event loop.

    Every connection awaits its own frame's decode, so at most one decode per connection waits for a worker; the
    memory in flight is bounded by ``workers`` decoded frames, whatever the number of clients.

    Args:
        workers: decode threads (>= 1).
        decode: the decode function (tests replace it).
    """

    def __init__(self, workers: int = 2, decode: Callable[[bytes, int], np.ndarray] = decode_image) -> None:
        if workers < 1:
            raise ValueError(f"decode workers must be >= 1, got {workers}")
        self.workers = workers
        self._decode = decode
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="livecue-decode")
        self._lock = threading.Lock()
        self.active = 0       # decodes running now
        self.peak = 0         # the most that ever ran at once

    async def decode(self, data: bytes, max_pixels: int) -> np.ndarray:
        """Decode ``data`` on a pool thread (see :func:`decode_image`)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, data, max_pixels)

    def _run(self, data: bytes, max_pixels: int) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            return self._decode(data, max_pixels)
        finally:
            with self._lock:
                self.active -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def encode_image(frame: np.ndarray, format: str = "jpeg", quality: int = 4) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 RGB array as JPEG (default) or PNG bytes.

    Args:
        frame: the picture.
        format: ``"jpeg"`` or ``"png"``.
        quality: JPEG quantiser scale, 2 (best) to 31 (smallest).
    """
    import av

    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 array, got {type(frame).__name__} "
                         f"{getattr(frame, 'shape', '')} {getattr(frame, 'dtype', '')}")
    if format not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {format!r}")
    h, w = frame.shape[:2]
    codec = av.CodecContext.create("mjpeg" if format == "jpeg" else "png", "w")
    codec.width, codec.height = frame.shape[1], frame.shape[0]
    codec.pix_fmt = "rgb24" if format == "png" else "yuvj444p" if h % 2 or w % 2 else "yuvj420p"  # 4:2:0 needs even
    codec.time_base = Fraction(1, 25)
    if format == "jpeg":
        q = str(max(2, min(31, int(quality))))
        codec.options = {"qmin": q, "qmax": q}
    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format=codec.pix_fmt)
    packets = list(codec.encode(picture)) + list(codec.encode(None))
    return b"".join(bytes(p) for p in packets)
