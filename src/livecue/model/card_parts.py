"""The parts of a model as its card lists them: hub ids, how each part was trained, licenses.

Pure functions of a :class:`~livecue.config.LiveConfig` (nothing is loaded): which parts come from pretrained
sources and which are random (:func:`random_parts`), the hub id a ``name_or_path`` stands for (:func:`hub_id`: the
front matter's ``base_model``), and the license the weights inherit (:func:`card_license`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import LiveConfig
from ..pretrained import SMOLLM2
from . import build

# livecue's offline aliases and the hub ids they stand for; licenses of the base parts livecue knows.
HUB_IDS = {SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0", "meta-llama/Meta-Llama-3-8B-Instruct": "llama3",
            "google/siglip-large-patch16-384": "apache-2.0"}
OWN_LICENSE = "apache-2.0"  # livecue's, for weights with no pretrained base
_SNAPSHOT = re.compile(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]")


@dataclass(frozen=True)
class Part:
    """One pretrained (or randomly initialised) part of a model, as a card lists it."""

    role: str
    kind: str
    source: str | None
    """The config's ``name_or_path``; None for a part initialised at random."""
    hub_id: str | None
    how: str
    """How the part was trained: frozen, LoRA, trained, untrained."""
    pretrainable: bool = True
    """Whether the part can come from a pretrained source (the connector is always livecue's own)."""




def hub_id(name: str | None) -> str | None:
    """The Hugging Face hub id a part's ``name_or_path`` stands for, when it can be known: livecue's offline aliases,
    ``org/name`` ids that are not local paths, and directories inside a hub cache (``models--org--name``)."""
    if not name:
        return None
    if name in HUB_IDS:
        return HUB_IDS[name]
    snapshot = _SNAPSHOT.search(name)
    if snapshot:
        return f"{snapshot.group(1)}/{snapshot.group(2)}"
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not Path(name).exists():
        return name
    return None


def base_parts(cfg: LiveConfig, *, adapter: bool, trained: bool) -> list[Part]:
    """The parts ``cfg`` builds, with their sources and how each was trained. ``adapter``: the checkpoint holds a
    LoRA adapter for its language model; ``trained``: the weights went through training (else the new parts are
    at their initialisation)."""
    new = "trained" if trained else "untrained (random init)"
    lora = f"LoRA (r {cfg.lora.r}, α {cfg.lora.alpha})"
    if cfg.is_vlm:
        v = cfg.vlm

        def how(full: bool, with_lora: bool) -> str:
            return "trained" if full else "LoRA" if with_lora else "frozen"

        random_lm = "random init, then trained" if trained else "random init, untrained"
        lm = lora if adapter else random_lm if v.name_or_path is None else "frozen"
        family = v.family or str((v.random_init or {}).get("model_type", "?"))
        return [Part("vision-language model", family, v.name_or_path, hub_id(v.name_or_path),
                     f"language model: {lm}; vision encoder: {how(v.train_vision, v.lora_vision)}; "
                     f"projector: {how(v.train_projector, v.lora_projector)}")]
    vis, lm_cfg = cfg.vision, cfg.lm
    vision_how = ("" if vis.name_or_path else "random init, ") + ("frozen" if vis.frozen else "trained")
    lm_kind = str((lm_cfg.random_init or {}).get("model_type", "causal LM"))
    if adapter:
        lm_how = lora
    elif lm_cfg.name_or_path is None:
        lm_how = "random init, then trained" if trained else "random init, untrained"
    else:
        lm_how = "fully trained" if trained else "as pretrained"
    return [Part("vision tower", vis.kind, vis.name_or_path, hub_id(vis.name_or_path), vision_how),
            Part("connector", cfg.connector.kind, None, None, new, pretrainable=False),
            Part("language model", lm_kind, lm_cfg.name_or_path, hub_id(lm_cfg.name_or_path), lm_how)]


#: :func:`livecue.model.build.random_parts`'s names as a card says them (the connector, always trained, aside)
PART_NAMES = {"lm": "language model", "vision": "vision tower", "vlm": "vision-language model"}


def random_parts(cfg: LiveConfig) -> list[str]:
    """The parts of ``cfg`` that have no pretrained weights (built at random): ``[]`` for a real base."""
    built = build.random_parts(cfg)
    return [name for part, name in PART_NAMES.items() if part in built]


def card_license(cfg: LiveConfig, *, origin: str | None = None) -> str | None:
    """The license the weights inherit: the converted ``origin``'s when known, else the language model's (the
    weights derive from it), else livecue's own for weights with no pretrained base; None when unknown."""
    if origin and hub_id(origin) in LICENSES:
        return LICENSES[hub_id(origin)]
    source = cfg.vlm.name_or_path if cfg.is_vlm else cfg.lm.name_or_path
    return OWN_LICENSE if source is None else LICENSES.get(hub_id(source) or "")


def base_models(cfg: LiveConfig, *, origin: str | None = None) -> list[str]:
    """The hub ids of the pretrained parts (``base_model`` in the front matter), a converted ``origin`` first."""
    ids = [hub_id(origin)] if origin else []
    ids += [p.hub_id for p in base_parts(cfg, adapter=False, trained=False)]
    return list(dict.fromkeys(i for i in ids if i))
