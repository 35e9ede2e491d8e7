"""The built-in world's PNG writer (Pillow): lossless, decoded by Pillow to the very pixels that were written."""

import numpy as np
import pytest
from PIL import Image

from livecue.data.world import WorldConfig, generate_stream
from livecue.data.world_render import png_bytes, save_png


def test_png_is_pixel_identical_when_decoded_by_pillow(tmp_path):
    frames, _ = generate_stream(WorldConfig(resolution=32, duration=1.0), 0)
    noise = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)  # odd sizes, every value
    for k, image in enumerate([frames[0], frames[-1], noise]):
        path = save_png(tmp_path / f"{k}.png", image)
        assert path.read_bytes() == png_bytes(image) and not list(tmp_path.glob(".*.tmp"))
        with Image.open(path) as decoded:
            assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == image.shape[1::-1]
            assert np.array_equal(np.asarray(decoded), image)


def test_png_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"needs an \(H, W, 3\) image, got shape \(4, 4\)"):
        png_bytes(np.zeros((4, 4), np.uint8))
