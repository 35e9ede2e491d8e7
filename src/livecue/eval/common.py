"""Shared plumbing of the evaluators: records, frame providers, frame features, prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.dataset import FrameProvider, VideoFrames
from ..data.labels import Markers
from ..data.records import read_records, template_messages
from ..model import lm as lm_api

log = logging.getLogger(__name__)


def load_records(data: str | Path | Sequence[dict[str, Any]], max_samples: int | None = None
                 ) -> list[dict[str, Any]]:
    """Records from a JSONL path (validated) or a list, cut to ``max_samples``."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    records = read_records(data) if isinstance(data, (str, Path)) else list(data)
    if not records:
        raise ValueError(f"no records in {data if isinstance(data, (str, Path)) else 'the given list'}")
    return records[:max_samples] if max_samples else records


def frame_provider(model: Any, data: str | Path | None, feature_cache: str | Path | None = None) -> FrameProvider:
    """A :class:`~livecue.data.features.FeatureCache` when given, else videos relative to the JSONL's directory."""
    if feature_cache:
        from ..data.features import FeatureCache

        return FeatureCache(feature_cache)
    root = Path(data).parent if isinstance(data, (str, Path)) else None
    return VideoFrames(root, resolution=model.cfg.frame_resolution)


@torch.inference_mode()
def to_features(model: Any, frames: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Frame features ``(F, K, D_vision)`` on the model's device from uint8 pixels or features already.

    Shape: (F, 3, H, W) uint8 or (F, K, D) float -> (F, K, D_vision).
    """
    if frames.is_floating_point():
        return frames.to(model.device)
    if frames.shape[0] == 0:
        width = model.feature_width  # the connector's input: the vision width
        return torch.zeros(0, model.frame_num_tokens, width, device=model.device)
    parts = [model.encode_frames(frames[i:i + chunk].to(model.device)) for i in range(0, frames.shape[0], chunk)]
    return torch.cat(parts)


def split_answer(record: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """The prompt messages before the record's last assistant message, that message, and the prompt's frames.

    Raises:
        ValueError: the record has no assistant message.
    """
    messages = template_messages(record)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError(f"record {record.get('id')!r} has no assistant message to evaluate against")
    prompt = messages[:last]
    frames = sum(m.get("num_frames", 0) for m in prompt if m["role"] == "stream")
    return prompt, messages[last], frames


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, template: Any, prompt: list[dict[str, Any]], features: torch.Tensor, *,
             max_new_tokens: int, num_beams: int = 1, num_return_sequences: int = 1) -> list[str]:
    """Decode after the prompt **and its frames** (greedy, or beam search with ``num_beams``).

    The prompt is rendered with the generation suffix (``\\nAssistant:``), embedded with every ``<v>`` replaced by
    the frame tokens (upstream's LTA evaluation dropped the frames: SPEC §9), and handed to the LM's ``generate``
    as ``inputs_embeds``.

    Shape: features (F, K, D_vision) for the prompt's F frames.
    """
    if not prompt or prompt[0]["role"] != "system":  # the same prefix as in training and streaming
        prompt = [{"role": "system", "content": model.cfg.stream.system_prompt}] + list(prompt)
    text = template.render(prompt, add_generation_prompt=True).text
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids], device=model.device)
    frame_embeds = model.project(features) if features.shape[0] else None
    embeds, levels = model.embed_frames(ids, frame_embeds)  # (1, T, H); Qwen3-VL: the frames' DeepStack levels
    end = Markers.from_template(tokenizer, template).eos  # the template's end of a reply (Gemma: <end_of_turn>)
    if model.explicit_positions or not hasattr(model.lm, "generate"):  # a VLM base: its positions are livecue's
        if num_beams != 1 or num_return_sequences != 1:
            raise ValueError(f"beam search ({num_beams} beams) is not available for a {model.cfg.architecture} "
                             f"base yet: evaluate with 1 beam")
        return [tokenizer.decode(greedy(model, ids, embeds, end, max_new_tokens, frame_levels=levels),
                                 skip_special_tokens=True).strip()]
    out = model.lm.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=max_new_tokens, num_beams=num_beams,
                            num_return_sequences=num_return_sequences, eos_token_id=end,
                            pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in out]


@torch.inference_mode()
def greedy(model: Any, ids: torch.Tensor, embeds: torch.Tensor, end: int, max_new_tokens: int,
           frame_levels: lm_api.FrameLevels | None = None) -> list[int]:
    """Greedy decoding through the KV cache with the model's own positions (what ``generate`` does for plain LMs).

    Shape: ids (1, T) the prompt's tokens, embeds (1, T, H) their embeddings (frames spliced in); frame_levels: the
    prompt's frames' DeepStack levels (:meth:`~livecue.model.live.LiveModel.embed_frames`).
    """
    def placed(positions: torch.Tensor | None) -> torch.Tensor | None:
        return None if positions is None else positions.to(model.device)

    positions, after = model.positions(ids.cpu(), 0)
    blocks = model.frame_blocks(ids)  # Gemma 3: a frame's tokens see each other, as in training and streaming
    logits, cache = lm_api.lm_forward(model.lm, embeds, position_ids=placed(positions), use_cache=True,
                                      logits_to_keep=1, frame_blocks=placed(blocks), frame_levels=frame_levels)
    out: list[int] = []
    while len(out) < max_new_tokens:
        token = int(logits[0, -1].argmax())
        if token == end:
            break
        out.append(token)
        step = torch.tensor([[token]])
        positions, after = model.positions(step, int(after[0]))
        logits, cache = lm_api.lm_forward(model.lm, model.embed(step), cache=cache, position_ids=placed(positions),
                                          use_cache=True, logits_to_keep=1)
    return out
