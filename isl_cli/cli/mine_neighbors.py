"""`isl mine-neighbors` (placeholder until its issue lands)."""

from isl_cli.cli.common import not_implemented


def mine_neighbors() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("mine-neighbors")
