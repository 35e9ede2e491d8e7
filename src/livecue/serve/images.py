"""JPEG/PNG frames <-> ``(H, W, 3)`` uint8 RGB arrays with PyAV (no Pillow/OpenCV).

The server decodes only what it recognises by its magic bytes (JPEG, PNG, WebP), with that demuxer named
explicitly: bytes from the network are never probed against every format FFmpeg knows (some, such as playlists,
would open other URLs). The pixel limit is checked on the header's size before anything is decoded.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction

import numpy as np

from .protocol import ProtocolError

log = logging.getLogger(__name__)

_FORMATS = ((b"\xff\xd8\xff", "jpeg_pipe"), (b"\x89PNG\r\n\x1a\n", "png_pipe"))


def image_format(data: bytes) -> str:
    """The FFmpeg demuxer for image bytes, from their magic bytes; ProtocolError if not JPEG/PNG/WebP."""
    for magic, fmt in _FORMATS:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp_pipe"
    raise ProtocolError("bad_image", f"unsupported image format (first bytes {data[:8].hex()}): send JPEG or PNG")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode one JPEG/PNG image to an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ProtocolError: ``bad_image`` for bytes that are not a decodable image, ``too_many_pixels`` when
            width × height exceeds ``max_pixels``.
    """
    import av

    fmt = image_format(data)
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
