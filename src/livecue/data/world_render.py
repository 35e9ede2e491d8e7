"""Pixels of the built-in streaming world: shapes as anti-aliased numpy masks, backgrounds, noise, PNG and MP4 output.

Only numpy draws: every shape is a coverage mask computed on a supersampled grid inside the object's bounding box
and alpha-blended over the background. PNG files are written with Pillow, video files with PyAV (``libx264`` when
available, else ``mpeg4``), always to a temporary name that is renamed into place, so a killed run never leaves a
half-written file. Every video carries a ``comment`` tag naming the world (:data:`WORLD_COMMENT`), so a command can
tell a rendered world stream from other video by its metadata alone (:func:`is_world_video`).
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

#: Colour names and their RGB values, well separated in RGB (and in hue where it matters).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (45, 95, 240),
    "yellow": (245, 220, 30),
    "purple": (155, 60, 215),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (30, 215, 225),
}

#: Shapes the renderer can draw.
SHAPES = ("square", "circle", "triangle", "star", "diamond", "cross")

_SUPERSAMPLE = 3  # sub-pixel samples per axis for anti-aliasing

#: The start of the ``comment`` tag :func:`save_mp4` writes into every world video (:func:`is_world_video`).
WORLD_TAG = "livecue world"
#: The whole tag: what the video is, for anyone reading its metadata (ffprobe, a player's properties).
WORLD_COMMENT = f"{WORLD_TAG}: a rendered stream of livecue's built-in world (shapes, colours, motions)"


@dataclass(frozen=True)
class Sprite:
    """One object as the renderer sees it, in pixels.

    Attributes:
        shape: one of :data:`SHAPES`.
        rgb: fill colour.
        cx, cy: centre (pixels; x to the right, y down; pixel ``i`` covers ``[i, i + 1)``).
        half: half the side of the object's bounding box (pixels).
    """

    shape: str
    rgb: tuple[int, int, int]
    cx: float
    cy: float
    half: float


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` centred at the origin with bounding half-side ``r``, at offsets ``(dx, dy)``.

    Raises:
        ValueError: unknown shape.
    """
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return (ax <= 0.86 * r) & (ay <= 0.86 * r)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "diamond":
        return ax + ay <= r
    if shape == "triangle":  # apex up, base along the bottom of the box
        return (dy <= r) & (ax <= (dy + r) / 2)
    if shape == "cross":
        arm = 0.34 * r
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if shape == "star":  # five points, one pointing up
        return _star_mask(dx, dy, r)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _star_mask(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    sector = 2 * math.pi / 5
    theta = np.mod(np.arctan2(dx, -dy), sector)  # angle from "up", folded into one point's sector
    theta = np.where(theta > sector / 2, sector - theta, theta)  # mirror: [0, sector/2]
    rho = np.hypot(dx, dy)
    px, py = rho * np.cos(theta), rho * np.sin(theta)  # the outer point on the x axis
    outer, inner = r, 0.45 * r
    qx, qy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    # inside when on the origin's side of the edge outer point -> inner point
    cross = (qx - outer) * (py - 0.0) - (qy - 0.0) * (px - outer)
    origin = (qx - outer) * (0.0 - 0.0) - qy * (0.0 - outer)
    return cross * origin >= 0


def background(resolution: int, rgb: tuple[int, int, int], texture: float = 0.0, shift: float = 0.0) -> np.ndarray:
    """A ``(H, W, 3)`` float32 background: a flat colour plus diagonal stripes of relative amplitude ``texture``.

    ``shift`` moves the stripes along the diagonal by that many pixels (the drifting distractor).
    """
    img = np.empty((resolution, resolution, 3), np.float32)
    img[:] = np.asarray(rgb, np.float32)
    if texture > 0:
        period = max(resolution / 7.0, 4.0)
        idx = np.arange(resolution, dtype=np.float32)
        wave = np.sin((idx[:, None] + idx[None, :] + shift) * (2 * math.pi / period))
        img += (40.0 * texture) * wave[:, :, None]
    return img


def draw(img: np.ndarray, sprite: Sprite) -> None:
    """Alpha-blend ``sprite`` into the float image ``img`` in place (anti-aliased by supersampling)."""
    h, w = img.shape[:2]
    x0, x1 = max(0, math.floor(sprite.cx - sprite.half) - 1), min(w, math.ceil(sprite.cx + sprite.half) + 1)
    y0, y1 = max(0, math.floor(sprite.cy - sprite.half) - 1), min(h, math.ceil(sprite.cy + sprite.half) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    s = _SUPERSAMPLE
    sub = (np.arange(s, dtype=np.float64) + 0.5) / s
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel() - sprite.cx
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel() - sprite.cy
    mask = shape_mask(sprite.shape, xs[None, :], ys[:, None], sprite.half)
    alpha = mask.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3), dtype=np.float32)[:, :, None]
    region = img[y0:y1, x0:x1]
    region *= 1.0 - alpha
    region += alpha * np.asarray(sprite.rgb, np.float32)


def render(sprites: list[Sprite], resolution: int, bg_rgb: tuple[int, int, int], *, texture: float = 0.0,
           shift: float = 0.0, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Render one ``(H, W, 3)`` uint8 frame: background, then the sprites in order, then Gaussian pixel noise."""
    img = background(resolution, bg_rgb, texture, shift)
    for sprite in sprites:
        draw(img, sprite)
    if noise > 0:
        if rng is None:
            raise ValueError("pixel noise needs a random generator")
        img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---- output --------------------------------------------------------------------------------------------------------
def png_bytes(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 RGB image as PNG (Pillow, lossless)."""
    from PIL import Image  # Pillow: only the PNG writer needs it

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"png_bytes needs an (H, W, 3) image, got shape {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG file atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png_bytes(image))
    os.replace(tmp, path)
    return path


def save_npy(path: str | Path, frames: np.ndarray) -> Path:
    """Write ``(N, H, W, 3)`` uint8 frames as a ``.npy`` file atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(frames, dtype=np.uint8))
    os.replace(tmp, path)
    return path


def video_codec() -> str:
    """``libx264`` when this PyAV build has it, else ``mpeg4``."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def save_mp4(path: str | Path, frames: np.ndarray, fps: float, *, crf: int = 18, codec: str | None = None) -> Path:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames as an MP4 (yuv420p) at ``fps``, atomically; return the path.

    Frame ``k`` gets presentation time ``k / fps``. ``libx264`` uses constant quality ``crf``; ``mpeg4`` a high
    fixed quality. The container's ``comment`` tag is :data:`WORLD_COMMENT` (:func:`is_world_video` reads it).

    Raises:
        ValueError: frames of the wrong shape, or odd width/height (yuv420p needs even sizes).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"save_mp4 needs (N>0, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"mp4 (yuv420p) needs even frame sizes, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    codec = codec or video_codec()
    rate = Fraction(fps).limit_denominator(1000)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            container.metadata["comment"] = WORLD_COMMENT
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "medium"}
            else:
                stream.codec_context.qscale = 2
                stream.codec_context.bit_rate = 8_000_000
            for k, frame in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts = k
                vf.time_base = 1 / rate
                container.mux(stream.encode(vf))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.debug("wrote %s (%d frames, %s)", path, len(frames), codec)
    return path


def is_world_video(path: str | Path) -> bool:
    """Whether the file at ``path`` is a world video :func:`save_mp4` wrote: its container's ``comment`` tag starts
    with :data:`WORLD_TAG`. Opens the container for its metadata only (milliseconds: no frame is read out). False
    for any file that does not open as a container (missing, not a video, unreadable), for other video, and for a
    world video re-encoded by a tool that drops the tag."""
    try:
        with av.open(str(path)) as container:
            return str(container.metadata.get("comment", "")).startswith(WORLD_TAG)
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False
