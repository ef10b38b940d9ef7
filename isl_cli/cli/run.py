"""`isl run` (placeholder until its issue lands)."""

from isl_cli.cli.common import not_implemented


def run() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("run")
