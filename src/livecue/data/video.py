"""Video decoding with PyAV: probe a file and resample it to a target fps on the stream clock.

The stream clock: ``decode_at_fps(path, fps)`` yields ``(t_k, frame)`` for ``t_k = start + k / fps`` (k = 0, 1, …) while
``t_k`` is no later than the video's last frame. The frame at ``t_k`` is the one on screen then: the latest decoded
frame whose presentation time (``pts × time_base``, relative to the first frame) is earlier than ``t_k + ε``, where
``ε`` is half the shortest nominal frame interval of the source (it absorbs timestamp rounding such as 29.97 fps
frames at 1.001 s). Timestamps, not frame counts, drive the resampling, so variable-frame-rate files come out right;
frames repeat when ``fps`` exceeds the source rate (a repeat is the same array object: copy before writing to it) and
are skipped below it (skipped frames are decoded but never converted to RGB, where most of the time goes).

Frames are ``(H, W, 3)`` uint8 RGB numpy arrays, rotated upright when the file carries a display matrix or a
``rotate`` tag. Every failure to open or decode raises :class:`VideoError` with one line naming the path.
:func:`letterbox` turns a batch of frames into the square a vision tower sees (long side to its resolution).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from ..argtypes import FPS

if TYPE_CHECKING:  # annotations only: torch is imported where it is used (letterbox)
    import torch

log = logging.getLogger(__name__)

URL_TIMEOUT = 15.0  # seconds to wait for data when ``path`` is a URL

__all__ = ["VideoError", "VideoInfo", "probe", "decode_at_fps", "read_image", "frame_rotation", "rotate_frame",
           "resize_long_side", "letterbox", "to_rgb", "is_url"]


class VideoError(ValueError):
    """A video that cannot be opened or decoded; the message is one line naming the path and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file.

    Attributes:
        path: the file.
        width: width of the frames as :func:`decode_at_fps` yields them (after rotation).
        height: height of the frames as yielded (after rotation).
        fps: the average frame rate (frames / duration); 0.0 when the container does not say.
        duration: seconds of video, or None when the container does not say.
        codec: the decoder's name (``h264``, ``mpeg4``, …).
        rotation: counter-clockwise degrees (0, 90, 180, 270) applied to make the frames upright.
        num_frames: the number of source frames (from the container, else duration × fps), or None.
    """

    path: str
    width: int
    height: int
    fps: float
    duration: float | None
    codec: str
    rotation: int
    num_frames: int | None


def _error(path: str | os.PathLike, problem: str) -> VideoError:
    return VideoError(f"{problem}: {str(path)!r}")


def _describe(exc: BaseException) -> str:
    """A one-line reason from an av/OS error (no traceback, no newlines)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL such as ``https://host/clip.mp4`` (``scheme://``), not a local file."""
    return isinstance(path, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", path) is not None


def _check_file(path: str | os.PathLike, what: str) -> None:
    if is_url(path):
        return
    p = Path(path)
    if not p.exists():
        raise _error(path, f"{what} file not found")
    if p.is_dir():
        raise _error(path, f"expected a {what} file, got a directory")
    if p.stat().st_size == 0:
        raise _error(path, f"{what} file is empty (0 bytes)")


def _open(path: str | os.PathLike, what: str = "video") -> tuple[Any, Any]:
    """Open ``path`` and return ``(container, video_stream)`` with threaded decoding, or raise VideoError."""
    _check_file(path, what)
    try:
        timeout = (URL_TIMEOUT, URL_TIMEOUT) if is_url(path) else None
        container = av.open(str(path), metadata_errors="replace", timeout=timeout)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _error(path, f"not a readable {what} (corrupt, truncated or not a {what}: {_describe(exc)})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise _error(path, f"no video stream in file (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise _error(path, "no decoder for the video stream's codec")
    stream.thread_type = "AUTO"
    return container, stream


def frame_rotation(frame: Any, stream: Any) -> int:
    """Counter-clockwise degrees (a multiple of 90) that make ``frame`` upright: display matrix, else ``rotate`` tag."""
    degrees = 0.0
    try:
        from av.sidedata.sidedata import Type  # here, in the try: older PyAV builds lack it

        if any(sd.type == Type.DISPLAYMATRIX for sd in frame.side_data):
            degrees = float(frame.rotation)
        else:
            tag = stream.metadata.get("rotate")  # old-style tag: clockwise degrees
            degrees = -float(tag) if tag else 0.0
    except (AttributeError, ImportError, ValueError, TypeError):
        degrees = 0.0
    if math.isnan(degrees):
        return 0
    return (round(degrees / 90.0) % 4) * 90


def rotate_frame(frame: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate an ``(H, W, C)`` array counter-clockwise by ``degrees`` (a multiple of 90), contiguously.

    Args:
        frame: the image, rows top to bottom.
        degrees: counter-clockwise rotation; -90 / 270 turns it clockwise.

    Returns:
        The rotated array (the input itself when ``degrees`` is a multiple of 360).
    """
    if degrees % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {degrees}")
    k = (degrees // 90) % 4
    return frame if k == 0 else np.ascontiguousarray(np.rot90(frame, k))


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(frame: Any, rotation: int = 0, max_side: int | None = None) -> np.ndarray:
    """Convert an ``av.VideoFrame`` to an upright ``(H, W, 3)`` uint8 RGB array (optionally downscaled by swscale)."""
    width, height = _scaled_size(frame.width, frame.height, max_side)
    if (width, height) == (frame.width, frame.height):
        array = frame.to_ndarray(format="rgb24")
    else:
        array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    return rotate_frame(array, rotation)


def resize_long_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale an ``(H, W, 3)`` uint8 RGB array so its longer side is at most ``max_side`` (area filter, swscale).

    Frames already small enough are returned unchanged; the aspect ratio is kept.
    """
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got shape {frame.shape} dtype {frame.dtype}")
    height, width = frame.shape[:2]
    if max(width, height) <= max_side:
        return frame
    new_w, new_h = _scaled_size(width, height, max_side)
    source = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return source.to_ndarray(format="rgb24", width=new_w, height=new_h, interpolation="AREA")


def letterbox(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize so the long side is ``resolution`` and pad to a centred square with black (what a vision tower sees).

    Args:
        frames: ``(F, 3, H, W)`` uint8 or float in [0, 255].

    Returns:
        ``(F, 3, R, R)`` float32 in [0, 255].
    """
    # torch is imported on first use: decoding (sources, the remote client) must not pay seconds for it at import
    import torch.nn.functional as F

    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (F, 3, H, W), got {tuple(frames.shape)}")
    x = frames.float()
    _, _, h, w = x.shape
    if (h, w) != (resolution, resolution):
        scale = resolution / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 255)
        top, left = (resolution - nh) // 2, (resolution - nw) // 2
        x = F.pad(x, (left, resolution - nw - left, top, resolution - nh - top), value=0.0)
    return x


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (png, jpg, bmp, webp, … anything ffmpeg reads) to an upright ``(H, W, 3)`` uint8 RGB array.

    Raises:
        VideoError: missing, empty or unreadable image, naming the path.
    """
    container, stream = _open(path, what="image")
    try:
        frame = next(container.decode(stream), None)
        if frame is None:
            raise _error(path, "unreadable image (no picture decoded)")
        return to_rgb(frame, frame_rotation(frame, stream))
    except av.FFmpegError as exc:
        raise _error(path, f"unreadable image ({_describe(exc)})") from None
    finally:
        container.close()


def _rate(value: Any) -> Fraction | None:
    try:
        rate = Fraction(value) if value is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return rate if rate and rate > 0 else None


def _first_frame(container: Any, stream: Any, path: str | os.PathLike) -> Any:
    try:
        first = next(container.decode(stream), None)
    except (av.FFmpegError, OSError) as exc:
        raise _error(path, f"cannot decode video ({_describe(exc)})") from None
    if first is None:
        raise _error(path, "no decodable video frames (truncated or corrupt file)")
    return first


def _duration(container: Any, stream: Any) -> float | None:
    """Seconds of video according to the stream, else the container; None when neither says."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration is not None else None  # AV_TIME_BASE units


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video file; decodes its first frame, so an undecodable file fails here.

    Raises:
        VideoError: missing, empty, corrupt or non-video file, or no decodable frame.
    """
    container, stream = _open(path)
    try:
        first = _first_frame(container, stream, path)
        rotation = frame_rotation(first, stream)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        rate = _rate(stream.average_rate) or _rate(stream.guessed_rate)
        duration = _duration(container, stream)
        frames = int(stream.frames or 0) or None
        if frames is None and duration is not None and rate is not None:
            frames = max(1, round(duration * float(rate)))
        return VideoInfo(path=str(path), width=width, height=height, fps=float(rate) if rate else 0.0,
                         duration=duration, codec=stream.codec_context.name, rotation=rotation, num_frames=frames)
    finally:
        container.close()


def _epsilon(stream: Any) -> Fraction:
    """Half the shortest nominal frame interval of ``stream`` (1 ms when it states no rate)."""
    rates = [r for r in (_rate(stream.average_rate), _rate(stream.base_rate), _rate(stream.guessed_rate)) if r]
    return 1 / (2 * max(rates)) if rates else Fraction(1, 1000)


def _timed_frames(container: Any, stream: Any, path: str | os.PathLike, origin: int | None,
                  state: dict[str, Any]) -> Iterator[tuple[Fraction, Any]]:
    """Decoded frames with their presentation time relative to ``origin`` (the first frame's pts), in order.

    Missing pts are extrapolated from the previous frame; times never go backwards. A decode error after at least one
    frame ends the iteration with a warning (truncated file); before any frame it raises VideoError.
    """
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
    step = 1 / (_rate(stream.average_rate) or _rate(stream.guessed_rate) or Fraction(25))
    last: Fraction | None = None
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as exc:
            if state["decoded"] == 0:
                raise _error(path, f"cannot decode video ({_describe(exc)})") from None
            log.warning("video %r: decoding stopped after %d frames (truncated or corrupt: %s)", str(path),
                        state["decoded"], _describe(exc))
            return
        pts = frame.pts
        if pts is not None and origin is None:
            origin = pts
        if pts is None or origin is None:
            time = last + step if last is not None else Fraction(0)
        else:
            time = (pts - origin) * time_base
        if last is not None and time < last:
            time = last  # out-of-order or broken timestamps: never go back in time
        last = time
        state["decoded"] += 1
        yield time, frame


def decode_at_fps(path: str | os.PathLike, fps: float, *, max_frames: int | None = None, start: float = 0.0,
                  max_side: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Decode ``path`` resampled to ``fps`` on the stream clock (see the module docstring).

    Args:
        path: a video file in any container/codec ffmpeg decodes (a single image works too: one frame).
        fps: target frames per second (> 0).
        max_frames: stop after this many frames.
        start: video time (seconds from the first frame) of the first tick; ticks are ``start + k / fps`` and the
            yielded ``t`` is that video time.
        max_side: downscale (area filter) so the longer side is at most this many pixels; None keeps the size.

    Yields:
        ``(t, frame)``: ``t`` in seconds, ``frame`` an upright ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ValueError: bad ``fps``/``max_frames``/``start``.
        VideoError: the file is missing, empty, corrupt, has no video stream or no decodable frame. A file that
            breaks off after some frames (truncated) yields those and stops with a logged warning.
    """
    fps = FPS.validate("fps", fps)
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if not isinstance(start, numbers.Real) or not math.isfinite(start) or start < 0:
        raise ValueError(f"start must be >= 0 seconds, got {start!r}")
    return _decode(path, fps, max_frames, start, max_side)


def _decode(path: str | os.PathLike, fps: float, max_frames: int | None, start: float,
            max_side: int | None) -> Iterator[tuple[float, np.ndarray]]:
    if max_frames == 0:
        return
    container, stream = _open(path)
    try:
        origin = None
        if start > 0:
            origin = _seek(container, stream, path, start)
        rate = Fraction(fps).limit_denominator(1_000_000) or Fraction(fps)  # exact when tiny (never 0)
        start_q = Fraction(start).limit_denominator(1_000_000)
        eps = _epsilon(stream)
        state = {"decoded": 0}
        rotation: int | None = None
        current: Any = None  # the frame on screen at the next tick
        cached: np.ndarray | None = None  # its RGB array, once converted
        k = emitted = 0
        last_time = Fraction(0)

        def emit() -> tuple[float, np.ndarray]:
            nonlocal cached
            if cached is None:
                cached = to_rgb(current, rotation or 0, max_side)
            return start + k / fps, cached

        for time, frame in _timed_frames(container, stream, path, origin, state):
            if rotation is None:
                rotation = frame_rotation(frame, stream)
            while current is not None and time >= start_q + k / rate + eps:
                yield emit()
                k += 1
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
            current, cached, last_time = frame, None, time
        if current is None:
            raise _error(path, "no decodable video frames (truncated or corrupt file)")
        expected = _duration(container, stream)
        if expected is not None and float(last_time) < expected - 0.5 - 4 * float(eps):
            log.warning("video %r ends at %.2f s, before the %.2f s its container announces (truncated?)", str(path),
                        float(last_time), expected)
        while start_q + k / rate <= last_time:
            yield emit()
            k += 1
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
    except av.FFmpegError as exc:  # anything the decoder raises outside the guarded paths
        raise _error(path, f"cannot decode video ({_describe(exc)})") from None
    finally:
        container.close()


def _seek(container: Any, stream: Any, path: str | os.PathLike, start: float) -> int | None:
    """Remember the first frame's pts, then seek to the keyframe at or before ``start``; returns the origin pts."""
    origin = _first_frame(container, stream, path).pts
    if origin is None or not stream.time_base:
        container.seek(0)
        return origin
    target = origin + int(Fraction(start).limit_denominator(1_000_000) / Fraction(stream.time_base))
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    except (av.FFmpegError, OSError) as exc:
        log.debug("video %r: seek to %.3f s failed (%s); decoding from the start", str(path), start, exc)
        container.seek(0)
    return origin
