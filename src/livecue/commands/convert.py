"""``livecue convert``: the paper's adapter layout <-> a livecue checkpoint directory, tensors bit for bit."""

from __future__ import annotations

from ._common import parser


def main(argv: list[str]) -> int:
    p = parser("convert", "Convert an upstream VideoLLM-online adapter directory to a livecue checkpoint, or back "
                          "(--to-upstream).")
    p.add_argument("source", help="an upstream adapter directory (or hub id), or with --to-upstream a livecue "
                                  "checkpoint directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--to-upstream", action="store_true", help="export a livecue checkpoint to the upstream layout")
    p.add_argument("--base", default=None, help="base LM to record in the livecue config (default: the adapter's)")
    p.add_argument("--vision", default=None, help="vision tower to record in the livecue config (default: SigLIP)")
    args = p.parse_args(argv)

    from ..model import upstream

    if args.to_upstream:
        out = upstream.export_upstream(args.source, args.out)
    else:
        source = upstream.ALIASES[args.source].adapter if args.source in upstream.ALIASES else args.source
        out = upstream.convert_to_livecue(upstream.local_dir(source, "VideoLLM-online adapter"), args.out,
                                          base=args.base, vision=args.vision, origin=source)
    print(f"wrote {out}")
    return 0
