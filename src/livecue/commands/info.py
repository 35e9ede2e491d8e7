"""``livecue info``: build a model and describe it (parts, parameters, frame layout, marker ids)."""

from __future__ import annotations

from ._common import add_model_argument, load_from_args, parser, split_overrides


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("info", "Build a model and print its parts, frame layout and marker token ids.")
    add_model_argument(p)
    args = p.parse_args(argv)

    from ..data.labels import Markers

    model, tok = load_from_args(args, overrides)
    cfg = model.cfg
    markers = Markers.from_tokenizer(tok, cfg.stream.v_placeholder, cfg.stream.frame_interval)

    def count(module):
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    speak = " + ".join(repr(tok.convert_ids_to_tokens(i)) for i in markers.speak)
    print(f"model        {cfg.name}")
    print(f"vision       {cfg.vision.kind} {cfg.vision.name_or_path or '(random init)'}  {count(model.vision):,} "
          f"params, {cfg.vision.resolution}px, frozen={cfg.vision.frozen}")
    print(f"connector    {cfg.connector.kind}  {count(model.connector):,} params")
    print(f"lm           {type(model.lm).__name__} {cfg.lm.name_or_path or '(random init)'}  {count(model.lm):,} "
          f"params, {model.dtype}")
    print(f"frame        {cfg.frame_num_tokens} tokens (cls={cfg.vision.frame_token_cls}, "
          f"pooled={cfg.vision.frame_token_pooled}x{cfg.vision.frame_token_pooled}"
          + (f", +{cfg.vision.colour_width} colour-histogram values ({cfg.vision.frame_colour_bins}³ bins)"
             if cfg.vision.frame_colour_bins else "") + f"), {cfg.stream.fps:g} fps")
    print(f"markers      <v>={markers.v}  silence={markers.silence} "
          f"({tok.convert_ids_to_tokens(markers.silence)!r})  speak={list(markers.speak)} ({speak})  "
          f"eos={markers.eos}")
    print(f"decision     silent iff p(silence) >= threshold {cfg.stream.threshold}")
    return 0
