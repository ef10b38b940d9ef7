"""`isl train-features` (placeholder until its issue lands)."""

from isl_cli.cli.common import not_implemented


def train_features() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("train-features")
