"""Converters from official annotation files to livecue streaming-dialogue records (SPEC §4).

Each converter module exposes::

    KINDS: dict[str, str]                       # kind -> one-line help, e.g. {"coin-step": "..."}
    def add_arguments(parser, kind) -> None     # its command-line options (besides --out)
    def convert(args, kind) -> Iterable[dict]   # the records (validated and written by the caller)

``livecue convert-data <kind> ... --out FILE.jsonl`` dispatches to them (see ``livecue.commands.convert_data``).
"""

# kind -> module (relative to this package); modules are imported only when their kind is used
MODULES = {
    "ego4d-narration": "ego4d",
    "ego4d-refined": "ego4d",
    "goalstep": "goalstep",
    "coin-step": "coin",
    "coin-next": "coin",
    "coin-task": "coin",
    "coin-procedure": "coin",
    "coin-taskprocedure": "coin",
    "lta": "lta",
    "augment": "augment",
    "robustness": "augment",
}
