"""Sources of timed frames: everything the pipeline can watch yields ``(t, frame)``.

``t`` is the stream time in seconds and ``frame`` an upright ``(H, W, 3)`` uint8 RGB numpy array. Offline sources
(:class:`FileSource`, :class:`ArraySource`, :class:`ImageDirSource`) put frame ``k`` at ``t = k / fps`` and can be
consumed as fast as the reader likes; a :class:`LiveSource` (webcam, RTSP/HTTP/HLS/UDP stream) runs on the wall clock
and yields the newest captured frame at each tick. :func:`open_source` picks the right one for a spec. Opening
failures raise :class:`SourceError` (a ``ValueError``) with one line naming the file, directory, URL or device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.video import VideoError, decode_at_fps, frame_rotation, is_url, probe, read_image, to_rgb
from .options import check_option

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "ArraySource", "FileSource", "ImageDirSource", "LiveSource", "Source", "SourceError",
           "open_source"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_VIDEO_FILE_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ogv", ".wmv")


class SourceError(ValueError):
    """A source that cannot be opened or read; the message is one line naming the source."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "strerror", None) or exc or type(exc).__name__).split())


def _check_fps(fps: float) -> float:
    """The stream option ``fps``, checked by its one checker (ValueError naming it and its range)."""
    return check_option("fps", float(fps) if isinstance(fps, numbers.Real) and not isinstance(fps, bool) else fps)


class Source:
    """Base of all sources: an iterable of ``(t, frame)`` that can be closed (also as a context manager).

    Attributes:
        name: what is being watched (file name, directory, URL or device), for messages.
        live: True for wall-clock sources (cameras, network streams); False for files, folders and arrays.
        fps: frames per second on the stream clock.
        info: descriptive metadata (size, codec, …) for logs and summaries.
        max_frames: stop after this many frames (None: until the source ends).
    """

    live: bool = False

    def __init__(self, name: str, fps: float, *, max_frames: int | None = None) -> None:
        if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 0):
            raise ValueError(f"max_frames must be >= 0, got {max_frames!r}")
        self.name = name
        self.fps = _check_fps(fps)
        self.max_frames = max_frames
        self.info: dict[str, Any] = {}
        self._closed = threading.Event()

    def _frames(self) -> Iterator[tuple[float, np.ndarray]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        frames = self._frames()
        count = 0
        try:
            while (self.max_frames is None or count < self.max_frames) and not self._closed.is_set():
                item = next(frames, None)
                if item is None:
                    return
                yield item
                count += 1
        finally:
            frames.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop the source; a loop iterating it (on any thread) ends at its next frame. Idempotent."""
        self._closed.set()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps:g}{', live' if self.live else ''})"


class FileSource(Source):
    """A video file (or a URL to one) resampled to ``fps`` by presentation timestamps (:func:`decode_at_fps`).

    The file is probed on construction, so a missing, empty, corrupt or non-video file fails here. ``max_side``
    downscales frames so their longer side is at most that many pixels (None: native size).
    """

    def __init__(self, path: str | os.PathLike, fps: float, max_frames: int | None = None, *,
                 max_side: int | None = None) -> None:
        super().__init__(str(path) if is_url(str(path)) else Path(path).name, fps, max_frames=max_frames)
        self.path = str(path)
        self.max_side = max_side
        try:
            video = probe(self.path)
        except VideoError as exc:
            raise SourceError(str(exc)) from None
        self.info = {("source_fps" if k == "fps" else k): v for k, v in dataclasses.asdict(video).items()}

    def _frames(self) -> Iterator[tuple[float, np.ndarray]]:
        try:
            yield from decode_at_fps(self.path, self.fps, max_side=self.max_side)
        except VideoError as exc:
            raise SourceError(str(exc)) from None


class ArraySource(Source):
    """Frames in memory (an ``(N, H, W, 3)`` uint8 array or a list of ``(H, W, 3)`` ones), frame i at t = i / fps."""

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], fps: float, max_frames: int | None = None,
                 *, name: str = "<array>") -> None:
        super().__init__(name, fps, max_frames=max_frames)
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(f"expected an (N, H, W, 3) uint8 array of frames, got shape {frames.shape} "
                                 f"dtype {frames.dtype}")
        elif not isinstance(frames, (list, tuple)):
            raise TypeError(f"expected a numpy array or a list of arrays, got {type(frames).__name__}")
        for i, f in enumerate(frames):
            if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8 \
                    or min(f.shape[:2]) == 0:
                raise ValueError(f"frame {i}: expected an (H, W, 3) uint8 image, got {type(f).__name__} "
                                 f"shape {getattr(f, 'shape', None)} dtype {getattr(f, 'dtype', None)}")
        if len(frames) == 0:
            raise ValueError("no frames: the array source is empty")
        self.frames = frames
        self.info = {"num_frames": len(frames), "height": int(frames[0].shape[0]), "width": int(frames[0].shape[1])}

    def _frames(self) -> Iterator[tuple[float, np.ndarray]]:
        for i, frame in enumerate(self.frames):
            yield i / self.fps, np.ascontiguousarray(frame)


def _natural_key(path: Path) -> list[Any]:
    """Sort key putting ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ImageDirSource(Source):
    """A directory of images (png/jpg/jpeg/bmp/webp, natural sort order), image ``i`` at ``t = i / fps``.

    Images are decoded with PyAV one at a time and may differ in size.

    Raises:
        SourceError: the directory does not exist, holds no images, or its first image does not decode (later
            unreadable images raise when reached).
    """

    def __init__(self, directory: str | os.PathLike, fps: float, max_frames: int | None = None) -> None:
        root = Path(directory)
        super().__init__(root.name or str(root), fps, max_frames=max_frames)
        if not root.is_dir():
            raise SourceError(f"image directory not found: {str(directory)!r}")
        self.files = sorted((p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=_natural_key)
        if not self.files:
            raise SourceError(f"no images ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}) in directory: {str(root)!r}")
        height, width = self._read(self.files[0]).shape[:2]
        self.info = {"path": str(root), "num_frames": len(self.files), "height": height, "width": width}

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        try:
            return read_image(path)
        except VideoError as exc:
            raise SourceError(str(exc)) from None

    def _frames(self) -> Iterator[tuple[float, np.ndarray]]:
        for i, path in enumerate(self.files):
            yield i / self.fps, self._read(path)


def _is_webcam(spec: Any) -> bool:
    return (isinstance(spec, int) and not isinstance(spec, bool)) or (isinstance(spec, str) and (
        spec == "webcam" or spec.startswith(("webcam:", "/dev/video"))))


def _webcam(spec: int | str, format: str | None, options: dict[str, str]) -> tuple[str, str | None, str]:
    """``(url, format, description)`` of a webcam given as an int, ``webcam[:N|:NAME]`` or ``/dev/videoN``."""
    ident = spec.split(":", 1)[1] if isinstance(spec, str) and spec.startswith("webcam:") else str(spec)
    ident = "0" if ident in ("", "webcam") else ident
    if ident.startswith("/dev/") or sys.platform.startswith("linux"):
        device = f"/dev/video{ident}" if ident.isdigit() else ident
        if not Path(device).exists():
            raise SourceError(f"no camera at {device!r} (device does not exist)")
        return device, format or "v4l2", f"camera {device!r}"
    if sys.platform == "darwin":
        options.setdefault("framerate", "30")
        return (f"{ident}:none" if ident.isdigit() else ident), format or "avfoundation", f"camera {ident!r}"
    if sys.platform == "win32":
        if ident.isdigit():
            raise SourceError(f"on Windows name the camera, e.g. webcam:'Integrated Camera', not {spec!r} "
                              "(`ffmpeg -list_devices true -f dshow -i dummy` lists them)")
        return f"video={ident}", format or "dshow", f"camera {ident!r}"
    raise SourceError(f"webcams are not supported on {sys.platform!r}: {spec!r}")


class LiveSource(Source):
    """A webcam or network stream on the wall clock.

    A background thread decodes continuously and keeps only the newest frame, so the stream never lags. Iterating
    yields ``(t_k, newest frame)`` at ticks ``t_k = k / fps`` seconds after the first frame arrived; ticks that passed
    while the consumer was busy are skipped (counted in ``skipped``), so ``t`` stays the wall-clock stream time. The
    iteration ends when the stream ends (or breaks; logged) or on :meth:`close`.

    Args:
        url_or_device: ``rtsp://…``, ``http(s)://…`` (incl. ``.m3u8`` HLS), ``udp://…``, ``/dev/videoN``,
            ``webcam:N`` / ``webcam:NAME`` or an int camera index (v4l2 on Linux, avfoundation on macOS, dshow on
            Windows, where the camera must be named).
        fps: ticks per second.
        format: force an ffmpeg input format (e.g. ``v4l2``, ``mjpeg``).
        options: ffmpeg input options (e.g. ``{"rtsp_transport": "udp", "video_size": "640x480"}``); RTSP defaults
            to TCP transport.
        open_timeout: seconds to wait for the connection and for the first frame.
        read_timeout: seconds without data before the stream counts as broken (default: max(open_timeout, 5)).
        max_frames: stop after this many ticks.
        max_side: downscale so the longer side is at most this many pixels.

    Raises:
        SourceError: no such camera, unreachable URL, timeout, no video stream, or no frame within ``open_timeout``.
    """

    live = True

    def __init__(self, url_or_device: str | int, fps: float, *, format: str | None = None,
                 options: dict[str, str] | None = None, open_timeout: float = 10, read_timeout: float | None = None,
                 max_frames: int | None = None, max_side: int | None = None) -> None:
        import av

        if open_timeout <= 0:
            raise ValueError(f"open_timeout must be > 0 seconds, got {open_timeout}")
        opts, spec = {str(k): str(v) for k, v in (options or {}).items()}, url_or_device
        if isinstance(spec, str) and is_url(spec):
            url, fmt, what = spec, format, f"stream {spec!r}"
            if spec.lower().startswith(("rtsp://", "rtsps://")):
                opts.setdefault("rtsp_transport", "tcp")
        elif format and isinstance(spec, str) and not _is_webcam(spec):  # e.g. a lavfi graph, a named pipe
            url, fmt, what = spec, format, f"{format} input {spec!r}"
        else:
            url, fmt, what = _webcam(spec, format, opts)
        super().__init__(url, fps, max_frames=max_frames)
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout) if read_timeout else max(self.open_timeout, 5.0)
        self.max_side = max_side
        self.skipped = 0
        try:
            self._container = av.open(url, format=fmt, options=opts, timeout=(self.open_timeout, self.read_timeout))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"cannot open {what}: {_one_line(exc)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"no video stream in {what}")
        self._stream, self._what = self._container.streams.video[0], what
        self._stream.thread_type = "AUTO"
        self.info = {"url": url, "format": fmt or self._container.format.name, "codec": self._stream.codec_context.name,
                     "width": self._stream.width, "height": self._stream.height}
        self._cond = threading.Condition()  # guards the newest frame, its sequence number and the end state
        self._latest: Any = None
        self._seq, self._ended, self._error = 0, False, ""
        self._reader = threading.Thread(target=self._read, name=f"livecue-capture[{url}]", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Reader thread: decode continuously, keep only the newest frame."""
        try:
            for frame in self._container.decode(self._stream):
                if self._closed.is_set():
                    break
                with self._cond:
                    self._latest, self._seq = frame, self._seq + 1
                    self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported to the consumer as one line
            self._error = _one_line(exc)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            with contextlib.suppress(Exception):  # closing a broken stream
                self._container.close()

    def _frames(self) -> Iterator[tuple[float, np.ndarray]]:
        with self._cond:
            self._cond.wait_for(lambda: self._seq > 0 or self._ended or self._closed.is_set(),
                                timeout=self.open_timeout)
            first, ended = self._latest, self._ended
        if self._closed.is_set():
            return
        if first is None:
            problem = (f"broke before the first frame ({self._error})" if self._error else "ended before the first "
                       "frame" if ended else f"sent no frame within {self.open_timeout:g} s")
            raise SourceError(f"{self._what} {problem}")
        rotation = frame_rotation(first, self._stream)
        start = time.monotonic()
        k, shown, cached = 0, -1, None
        while not self._closed.is_set():
            delay = start + k / self.fps - time.monotonic()
            if delay > 0:  # wait in slices: a tick far away (a tiny fps) must neither overflow nor block close()
                if self._closed.wait(min(delay, 1.0)):
                    return
                continue
            with self._cond:
                frame, seq, ended = self._latest, self._seq, self._ended
            if seq == shown and ended:
                if self._error:
                    log.warning("%s: stream broke after %.1f s: %s", self._what, k / self.fps, self._error)
                return
            if seq != shown:
                cached, shown = to_rgb(frame, rotation, self.max_side), seq
            yield k / self.fps, cached
            due = math.floor((time.monotonic() - start) * self.fps)  # the latest tick already passed
            self.skipped += max(0, due - k - 1)
            k = max(k + 1, due)

    def close(self) -> None:
        """Stop the reader thread (it closes the stream) and end any iteration."""
        super().close()
        with self._cond:
            self._cond.notify_all()
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(timeout=1.0)  # a reader blocked on the network exits by itself at its read timeout


def open_source(spec: Any, fps: float, *, max_frames: int | None = None, max_side: int | None = None,
                **live_options: Any) -> Source:
    """Open what ``spec`` names as a :class:`Source`.

    Dispatch: a :class:`Source` is returned as is; a numpy array or list of arrays → :class:`ArraySource`; an int,
    ``webcam[:N]``, ``/dev/video*`` or a digit string that is not a file → webcam :class:`LiveSource`; an
    ``http(s)://`` URL ending in a video-file suffix (``.mp4``, ``.mkv``, …) → :class:`FileSource` (decoded by
    timestamps, not on the wall clock); other URLs (``rtsp://``, ``udp://``, ``.m3u8``, …) → :class:`LiveSource`; a
    directory → :class:`ImageDirSource`; an existing file → :class:`FileSource`.

    Args:
        spec: what to watch.
        fps: frames per second on the stream clock.
        max_frames: stop after this many frames.
        max_side: downscale video frames so the longer side is at most this many pixels.
        **live_options: passed to :class:`LiveSource` (``format``, ``options``, ``open_timeout``, ``read_timeout``).

    Raises:
        SourceError: the file/directory does not exist or the source cannot be opened.
        TypeError: ``spec`` is of an unsupported type.
    """
    _check_fps(fps)
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, np.ndarray) or (isinstance(spec, (list, tuple)) and spec
                                        and all(isinstance(f, np.ndarray) for f in spec)):
        return ArraySource(spec, fps, max_frames)
    if _is_webcam(spec):
        return LiveSource(spec, fps, max_frames=max_frames, max_side=max_side, **live_options)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"cannot watch a {type(spec).__name__}: expected a path, URL, camera or array of frames")
    text = os.fsdecode(os.fspath(spec))
    if not text:
        raise SourceError("empty source: give a video file, image directory, URL or camera")
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    elif is_url(text):
        scheme = text.split("://", 1)[0].lower()
        path = text.split("?", 1)[0].split("#", 1)[0].lower()
        if scheme in ("http", "https") and path.endswith(_VIDEO_FILE_SUFFIXES):
            return FileSource(text, fps, max_frames, max_side=max_side)
        return LiveSource(text, fps, max_frames=max_frames, max_side=max_side, **live_options)
    path = Path(text).expanduser()
    if path.is_dir():
        return ImageDirSource(path, fps, max_frames)
    if path.is_file():
        return FileSource(path, fps, max_frames, max_side=max_side)
    if text.isdigit():  # a camera index given as text, e.g. `livecue watch 0`
        return LiveSource(int(text), fps, max_frames=max_frames, max_side=max_side, **live_options)
    if path.suffix:
        raise SourceError(f"video file not found: {text!r}")
    raise SourceError(f"not found (no such file or directory, and not a URL or camera): {text!r}")
