"""``livecue convert-data KIND ... --out FILE.jsonl``: official annotations -> streaming-dialogue records."""

from __future__ import annotations

import importlib
import sys

from ._common import parser


def main(argv: list[str]) -> int:
    from ..data.converters import MODULES

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: livecue convert-data KIND [options] --out FILE.jsonl\n\nkinds:")
        for kind in MODULES:
            print(f"  {kind}")
        print("\nRun 'livecue convert-data KIND --help' for a kind's options.")
        return 0
    kind, rest = argv[0], argv[1:]
    if kind not in MODULES:
        raise ValueError(f"unknown converter {kind!r}; available: {', '.join(MODULES)}")
    module = importlib.import_module(f"livecue.data.converters.{MODULES[kind]}")
    p = parser(f"convert-data {kind}", module.KINDS[kind])
    p.add_argument("--out", required=True, help="output JSONL file of records")
    module.add_arguments(p, kind)
    args = p.parse_args(rest)

    from ..data.records import write_records

    count = write_records(args.out, module.convert(args, kind))
    print(f"wrote {count} records to {args.out}", file=sys.stderr if count == 0 else sys.stdout)
    return 0 if count else 1
