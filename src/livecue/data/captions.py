"""Burn timed captions (the model's replies) into video frames and write an mp4 (``livecue demo --save``)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

HOLD_SECONDS = 2.5  # how long a caption stays on screen


def _font(size: int):
    from PIL import ImageFont  # Pillow is optional (the [models] extra): caption_frame names it when missing

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def caption_frame(frame: np.ndarray, lines: list[str], *, scale: int = 2) -> np.ndarray:
    """Upscale ``frame`` (H, W, 3) and draw ``lines`` on a dark band at the bottom."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ImportError("burning captions needs Pillow: pip install 'livecue[models]'") from None
    img = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    if lines:
        font = _font(max(10, img.width // 28))
        draw = ImageDraw.Draw(img, "RGBA")
        wrapped = [w for line in lines for w in textwrap.wrap(line, width=max(16, img.width // 14))]
        line_h = font.size + 4 if hasattr(font, "size") else 14
        top = img.height - line_h * len(wrapped) - 8
        draw.rectangle([0, top - 4, img.width, img.height], fill=(0, 0, 0, 170))
        for i, text in enumerate(wrapped):
            draw.text((8, top + i * line_h), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")


def check_output(path: str | Path) -> Path:
    """Check where :func:`write_captioned` will write before any frame is processed.

    Raises:
        FileNotFoundError: the directory does not exist.
        ValueError: the path is a directory or not a video file name (``.mp4``, ``.mkv``, ``.mov``, ``.m4v``).
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"output directory does not exist: {str(path.parent)!r}")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory: give a video file name such as out.mp4")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{str(path)!r}: the video file name must end in {', '.join(VIDEO_SUFFIXES)}")
    return path


def write_captioned(path: str | Path, frames: Iterable[tuple[float, np.ndarray]],
                    captions: list[tuple[float, str]], fps: float) -> Path:
    """Write ``frames`` (t, (H, W, 3)) as an mp4 with each caption shown from its time for a few seconds."""
    path = check_output(path)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w") as container:
        stream = None
        for t, frame in frames:
            shown = [text for ct, text in captions if ct <= t + 1e-6 < ct + HOLD_SECONDS][-2:]
            image = caption_frame(np.ascontiguousarray(frame), shown)
            if stream is None:
                codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = image.shape[1] // 2 * 2, image.shape[0] // 2 * 2
                stream.pix_fmt = "yuv420p"
            image = image[:stream.height, :stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path
