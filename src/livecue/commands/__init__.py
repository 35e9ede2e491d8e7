"""Subcommands of the ``livecue`` console script; each module exposes ``main(argv) -> int``."""
