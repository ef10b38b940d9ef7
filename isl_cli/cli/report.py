"""`isl report` (placeholder until its issue lands)."""

from isl_cli.cli.common import not_implemented


def report() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("report")
