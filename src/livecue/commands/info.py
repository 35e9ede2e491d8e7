"""``livecue info``: build a model and describe it (parts, parameters, frame layout, marker ids) and, when its
directory has a model card (``README.md``), summarise the card (base models, license, training data, metrics)."""

from __future__ import annotations

from pathlib import Path

from ._common import add_model_argument, load_from_args, parser, split_overrides


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("info", "Build a model and print its parts, frame layout and marker token ids.")
    add_model_argument(p)
    args = p.parse_args(argv)

    from ..data.labels import Markers
    from ..data.template import Template

    model, tok = load_from_args(args, overrides)
    cfg = model.cfg
    markers = Markers.from_template(tok, Template.from_config(cfg, tok))

    def count(module):
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    def token(i: int) -> str:
        return repr(tok.convert_ids_to_tokens(i))

    speak = " + ".join(token(i) for i in markers.speak)
    print(f"model        {cfg.name}")
    if cfg.is_vlm:
        _vlm_parts(model, count)
    else:
        print(f"vision       {cfg.vision.kind} {cfg.vision.name_or_path or '(random init)'}  {count(model.vision):,} "
              f"params, {cfg.vision.resolution}px, frozen={cfg.vision.frozen}")
        print(f"connector    {cfg.connector.kind}  {count(model.connector):,} params")
        print(f"lm           {type(model.lm).__name__} {cfg.lm.name_or_path or '(random init)'}  {count(model.lm):,} "
              f"params, {model.dtype}")
        v = cfg.vision
        print(f"frame        {cfg.frame_num_tokens} tokens (cls={v.frame_token_cls}, "
              f"pooled={v.frame_token_pooled}x{v.frame_token_pooled}"
              + (f", +{v.frame_colour_bins ** 3} colour-histogram values ({v.frame_colour_bins}³ bins)"
                 if v.frame_colour_bins else "")
              + (f", +{v.frame_colour_segments} colour-segment tokens ({v.frame_segment_size}² silhouette)"
                 if v.frame_colour_segments else "") + f"), {cfg.stream.fps:g} fps")
    print(f"markers      {cfg.stream.v_placeholder}={markers.v}  frame end={markers.frame_end} "
          f"({token(markers.frame_end)})  silence={markers.silence} ({token(markers.silence)})  "
          f"speak={list(markers.speak)} ({speak})  eos={markers.eos} ({token(markers.eos)})")
    print(f"decision     silent iff p(silence) >= threshold {cfg.stream.threshold}")
    directory = model_directory(args.adapter or args.model)
    if directory is not None:
        from ..model.card_files import card_summary

        for label, text in card_summary(directory):
            print(f"{label:<12} {text}")
    return 0


def model_directory(source: str) -> Path | None:
    """The local directory a model source names (a checkpoint directory, the packaged default model, a hub id
    already in the hub cache), or None (a preset, a config file)."""
    from ..model.load import DEFAULT_ALIAS, DEFAULT_MODEL_DIR

    path = Path(source)
    if path.is_dir():
        return path
    if source == DEFAULT_ALIAS:
        return DEFAULT_MODEL_DIR
    if source.count("/") == 1 and not path.exists():
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source, local_files_only=True))  # loaded above: cached
        except Exception:  # noqa: BLE001 - not a hub model (an upstream alias...): no card to show
            return None
    return None


def _how(full: bool, lora: bool) -> str:
    return "trained" if full else "LoRA-tuned" if lora else "frozen"


def _vlm_parts(model, count) -> None:
    """The parts of a VLM base: its vision encoder and projector, its language model, the frame layout."""
    cfg, vision = model.cfg, model.vision
    source = cfg.vlm.name_or_path or "(random init)"
    projector = count(vision.projector)
    print(f"vlm          {cfg.vlm.family} {source}  (the vision, connector and lm sections are not used)")
    print(f"vision       {type(vision.tower).__name__}  {count(vision.tower) - projector:,} params, "
          f"{cfg.vlm.frame_resolution}px, {_how(cfg.vlm.train_vision, cfg.vlm.lora_vision)}")
    print(f"projector    {vision.projector_name}  {projector:,} params, "
          f"{_how(cfg.vlm.train_projector, cfg.vlm.lora_projector)}")
    print(f"lm           {type(model.lm.model).__name__}  {count(model.lm):,} params, {model.dtype}")
    rows, cols = vision.layout.grid
    pooled = f", pooled to {cfg.vlm.frame_pooled}x{cfg.vlm.frame_pooled}" if cfg.vlm.frame_pooled else ""
    print(f"frame        {cfg.frame_num_tokens} tokens ({rows}x{cols} grid{pooled}) between "
          f"{cfg.stream.frame_prefix!r} and {cfg.stream.frame_suffix!r}, {cfg.stream.fps:g} fps")
    scheme = type(model.position_scheme).__name__ if model.explicit_positions else "1-D RoPE"
    print(f"template     chat format {cfg.stream.chat_format}, positions {scheme}")
