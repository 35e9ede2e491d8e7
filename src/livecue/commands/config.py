"""``livecue config``: print a resolved config (preset, file or checkpoint) as JSON or YAML."""

from __future__ import annotations

from ._common import parser, split_overrides


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("config", "Print a resolved livecue config.")
    p.add_argument("source", nargs="?", default="live1_plus",
                   help="preset name, config file or checkpoint directory (default: %(default)s)")
    p.add_argument("--yaml", action="store_true", help="print YAML instead of JSON")
    p.add_argument("--list", action="store_true", help="list the packaged presets")
    p.add_argument("--save", metavar="DIR", help="write livecue_config.json into DIR")
    args = p.parse_args(argv)

    from ..config import LiveConfig, list_presets

    if args.list:
        print("\n".join(list_presets()))
        return 0
    cfg = LiveConfig.load(args.source)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    if args.save:
        print(f"wrote {cfg.save(args.save)}")
        return 0
    if args.yaml:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
    else:
        print(cfg.to_json(), end="")
    return 0
