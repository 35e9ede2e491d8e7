"""``livecue convert-data KIND ... --out FILE.jsonl``: official annotations -> streaming-dialogue records.

The converters log what they skip, clamp or filter (with counts) as warnings, and a summary at the end; this command
shows those on stderr. A conversion that yields no record fails with one line saying why.
"""

from __future__ import annotations

import importlib
import logging
import sys

from ._common import parser


class _Format(logging.Formatter):
    """``message`` for information, ``warning: message`` for warnings and worse."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _show_converter_logs() -> tuple[logging.Handler, int]:
    """Show the converters' information and warnings on stderr; returns (handler, previous level) to undo it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("livecue.data")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler, previous


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

    handler, level = _show_converter_logs()
    try:
        count = write_records(args.out, module.convert(args, kind))
    finally:
        logging.getLogger("livecue.data").removeHandler(handler)
        logging.getLogger("livecue.data").setLevel(level)
    print(f"wrote {count} records to {args.out}", file=sys.stderr if count == 0 else sys.stdout)
    return 0 if count else 1
