"""Picture sizes read from image header bytes, before any decoder sees (and allocates for) the image.

A 65-byte PNG can declare 16000 × 16000 pixels; FFmpeg would allocate its frame (hundreds of MB) before anything
could check the size. The server therefore reads every size an image declares from its bytes, in pure Python, and
refuses the image when one of them is over the pixel limit:

* PNG: the ``IHDR`` of every PNG signature in the bytes (FFmpeg's ``png_pipe`` splits concatenated PNGs);
* JPEG: every ``SOFn`` segment, walking the markers as a decoder does (segments skipped by their length, entropy-coded
  data skipped to the next real marker), so a second frame header later in the bytes is seen too;
* WebP: the ``VP8X`` canvas and every ``VP8``/``VP8L`` bitstream header, top level or inside ``ANMF`` frames.

GIF is not accepted (it is refused by its magic bytes, like every other format): live frames are JPEG, PNG or WebP.
"""

from __future__ import annotations

import struct

from .protocol import ProtocolError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, 0xD8, 0xD9, *range(0xD0, 0xD8)}  # TEM, SOI, EOI, RST0-7: no length field


def image_kind(data: bytes) -> str:
    """``"jpeg"``, ``"png"`` or ``"webp"`` from the magic bytes; ProtocolError ``bad_image`` for anything else."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    what = "GIF is not accepted" if data[:6] in (b"GIF87a", b"GIF89a") else \
        f"unsupported image format (first bytes {data[:8].hex()})"
    raise ProtocolError("bad_image", f"{what}: send JPEG, PNG or WebP")


def declared_sizes(data: bytes) -> list[tuple[int, int]]:
    """Every ``(width, height)`` the image bytes declare (at least one); ProtocolError ``bad_image`` when a header
    is missing, truncated or declares an empty picture."""
    kind = image_kind(data)
    sizes = {"png": _png_sizes, "jpeg": _jpeg_sizes, "webp": _webp_sizes}[kind](data)
    if not sizes:
        raise ProtocolError("bad_image", f"the {kind.upper()} bytes hold no picture header")
    for w, h in sizes:
        if w < 1 or h < 1:
            raise ProtocolError("bad_image", f"the {kind.upper()} header declares an empty {w}x{h} picture")
    return sizes


def check_declared_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """The image's ``(width, height)``; ProtocolError ``too_many_pixels`` (naming the size) when any size it declares
    is over ``max_pixels``, ``bad_image`` when it declares none."""
    sizes = declared_sizes(data)
    for w, h in sizes:
        if w * h > max_pixels:
            raise ProtocolError("too_many_pixels", f"frame is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    return sizes[0]


def _png_sizes(data: bytes) -> list[tuple[int, int]]:
    sizes = []
    pos = 0
    while (pos := data.find(PNG_MAGIC, pos)) >= 0:
        head = data[pos + 8:pos + 24]
        if len(head) < 16 or head[4:8] != b"IHDR":
            if pos == 0:
                raise ProtocolError("bad_image", "the PNG does not start with its IHDR header")
        else:
            sizes.append(struct.unpack(">II", head[8:16]))
        pos += 8
    return sizes


def _jpeg_sizes(data: bytes) -> list[tuple[int, int]]:
    """Walk the JPEG markers as FFmpeg's decoder does and collect every frame header's size."""
    sizes = []
    n = len(data)
    pos = 0
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return sizes
        marker = data[pos + 1]
        if marker == 0xFF:      # fill byte
            pos += 1
            continue
        if marker == 0x00 or marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            return sizes
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            raise ProtocolError("bad_image", f"JPEG segment 0xFF{marker:02X} at byte {pos} has length {length}")
        if marker in _SOF:
            if pos + 9 > n:
                raise ProtocolError("bad_image", f"the JPEG frame header at byte {pos} is truncated")
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            sizes.append((width, height))
        pos += 2 + length
        if marker == 0xDA:      # start of scan: skip the entropy-coded data to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return sizes
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break


def _webp_sizes(data: bytes) -> list[tuple[int, int]]:
    if len(data) < 20:
        raise ProtocolError("bad_image", f"the WebP is truncated ({len(data)} bytes)")
    sizes: list[tuple[int, int]] = []
    _webp_chunks(data, 12, len(data), sizes, depth=0)
    return sizes


def _webp_chunks(data: bytes, pos: int, end: int, sizes: list[tuple[int, int]], depth: int) -> None:
    while pos + 8 <= end:
        fourcc = data[pos:pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        body = data[pos + 8:min(end, pos + 8 + size)]
        if fourcc == b"VP8X" and len(body) >= 10:
            sizes.append((1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")))
        elif fourcc == b"VP8 ":
            if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
                raise ProtocolError("bad_image", "the WebP VP8 frame header is missing or truncated")
            w, h = struct.unpack("<HH", body[6:10])
            sizes.append((w & 0x3FFF, h & 0x3FFF))
        elif fourcc == b"VP8L":
            if len(body) < 5 or body[0] != 0x2F:
                raise ProtocolError("bad_image", "the WebP VP8L header is missing or truncated")
            bits = int.from_bytes(body[1:5], "little")
            sizes.append((1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)))
        elif fourcc == b"ANMF" and len(body) >= 16 and depth == 0:
            sizes.append((1 + int.from_bytes(body[6:9], "little"), 1 + int.from_bytes(body[9:12], "little")))
            _webp_chunks(data, pos + 8 + 16, pos + 8 + len(body), sizes, depth + 1)
        pos += 8 + size + (size & 1)
