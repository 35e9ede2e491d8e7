"""``livecue config``: print a resolved config (preset, file or checkpoint) as JSON or YAML, or the field reference.

``livecue config --fields [SECTION]`` prints every field's meaning, unit, range and default, read from the
docstrings in :mod:`livecue.config`; ``--fields --markdown`` prints docs/config.md.
"""

from __future__ import annotations

import argparse
import dataclasses

import yaml

from ..config import LiveConfig, list_presets
from ..config_fields import SectionDoc, describe, fill, render_markdown, render_text
from ._common import parser, split_overrides

DOC_TITLE = "Configuration reference"
DOC_NOTE = ("Generated from the docstrings of src/livecue/config.py by `livecue config --fields --markdown > "
            "docs/config.md`; do not edit by hand (tests/test_config.py checks that it is current). "
            "`livecue config --fields [SECTION]` prints the same in a terminal.")


def sections_epilog(sections: list[SectionDoc]) -> str:
    """The ``--help`` epilog: each section with its summary and its fields' names."""
    lines = ["sections and fields (livecue config --fields SECTION: each field's meaning, unit, range, default):"]
    for s in sections:
        names = ", ".join(f.key.rpartition(".")[2] for f in s.fields)
        lines.append(fill(f"{s.name or 'top'}: {s.summary}", 100, indent="      ", first="  "))
        lines.append(fill(names, 100, indent="      "))
    lines += ["", "Config overrides: --section.key=value (e.g. --stream.threshold=0.8)."]
    return "\n".join(lines)


def select(sections: list[SectionDoc], wanted: str) -> list[SectionDoc]:
    """The sections (or the one field, ``section.key``) named by ``--fields``; all when ``wanted`` is empty.

    Raises:
        ValueError: ``wanted`` names no section and no field.
    """
    if not wanted:
        return sections
    for s in sections:
        if wanted == (s.name or "top"):
            return [s]
        hits = [f for f in s.fields if f.key == wanted]
        if hits:
            return [SectionDoc(s.name, s.summary, s.details, hits)]
    names = ", ".join(s.name or "top" for s in sections)
    raise ValueError(f"argument --fields: no section or field {wanted!r} (sections: {names}; a field: section.key)")


def reference_markdown(sections: list[SectionDoc] | None = None) -> str:
    """docs/config.md: the reference of ``sections`` (default: all) in Markdown, introduced by the top level's
    description (:class:`LiveConfig`'s docstring)."""
    sections = describe(LiveConfig) if sections is None else sections
    root = next(s for s in describe(LiveConfig) if not s.name)
    shown = [dataclasses.replace(s, details="") if not s.name else s for s in sections]
    return render_markdown(shown, DOC_TITLE, f"{root.details}\n\n{DOC_NOTE}")


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    sections = describe(LiveConfig)
    p = parser("config", "Print a resolved livecue config, or the reference of its fields.",
               epilog=sections_epilog(sections), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", default="live1_plus",
                   help="preset name, config file or checkpoint directory (default: %(default)s)")
    p.add_argument("--yaml", action="store_true", help="print YAML instead of JSON")
    p.add_argument("--list", action="store_true", help="list the packaged presets")
    p.add_argument("--save", metavar="DIR", help="write livecue_config.json into DIR")
    p.add_argument("--fields", nargs="?", const="", metavar="SECTION",
                   help="print the fields with their meaning, unit, range and default: all, one section (e.g. "
                        "train; 'top' for the top level) or one field (e.g. stream.threshold)")
    p.add_argument("--markdown", action="store_true", help="with --fields: print Markdown (docs/config.md)")
    args = p.parse_args(argv)

    if args.markdown and args.fields is None:
        p.error("--markdown goes with --fields")
    if args.fields is not None:
        try:
            chosen = select(sections, args.fields)
        except ValueError as e:
            p.error(str(e))
        print(reference_markdown(chosen) if args.markdown else render_text(chosen), end="")
        return 0
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
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
    else:
        print(cfg.to_json(), end="")
    return 0
