"""``livecue render``: render a conversation with the LIVE template and show which tokens are learned."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import DEFAULT_MODEL, add_model_argument, check_model_source, parser, split_overrides


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("render", "Render a conversation (a JSON list of messages, or a record with 'messages') with the "
                         "LIVE template; print the text and each learned token with its target.")
    p.add_argument("conversation", help="JSON file: a list of messages or an object with a 'messages' list")
    add_model_argument(p)
    p.add_argument("--text-only", action="store_true", help="print only the rendered text")
    args = p.parse_args(argv)
    check_model_source(args.model)  # a missing checkpoint / config is one line before anything loads

    path = Path(args.conversation)
    if not path.is_file():
        raise FileNotFoundError(f"conversation file not found: {str(path)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{str(path)!r} is not valid JSON: not UTF-8 text") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list):
        raise ValueError(f"{str(path)!r} must hold a list of messages or an object with a 'messages' list")

    from ..config import LiveConfig
    from ..data.labels import IGNORE, tokenize_conversation
    from ..data.template import Template
    from ..model.build import build_tokenizer, model_markers, resolve_config
    from ..model.load import DEFAULT_MODEL_DIR

    model = DEFAULT_MODEL_DIR if args.model == DEFAULT_MODEL and not Path(args.model).exists() else args.model
    cfg = LiveConfig.load(model)  # only the config and tokenizer: no weights are loaded
    cfg = cfg.with_overrides(overrides) if overrides else cfg
    tok = build_tokenizer(cfg)
    cfg = resolve_config(cfg, tok)  # a VLM base: its family's placeholder, frame layout and chat format
    tpl = Template.from_config(cfg, tok)
    rendered = tpl.render(messages)
    print(rendered.text)
    if args.text_only:
        return 0
    t = tokenize_conversation(rendered, tok, model_markers(cfg, tok), tpl)
    print(f"\n{len(t)} tokens, {t.num_frames} frames; learned positions (input -> target):")
    for i, (x, y) in enumerate(zip(t.input_ids, t.labels)):
        if y != IGNORE:
            print(f"  {i:6d}  {tok.convert_ids_to_tokens(x)!r:>14} -> {tok.convert_ids_to_tokens(y)!r}")
    return 0
