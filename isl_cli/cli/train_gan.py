"""`isl train-gan` (placeholder until its issue lands)."""

from isl_cli.cli.common import not_implemented


def train_gan() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("train-gan")
