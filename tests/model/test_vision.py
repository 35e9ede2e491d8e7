"""FrameEncoder (SPEC §1): frame tokens [CLS, k×k pooled patches], letterboxing, normalisation, frozen towers.

Tiny randomly initialised towers only (no network); the reference values are computed here, independently of
``livecue.model.vision``, from the tower's own outputs on the encoder's preprocessed pixels.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from livecue.config import VisionConfig
from livecue.data.video import letterbox
from livecue.model.vision import build_frame_encoder

TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
MODEL_TYPES = {"siglip": "siglip_vision_model", "clip": "clip_vision_model", "dinov2": "dinov2"}
GRID = 4  # 32 px / patch 8
D = 32


def tiny_config(kind: str, pooled: int = 3, **kw) -> VisionConfig:
    return VisionConfig(kind=kind, name_or_path=None, random_init=dict(TINY_TOWER, model_type=MODEL_TYPES[kind]),
                        resolution=32, frame_token_pooled=pooled, **kw)


def tiny_encoder(kind: str, pooled: int = 3, **kw):
    torch.manual_seed(0)
    return build_frame_encoder(tiny_config(kind, pooled, **kw))


def random_frames(n: int = 3, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def reference_tokens(enc, frames: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """[CLS, k×k pooled] computed by hand from the tower's outputs."""
    with torch.no_grad():
        out = enc.tower(pixel_values=enc.preprocess(frames))
    hidden = out.last_hidden_state  # (F, T, D)
    if kind == "siglip":
        cls, patches = out.pooler_output, hidden  # SigLIP: no CLS token; the MAP head's output stands in
    else:
        cls, patches = hidden[:, 0], hidden[:, 1:]
    n = frames.shape[0]
    assert patches.shape == (n, GRID * GRID, D)
    grid = patches.reshape(n, GRID, GRID, D).permute(0, 3, 1, 2)  # token r*g + c -> grid[:, :, r, c]
    pooled = F.adaptive_avg_pool2d(grid, k).permute(0, 2, 3, 1).reshape(n, k * k, D)  # row-major
    return torch.cat([cls[:, None], pooled], dim=1)


# ---- shapes -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MODEL_TYPES))
@pytest.mark.parametrize("pooled,k_tokens", [(0, 1), (3, 10)], ids=["live1", "live1+"])
def test_output_shape(kind, pooled, k_tokens):
    enc = tiny_encoder(kind, pooled)
    assert enc.num_tokens == k_tokens == enc.cfg.frame_num_tokens
    assert enc.hidden_size == D
    out = enc(random_frames(3))
    assert out.shape == (3, k_tokens, D)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_pooled_only_layout():
    enc = tiny_encoder("clip", 2, frame_token_cls=False)
    assert enc(random_frames(2)).shape == (2, 4, D)


# ---- semantics --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MODEL_TYPES))
def test_cls_and_pooled_tokens_match_reference(kind):
    enc = tiny_encoder(kind, 3)
    frames = random_frames(3)
    with torch.no_grad():
        out = enc(frames)
    ref = reference_tokens(enc, frames, kind, 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # the frames are really distinguished (no broadcast of one frame's tokens)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("kind", sorted(MODEL_TYPES))
def test_pooling_to_the_grid_size_is_the_patch_tokens_in_row_major_order(kind):
    enc = tiny_encoder(kind, GRID, frame_token_cls=False)
    frames = random_frames(2)
    with torch.no_grad():
        hidden = enc.tower(pixel_values=enc.preprocess(frames)).last_hidden_state
        out = enc(frames)
    patches = hidden if kind == "siglip" else hidden[:, 1:]
    torch.testing.assert_close(out, patches, rtol=1e-5, atol=1e-6)


def test_siglip_cls_is_pooler_output_and_clip_cls_is_token_zero():
    frames = random_frames(2)
    sig = tiny_encoder("siglip", 0)
    clip = tiny_encoder("clip", 0)
    with torch.no_grad():
        s_out = sig.tower(pixel_values=sig.preprocess(frames))
        c_out = clip.tower(pixel_values=clip.preprocess(frames))
        torch.testing.assert_close(sig(frames)[:, 0], s_out.pooler_output)
        torch.testing.assert_close(clip(frames)[:, 0], c_out.last_hidden_state[:, 0])
    # CLIP's pooler_output is the post-layernormed CLS: not what upstream feeds the connector
    assert not torch.allclose(c_out.pooler_output, c_out.last_hidden_state[:, 0])


def test_siglip_without_head_needs_no_cls():
    cfg = tiny_config("siglip", 3, frame_token_cls=False)
    cfg.random_init["vision_use_head"] = False
    assert build_frame_encoder(cfg)(random_frames(1)).shape == (1, 9, D)
    cfg = tiny_config("siglip", 3)
    cfg.random_init["vision_use_head"] = False
    with pytest.raises(ValueError, match="pooler_output"):
        build_frame_encoder(cfg)(random_frames(1))


# ---- letterbox --------------------------------------------------------------------------------------------------
def test_letterbox_landscape_pads_top_and_bottom():
    frame = torch.full((1, 3, 20, 40), 255, dtype=torch.uint8)
    out = letterbox(frame, 32)  # long side 40 -> 32, short side 20 -> 16, centred: rows 8..23
    assert out.shape == (1, 3, 32, 32) and out.dtype == torch.float32
    assert (out[:, :, :8] == 0).all() and (out[:, :, 24:] == 0).all()
    torch.testing.assert_close(out[:, :, 8:24], torch.full((1, 3, 16, 32), 255.0))


def test_letterbox_portrait_pads_left_and_right():
    frame = torch.full((2, 3, 40, 20), 255, dtype=torch.uint8)
    out = letterbox(frame, 32)
    assert out.shape == (2, 3, 32, 32)
    assert (out[..., :8] == 0).all() and (out[..., 24:] == 0).all()
    torch.testing.assert_close(out[..., 8:24], torch.full((2, 3, 32, 16), 255.0))


def test_letterbox_square_input():
    frames = random_frames(2)
    torch.testing.assert_close(letterbox(frames, 32), frames.float(), rtol=0, atol=0)  # right size: unchanged
    big = torch.full((1, 3, 64, 64), 200, dtype=torch.uint8)
    torch.testing.assert_close(letterbox(big, 32), torch.full((1, 3, 32, 32), 200.0))  # resized, no padding


def test_letterbox_rejects_channels_last():
    with pytest.raises(ValueError, match=r"\(F, 3, H, W\)"):
        letterbox(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), 32)


def test_encoder_letterboxes_any_frame_size():
    enc = tiny_encoder("siglip", 3)
    pixels = enc.preprocess(torch.full((1, 3, 20, 40), 255, dtype=torch.uint8))
    assert pixels.shape == (1, 3, 32, 32)
    assert (pixels[:, :, :8] == -1).all() and (pixels[:, :, 24:] == -1).all()  # black -> (0 - 0.5) / 0.5
    torch.testing.assert_close(pixels[:, :, 8:24], torch.ones(1, 3, 16, 32))  # white -> (1 - 0.5) / 0.5
    assert enc(random_frames(2, 48, 80)).shape == (2, 10, D)


# ---- normalisation ----------------------------------------------------------------------------------------------
def test_siglip_normalisation_is_half_half():
    enc = tiny_encoder("siglip")
    frames = torch.stack([torch.zeros(3, 32, 32), torch.full((3, 32, 32), 255.0)]).to(torch.uint8)
    pixels = enc.preprocess(frames)
    assert (pixels[0] == -1).all() and (pixels[1] == 1).all()
    mid = enc.preprocess(torch.full((1, 3, 32, 32), 51, dtype=torch.uint8))
    torch.testing.assert_close(mid, torch.full((1, 3, 32, 32), (0.2 - 0.5) / 0.5))


@pytest.mark.parametrize("kind,mean,std", [
    ("clip", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ("dinov2", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
def test_tower_normalisation(kind, mean, std):
    enc = tiny_encoder(kind)
    pixels = enc.preprocess(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8))
    expected = (1 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(pixels[0, :, 0, 0], expected)


def test_config_mean_std_override():
    enc = tiny_encoder("siglip", mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0])
    pixels = enc.preprocess(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8))
    torch.testing.assert_close(pixels[0, :, 5, 7], torch.tensor([0.9 / 0.5, 0.8 / 0.25, 0.7 / 2.0]))


def test_pretrained_directory_weights_and_preprocessor_mean_std(tmp_path):
    src = tiny_encoder("siglip")
    src.tower.save_pretrained(str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.25, 0.25, 0.25], "image_std": [0.5, 0.5, 0.5]}))
    enc = build_frame_encoder(VisionConfig(kind="siglip", name_or_path=str(tmp_path), resolution=32))
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    torch.testing.assert_close(enc.preprocess(white)[0, :, 0, 0], torch.full((3,), 1.5))  # the directory's values
    frames = random_frames(2)
    with torch.no_grad():
        torch.testing.assert_close(enc.tower(pixel_values=enc.preprocess(frames)).last_hidden_state,
                                   src.tower(pixel_values=enc.preprocess(frames)).last_hidden_state)
    override = build_frame_encoder(VisionConfig(kind="siglip", name_or_path=str(tmp_path), resolution=32,
                                                mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]))
    torch.testing.assert_close(override.preprocess(white)[0, :, 0, 0], torch.ones(3))  # the config wins


def test_missing_pretrained_directory_is_one_clear_error(tmp_path):
    with pytest.raises(OSError, match="vision tower"):
        build_frame_encoder(VisionConfig(kind="siglip", name_or_path=str(tmp_path / "nope"), resolution=32))


# ---- frozen tower, input checks ---------------------------------------------------------------------------------
def test_frozen_tower():
    enc = tiny_encoder("siglip")
    params = list(enc.parameters())
    assert params and not any(p.requires_grad for p in params)
    enc.train()
    assert enc.training
    assert not any(m.training for m in enc.tower.modules())  # frozen: stays in inference behaviour
    wrapper = nn.ModuleDict({"vision": enc}).train()  # a parent's .train() reaches the encoder's override
    assert not any(m.training for m in wrapper["vision"].tower.modules())
    out = enc(random_frames(1))
    assert not out.requires_grad


def test_unfrozen_tower_trains():
    enc = tiny_encoder("clip", frozen=False)
    assert all(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.tower.training
    out = enc(random_frames(1))
    assert out.requires_grad
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.tower.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_non_uint8_frames_raise(dtype):
    enc = tiny_encoder("siglip")
    with pytest.raises(TypeError, match="uint8"):
        enc(random_frames(1).to(dtype))


def test_build_dtype():
    enc = build_frame_encoder(tiny_config("siglip"), dtype=torch.bfloat16)
    assert next(enc.tower.parameters()).dtype == torch.bfloat16
    assert enc.preprocess(random_frames(1)).dtype == torch.bfloat16
    assert enc(random_frames(2)).shape == (2, 10, D)


# ---- EfficientNet-Lite0 (CNN) -----------------------------------------------------------------------------------
def efficientnet(resolution: int, pooled: int = 3, **kw):
    pytest.importorskip("efficientnet_lite_pytorch",
                        reason="EfficientNet-Lite0 needs the [models] extra (efficientnet-lite-pytorch)")
    torch.manual_seed(0)
    return build_frame_encoder(VisionConfig(kind="efficientnet_lite0", name_or_path=None, random_init={},
                                            resolution=resolution, frame_token_pooled=pooled, **kw))


@pytest.mark.parametrize("pooled", [0, 2, 3])
def test_efficientnet_tokens(pooled):
    enc = efficientnet(96, pooled)
    assert enc.hidden_size == 1280
    frames = random_frames(2, 72, 96)
    with torch.no_grad():
        out = enc(frames)
        fmap = enc.tower.extract_features(enc.preprocess(frames))  # (F, 1280, 3, 3)
    assert fmap.shape == (2, 1280, 3, 3)
    assert out.shape == (2, 1 + pooled**2, 1280)
    torch.testing.assert_close(out[:, 0], fmap.mean(dim=(2, 3)))  # "CLS" = global average pool
    if pooled:
        ref = F.adaptive_avg_pool2d(fmap, pooled).permute(0, 2, 3, 1).reshape(2, pooled**2, 1280)
        torch.testing.assert_close(out[:, 1:], ref)


@pytest.mark.parametrize("resolution", [80, 200])
def test_efficientnet_same_padding_follows_the_resolution(resolution):
    enc = efficientnet(resolution)
    with torch.no_grad():
        fmap = enc.tower.extract_features(enc.preprocess(random_frames(1, resolution, resolution)))
    side = math.ceil(resolution / 32)  # TensorFlow "same" convolutions: ceil at each of the 5 stride-2 stages
    assert fmap.shape == (1, 1280, side, side)


def test_efficientnet_frozen_and_normalisation():
    enc = efficientnet(64)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.tower.modules())  # batch norm keeps its running statistics
    white = enc.preprocess(torch.full((1, 3, 64, 64), 255, dtype=torch.uint8))
    assert (white == 1).all()  # (x - 0.5) / 0.5


# ---- the vision side alone (feature caching) --------------------------------------------------------------------
def test_load_frame_encoder_matches_the_models_tower(tiny):
    from livecue.model.load import load_frame_encoder

    model, _ = tiny
    enc, cfg = load_frame_encoder("tiny")
    assert cfg.name == "tiny" and not enc.training
    frames = random_frames(2)
    with torch.no_grad():
        torch.testing.assert_close(enc(frames), model.encode_frames(frames))  # same seed-0 random tower


@pytest.mark.parametrize("name", ["live1+", "live1-plus", "live1_plus"])
def test_load_frame_encoder_accepts_preset_spellings(name, monkeypatch):
    import livecue.model.load as load

    built = []
    monkeypatch.setattr(load, "build_frame_encoder", lambda cfg, dtype: built.append(cfg) or nn.Linear(1, 1))
    _, cfg = load.load_frame_encoder(name)  # no download: the tower builder is stubbed
    assert cfg.name == "live1_plus" and built[0].frame_num_tokens == 10


# ---- the colour histogram -----------------------------------------------------------------------------------------
def test_colour_bins_append_each_tokens_region_histogram():
    enc = tiny_encoder("dinov2", 3, frame_colour_bins=2)
    assert enc.num_tokens == 10 and enc.tower_width == D and enc.hidden_size == D + 8
    frames = random_frames(2, h=32, w=32)
    with torch.no_grad():
        out = enc(frames)
    assert out.shape == (2, 10, D + 8)
    torch.testing.assert_close(out[:, :, :D], reference_tokens(enc, frames, "dinov2", 3))  # tower part unchanged
    # by hand: a channel's level is (byte·2) // 255; cell (r·2 + g)·2 + b; the CLS covers the frame, pooled
    # token (i, j) the 8-px patch cells adaptive_avg_pool2d(4 -> 3) averages into it: [0, 16), [8, 24), [16, 32)
    level = (frames.long() * 2 // 255).clamp(max=1)
    cell = (level[:, 0] * 2 + level[:, 1]) * 2 + level[:, 2]  # (F, 32, 32)

    def by_hand(r0, r1, c0, c1):
        region = cell[:, r0:r1, c0:c1].flatten(1)
        share = torch.stack([(region == c).float().mean(1) for c in range(8)], 1)
        return torch.log1p(100 * share) / math.log(101)

    spans = [(0, 16), (8, 24), (16, 32)]
    expected = [by_hand(0, 32, 0, 32)] + [by_hand(*rows, *cols) for rows in spans for cols in spans]
    torch.testing.assert_close(out[:, :, D:], torch.stack(expected, 1), atol=1e-5, rtol=1e-5)
    # a small red square in the top-left corner: only the CLS and the top-left token see red (cell 4), weakly
    red = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    red[:, 0, :4, :4] = 255
    with torch.no_grad():
        hist = enc(red)[0, :, D:]
    assert hist[0, 4] > 0 and hist[1, 4] > hist[0, 4] and hist[2:, 4].abs().max() == 0
    assert 0 < hist[0, 4] < 0.5 < hist[0, 0] <= 1  # log scale: 1.6 % of the frame still reads clearly


@pytest.mark.parametrize("byte,level", [(0, 0), (84, 0), (85, 1), (86, 1), (169, 1), (170, 2), (171, 2), (255, 2)])
def test_colour_bin_edges_are_exact_on_bytes(byte, level):
    enc = tiny_encoder("dinov2", 3, frame_colour_bins=3)
    with torch.no_grad():
        hist = enc(torch.full((1, 3, 32, 32), byte, dtype=torch.uint8))[0, 0, D:]  # the CLS: the whole frame
    assert hist.argmax().item() == 13 * level and hist.max().item() == pytest.approx(1.0)  # cell (l·3 + l)·3 + l


def test_colour_bins_config_errors():
    with pytest.raises(ValueError, match="frame_colour_bins must be in 0..8"):
        VisionConfig(frame_colour_bins=-1)
    with pytest.raises(ValueError, match="frame_colour_bins must be in 0..8"):
        VisionConfig(frame_colour_bins=9)
    assert VisionConfig(frame_colour_bins=3).colour_width == 27 and VisionConfig().colour_width == 0


# ---- colour segments ----------------------------------------------------------------------------------------------
def test_colour_segments_are_tokens_bound_to_each_colours_own_pixels():
    plain = tiny_encoder("dinov2", 3, frame_colour_bins=2)
    enc = tiny_encoder("dinov2", 3, frame_colour_bins=2, frame_colour_segments=3, frame_segment_size=4)
    extra = 4 * 4 + 2
    assert enc.num_tokens == 13 and enc.hidden_size == D + 8 + extra and enc.cfg.segment_width == extra
    # a dark frame (cell 0, the background), a red 8×8 square (cell 4), a blue 4×12 bar (cell 1), one green pixel
    # (cell 2: 1/1024 of the frame, under the 0.002 minimum share)
    frame = torch.full((1, 3, 32, 32), 20, dtype=torch.uint8)
    frame[0, :, 4:12, 20:28] = torch.tensor([230, 30, 30], dtype=torch.uint8).view(3, 1, 1)
    frame[0, :, 24:28, 2:14] = torch.tensor([30, 30, 230], dtype=torch.uint8).view(3, 1, 1)
    frame[0, :, 30, 30] = torch.tensor([30, 230, 30], dtype=torch.uint8)
    with torch.no_grad():
        out = enc(frame)[0]
        base = plain(frame)[0]
        _, grid = enc._cls_and_grid(enc.preprocess(frame))  # (1, D, 4, 4): 8-px patch cells
    assert out.shape == (13, D + 8 + extra)
    torch.testing.assert_close(out[:10, :D + 8], base)  # the region tokens are what they were ...
    assert out[:10, D + 8:].abs().max() == 0  # ... with no silhouette or centroid
    red, blue, empty = out[10], out[11], out[12]  # largest first; the background and the green pixel are no segment
    assert empty.abs().max() == 0

    def colour_column(cell, pixels):
        expected = torch.zeros(8)
        expected[cell] = math.log1p(100 * pixels / 1024) / math.log(101)
        return expected

    torch.testing.assert_close(red[D:D + 8], colour_column(4, 64))
    torch.testing.assert_close(blue[D:D + 8], colour_column(1, 48))
    # the tower's features averaged over the segment's pixels: the red square's rows 4-12 lie half in patch row 0,
    # half in row 1, its cols 20-28 half in patch col 2, half in col 3: equal weights on those four patch cells
    torch.testing.assert_close(red[:D], grid[0, :, 0:2, 2:4].mean((1, 2)), atol=1e-5, rtol=1e-5)
    # the bar: rows 24-28 in patch row 3; cols 2-14: 6 px in col 0, 6 in col 1
    torch.testing.assert_close(blue[:D], (grid[0, :, 3, 0] + grid[0, :, 3, 1]) / 2, atol=1e-5, rtol=1e-5)
    # silhouettes in their square bounding box, 4×4: the square fills it; the 4×12 bar is the middle third of its
    # 12-px square (rows 20..32 centred on the bar's rows 24..28)
    torch.testing.assert_close(red[D + 8:D + 24], torch.ones(16))
    expected_bar = F.adaptive_avg_pool2d(torch.cat([torch.zeros(4, 12), torch.ones(4, 12), torch.zeros(4, 12)])
                                         [None, None], 4).flatten()
    torch.testing.assert_close(blue[D + 8:D + 24], expected_bar)
    # centroids: mean pixel centre over the side, (x, y)
    torch.testing.assert_close(red[-2:], torch.tensor([24 / 32, 8 / 32]))
    torch.testing.assert_close(blue[-2:], torch.tensor([8 / 32, 26 / 32]))


def test_colour_segments_skip_the_background_and_small_cells():
    enc = tiny_encoder("dinov2", 2, frame_colour_bins=2, frame_colour_segments=2, frame_segment_min_share=0.05)
    frame = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)  # frame 0: all black -> no segment
    frame[1, 0, :, 16:] = 255  # frame 1: the right half red: red and black tie at 0.5; one of them is background
    frame[1, 1, :2, :2] = 255  # 4 green pixels (0.4 %): under 5 %, no segment
    with torch.no_grad():
        out = enc(frame)
    seg = out[:, -2:, D:D + 8]
    assert out[0, -2:].abs().max() == 0
    assert (seg[1, 0] > 0).sum() == 1 and seg[1, 0].argmax() in (0, 4) and out[1, -1].abs().max() == 0


def test_colour_segments_config():
    with pytest.raises(ValueError, match="frame_colour_segments must be in 0..8"):
        VisionConfig(frame_colour_bins=2, frame_colour_segments=9)
    with pytest.raises(ValueError, match=r"frame_colour_segments=2 needs vision.frame_colour_bins >= 2 .*got "
                                         r"frame_colour_bins=0"):
        VisionConfig(frame_colour_segments=2)
    with pytest.raises(ValueError, match="frame_segment_size must be in 2..32"):
        VisionConfig(frame_colour_bins=2, frame_colour_segments=1, frame_segment_size=1)
    with pytest.raises(ValueError, match=r"frame_segment_min_share must be in \(0, 1\)"):
        VisionConfig(frame_segment_min_share=0.0)
    cfg = VisionConfig(frame_colour_bins=3, frame_colour_segments=3)
    assert cfg.frame_num_tokens == 13 and cfg.segment_width == 66 and cfg.colour_width == 27 + 66
    assert VisionConfig(frame_colour_bins=3).segment_width == 0
