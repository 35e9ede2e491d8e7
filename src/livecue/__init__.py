"""livecue: online video LLMs that watch a stream frame by frame, decide when to speak, and answer in real time.

An implementation of the LIVE framework of "VideoLLM-online" (arXiv 2406.11816). Importing ``livecue`` is cheap:
heavy modules (torch, transformers) load only when their objects are used.

Main entry points::

    from livecue.config import LiveConfig, preset          # typed configs, presets live1 / live1_plus / tiny
    from livecue.model.build import build_model            # config -> (LiveModel, tokenizer)
    from livecue.model.load import load_model              # checkpoint / preset / hub id -> (LiveModel, tokenizer)
    from livecue.inference.engine import StreamEngine       # the streaming loop (StreamOptions: inference.options)
    from livecue.data.template import Template              # the upstream-exact chat template
    from livecue.data.labels import Markers, tokenize_conversation
    from livecue.model.loss import streaming_loss
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
