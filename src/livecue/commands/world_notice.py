"""The one-line notice that the default model knows only the built-in world (issue 22).

livecue's packaged default model was trained on the built-in streaming world alone (shapes, colours, motions): on
any other video it still narrates, but what it says means nothing. ``livecue demo --source`` and ``livecue watch``
say so once per run, on stderr, before the stream starts:

    livecue watch: the default model knows only the built-in world (shapes, colours, motions): its narration of
    other video is not meaningful; for real video pass --model with a real checkpoint or a VLM base (docs/vlm.md)

(one line). The model is recognised by its config name, :data:`DEFAULT_MODEL_NAME`, so ``--model default``, the
packaged directory's path, a copy of it and a model retrained with ``scripts/train_default_model.sh`` (also world-only)
all count; a model fine-tuned from it gets a name of its own (:func:`livecue.train.trainable.own_name`) and does not.
A source is the built-in world when it is a video file that :func:`livecue.data.world_render.save_mp4` wrote
(``livecue world``, ``livecue world --benchmark``: the container's ``comment`` tag, from its metadata alone); every
other source (another file, an image folder, a webcam, a URL, a world video written before the tag existed) gets the
notice. ``.npy`` world streams are not sources the commands open (they are the training side's exact pixels), so they
need no marker.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

#: The packaged default model's config name (``assets/default_model/livecue_config.json``; a test keeps them equal).
DEFAULT_MODEL_NAME = "livecue-default"


def world_notice(command: str) -> str:
    """The notice, as :func:`notify_world_only` prints it for ``command`` (``livecue watch``)."""
    return (f"{command}: the default model knows only the built-in world (shapes, colours, motions): its narration "
            "of other video is not meaningful; for real video pass --model with a real checkpoint or a VLM base "
            "(docs/vlm.md)")


def is_world_source(source: str) -> bool:
    """Whether ``source`` (a watch/demo source, ``sample:`` names already resolved) is a rendered world video: a local
    file (``file://`` allowed) with the world's metadata tag. Cameras, URLs and image folders are not."""
    from ..data.world_render import is_world_video

    path = source[len("file://"):] if source.lower().startswith("file://") else source
    file = Path(path).expanduser()
    return file.is_file() and is_world_video(file)


def needs_world_notice(model_name: str, source: str | None) -> bool:
    """Whether a run of the model named ``model_name`` on ``source`` (None: the demo's own world stream) gets the
    notice: the default model on anything but the built-in world."""
    return model_name == DEFAULT_MODEL_NAME and source is not None and not is_world_source(source)


def notify_world_only(command: str, model_name: str, source: str | None, file: TextIO | None = None) -> bool:
    """Print :func:`world_notice` on stderr (or ``file``) when :func:`needs_world_notice`; return whether it did.
    Call it once per run, after the source opened."""
    if not needs_world_notice(model_name, source):
        return False
    print(world_notice(command), file=file or sys.stderr, flush=True)
    return True
